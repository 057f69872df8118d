"""``PoolVectorEnv(env_fns)``: AsyncVectorEnv's constructor, with the same values as SyncVectorEnv.

CleanRL builds ``[make_env(env_id, i, ...) for i in range(n)]``, each factory with its own
parameters; the pool must give value for value what ``SyncVectorEnv`` gives for the same seeds,
across autoresets, for any worker count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import pool_env
from pool_env import errors
from tests.integration.reference import assert_same

NUM_ENVS = 5
STEPS = 45


def make_env(env_id: str, idx: int) -> Callable[[], gym.Env[Any, Any]]:
    """CleanRL's pattern: a thunk per slot, with a per-slot parameter and the statistics wrapper."""

    def thunk() -> gym.Env[Any, Any]:
        env = gym.make(env_id, max_episode_steps=8 + 3 * idx)  # slots end at different steps
        return gym.wrappers.RecordEpisodeStatistics(env)

    return thunk


def _comparable(infos: dict[str, Any]) -> dict[str, Any]:
    """The infos without the episode's wall-clock time (``episode["t"]``), which no two runs share;
    object arrays (``final_obs``) as tuples, compared element by element."""
    out = {k: tuple(v) if isinstance(v, np.ndarray) and v.dtype == object else v for k, v in infos.items()}
    if "episode" in out:
        out["episode"] = {k: v for k, v in out["episode"].items() if k not in ("t", "_t")}
    for key in ("final_info",):
        if key in out:
            out[key] = _comparable(out[key])
    return out


@pytest.mark.parametrize(
    ("num_workers", "mode"),
    [(1, AutoresetMode.NEXT_STEP), (2, AutoresetMode.NEXT_STEP), (NUM_ENVS, AutoresetMode.NEXT_STEP),
     (2, AutoresetMode.SAME_STEP)],
)  # fmt: skip
def test_cleanrl_env_fns_give_the_values_of_sync_vector_env(num_workers: int, mode: AutoresetMode) -> None:
    env_fns = [make_env("CartPole-v1", i) for i in range(NUM_ENVS)]
    reference = SyncVectorEnv(env_fns, autoreset_mode=mode)
    rng = np.random.default_rng(0)
    ended = 0
    with pool_env.PoolVectorEnv(env_fns, num_workers=num_workers, autoreset_mode=mode, copy=True) as env:
        assert env.num_envs == NUM_ENVS and env.autoreset_mode is mode
        got, expected = env.reset(seed=11), reference.reset(seed=11)
        assert_same(got[0], expected[0], "reset obs")
        assert_same(_comparable(got[1]), _comparable(expected[1]), "reset infos")
        for step in range(STEPS):
            actions = rng.integers(0, 2, NUM_ENVS)
            got_step, expected_step = env.step(actions), reference.step(actions)
            for name, a, b in zip(("obs", "reward", "terminated", "truncated"), got_step, expected_step, strict=False):
                assert_same(a, b, f"step {step} {name}")
            assert_same(_comparable(got_step[4]), _comparable(expected_step[4]), f"step {step} infos")
            ended += int(np.sum(expected_step[2] | expected_step[3]))
    reference.close()
    assert ended >= NUM_ENVS  # every slot went through at least one autoreset


def test_env_fns_by_keyword_and_a_num_envs_that_disagrees() -> None:
    env_fns = [make_env("CartPole-v1", i) for i in range(2)]
    with pytest.raises(errors.SpecError, match="num_envs: 3 given with 2 env_fns"):
        pool_env.PoolVectorEnv(env_fns, num_envs=3)
    with pool_env.PoolVectorEnv(env_fns=env_fns, num_workers=1, copy=False) as env:
        assert env.num_envs == 2 and env.copy is False
        assert env.reset(seed=0)[0].shape == (2, 4)


def test_a_factory_that_fails_in_its_worker_is_named_by_its_slot() -> None:
    def broken() -> gym.Env[Any, Any]:
        raise RuntimeError("no such simulator licence")

    with pytest.raises(errors.EnvCreationError, match=r"env_fns\[1\].*no such simulator licence"):
        pool_env.PoolVectorEnv([make_env("CartPole-v1", 0), broken], num_workers=1)


def test_num_envs_workers_and_seeds_of_numpy_integer_types() -> None:
    spec = pool_env.GymEnvSpec("CartPole-v1")
    reference = SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(3)])
    with pool_env.PoolVectorEnv(spec, num_envs=np.int64(3), num_workers=np.int32(2), batch_size=np.int16(3)) as env:
        assert env.num_envs == 3 and type(env.num_envs) is int
        assert_same(env.reset(seed=np.int64(7))[0], reference.reset(seed=7)[0], "reset(seed=np.int64)")
        seeds = list(np.arange(3, dtype=np.uint32) + 100)
        assert_same(env.reset(seed=seeds)[0], reference.reset(seed=[100, 101, 102])[0], "reset(seed=[np.uint32])")
    reference.close()


def test_gymnasiums_module_colon_env_id_form() -> None:
    env_id = "tests.envs.registering:PoolEnvShortCartPole-v0"
    reference = SyncVectorEnv([lambda: gym.make(env_id) for _ in range(2)])
    with pool_env.PoolVectorEnv(pool_env.GymEnvSpec(env_id), num_envs=2, num_workers=2) as env:
        assert_same(env.reset(seed=3)[0], reference.reset(seed=3)[0], "reset")
        for step in range(15):  # past the 12-step truncation
            actions = np.array([step % 2, 1 - step % 2])
            for a, b in zip(env.step(actions)[:4], reference.step(actions)[:4], strict=True):
                assert_same(a, b, f"step {step}")
    reference.close()
