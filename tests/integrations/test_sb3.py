"""pool_env.sb3.PoolVecEnv as Stable-Baselines3's VecEnv: the values of SB3's DummyVecEnv for the
same seeds, the call API with indices, and PPO training through it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("stable_baselines3", reason="the [sb3] extra is not installed")

import torch
from gymnasium.wrappers import TimeLimit
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from pool_env import GymEnvSpec, HttpEnvSpec
from pool_env.refserver.process import RefServer
from pool_env.sb3 import PoolVecEnv, PoolVecMonitor

pytestmark = [pytest.mark.integrations, pytest.mark.timeout(120)]


def assert_infos_same(actual: list[dict[str, Any]], expected: list[dict[str, Any]], where: str) -> None:
    """Value for value; the Monitor's wall-clock ``episode["t"]`` is left out."""
    assert len(actual) == len(expected), where
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.keys() == e.keys(), f"{where} env {i}: {sorted(a)} != {sorted(e)}"
        for key, value in e.items():
            if key == "episode":
                assert {k: a[key][k] for k in ("r", "l")} == {k: value[k] for k in ("r", "l")}, f"{where} env {i}"
            elif isinstance(value, np.ndarray):
                np.testing.assert_array_equal(a[key], value, err_msg=f"{where} env {i} {key}")
                assert a[key].dtype == value.dtype, f"{where} env {i} {key}"
            else:
                assert a[key] == value, f"{where} env {i} {key}: {a[key]!r} != {value!r}"


def both(n_envs: int, seed: int, **kwargs: Any) -> tuple[VecEnv, VecEnv]:
    """The same make_vec_env call with PoolVecEnv and with DummyVecEnv."""
    pool = make_vec_env("CartPole-v1", n_envs, seed=seed, vec_env_cls=PoolVecEnv,
                        vec_env_kwargs={"num_workers": 2}, **kwargs)  # fmt: skip
    return pool, make_vec_env("CartPole-v1", n_envs, seed=seed, vec_env_cls=DummyVecEnv, **kwargs)


def test_make_vec_env_gives_dummy_vec_env_trajectories_for_the_same_seeds() -> None:
    # max_episode_steps=12: both kinds of end (a pole that fell, a time limit) happen often.
    pool, dummy = both(3, seed=5, env_kwargs={"max_episode_steps": 12})
    try:
        assert isinstance(pool, PoolVecEnv)
        np.testing.assert_array_equal(pool.reset(), dummy.reset())
        assert_infos_same(pool.reset_infos, dummy.reset_infos, "reset")
        rng = np.random.default_rng(0)
        ends = {"terminated": 0, "truncated": 0}
        for t in range(60):
            actions = rng.integers(0, 2, 3)
            p_obs, p_rew, p_done, p_infos = pool.step(actions)
            d_obs, d_rew, d_done, d_infos = dummy.step(actions)
            np.testing.assert_array_equal(p_obs, d_obs, err_msg=f"t={t} obs")
            np.testing.assert_array_equal(p_rew, d_rew, err_msg=f"t={t} rewards")
            assert p_rew.dtype == d_rew.dtype and p_done.dtype == d_done.dtype
            np.testing.assert_array_equal(p_done, d_done, err_msg=f"t={t} dones")
            assert_infos_same(p_infos, d_infos, f"t={t} infos")
            assert_infos_same(pool.reset_infos, dummy.reset_infos, f"t={t} reset_infos")
            for info, done in zip(d_infos, d_done, strict=True):
                if done:
                    ends["truncated" if info["TimeLimit.truncated"] else "terminated"] += 1
        assert ends["terminated"] > 0 and ends["truncated"] > 0, ends
        # seed() and set_options() apply to the next reset only, options per env.
        for venv in (pool, dummy):
            venv.seed(11)
            venv.set_options([{"low": -0.01, "high": 0.01}, {}, {"low": -0.2, "high": 0.2}])
        np.testing.assert_array_equal(pool.reset(), dummy.reset())
        pool.reset()
        dummy.reset()
        assert pool._seeds == dummy._seeds == [None] * 3 and pool._options == dummy._options == [{}] * 3
    finally:
        pool.close()
        dummy.close()


def test_a_spec_works_too_and_calls_reach_the_chosen_envs_only() -> None:
    with PoolVecEnv(GymEnvSpec("CartPole-v1"), num_envs=3, num_workers=2) as venv:
        assert venv.num_envs == 3 and venv.observation_space.shape == (4,)
        assert venv.get_attr("gravity") == [9.8, 9.8, 9.8]
        venv.set_attr("gravity", 5.0, indices=[1])
        assert venv.get_attr("gravity") == [9.8, 5.0, 9.8]
        assert venv.get_attr("gravity", indices=2) == [9.8]
        venv.seed(3)
        venv.reset()
        first = venv.env_method("reset", seed=1, indices=[0, 2])
        assert len(first) == 2 and np.array_equal(first[0][0], first[1][0])  # same seed, same start
        assert venv.env_is_wrapped(TimeLimit) == [True] * 3
        assert venv.env_is_wrapped(Monitor, indices=[0]) == [False]
        with pytest.raises(AttributeError, match="no_such_method"):
            venv.env_method("no_such_method")
        assert not venv.has_attr("no_such_attribute") and venv.has_attr("gravity")


def test_render_tiles_every_envs_frame_as_sb3_does() -> None:
    spec = GymEnvSpec("tests.envs.dropin:FrameEnv", render_mode="rgb_array")
    with PoolVecEnv(spec, num_envs=4, num_workers=2) as venv:
        venv.reset()
        venv.step(np.zeros(4, np.int64))
        frames = venv.get_images()
        assert [int(frame[0, 0, 0]) for frame in frames] == [1, 1, 1, 1]
        tiled = venv.render(mode="rgb_array")
        assert tiled is not None and tiled.shape == (8, 8, 3)  # 2 x 2 tiles of 4 x 4 frames


def test_ppo_trains_cartpole_through_the_pool() -> None:
    venv = make_vec_env("CartPole-v1", n_envs=4, seed=0, vec_env_cls=PoolVecEnv, vec_env_kwargs={"num_workers": 2})
    try:
        model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu")
        before = [p.detach().clone() for p in model.policy.parameters()]
        model.learn(total_timesteps=3 * 64 * 4)  # three rollouts + updates
        assert model.num_timesteps == 3 * 64 * 4
        assert len(model.ep_info_buffer) > 0  # the envs' Monitor episodes reached SB3's logger
        assert any(not torch.equal(b, p) for b, p in zip(before, model.policy.parameters(), strict=True))
    finally:
        venv.close()


def test_ppo_trains_on_degradation_env_slots_from_an_http_spec() -> None:
    with RefServer(p_episode_error=0.02, fault_seed=0) as server:  # failures on: some episodes are cut
        spec = HttpEnvSpec(server.url, user_token="sb3", step_size=10, request_timeout=5.0)
        with PoolVecEnv(spec, num_envs=4, num_workers=2) as pool:
            venv = PoolVecMonitor(pool)
            assert pool.render_mode is None and venv.observation_space.shape == (9,)
            model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
            model.learn(total_timesteps=2 * 32 * 4)
            assert model.num_timesteps == 2 * 32 * 4
            assert venv.episode_count > 0  # episodes that ended on their own reached SB3's logger
            assert len(model.ep_info_buffer) == min(venv.episode_count, model.ep_info_buffer.maxlen)
