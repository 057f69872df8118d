"""``trainer_slots=k``: the last k slots are stepped in the trainer's own process, EnvPool style.

The values are the same as ``SyncVectorEnv`` bit for bit; a worker's failure touches only its own
slots; an exception inside a trainer slot's env is that slot's failure, as in a worker.
"""

from __future__ import annotations

import contextlib
import os
import signal

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from pool_env import GymEnvSpec, PoolOptions, PoolVectorEnv, SpecError
from tests.envs import dropin
from tests.integration.reference import assert_values_same, run_trace, sync

NUM_ENVS = 6
TRAINER_SLOTS = 3  # slots 3, 4, 5 in this process; 0, 1, 2 on the workers


def _sync(num_envs: int = NUM_ENVS) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * num_envs)


def test_trainer_slots_step_like_sync_vector_env_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    reference = _sync()
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), NUM_ENVS, 2, trainer_slots=TRAINER_SLOTS) as env:
        obs, _ = env.reset(seed=11)
        expected, _ = reference.reset(seed=11)
        assert np.array_equal(obs, expected)
        for _ in range(150):  # CartPole episodes end well within this: autoresets included
            actions = rng.integers(0, 2, NUM_ENVS)
            got = env.step(actions)
            want = reference.step(actions)
            for value, wanted in zip(got[:4], want[:4], strict=True):
                assert np.array_equal(value, wanted)
            assert "_error" not in got[4]
        assert len(env.worker_pids) == 2
    reference.close()


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.name)
def test_infos_of_trainer_slots_equal_sync_vector_env_s_across_autoresets(mode: AutoresetMode) -> None:
    reference = sync(dropin.InfoZooEnv, 4, autoreset_mode=mode)
    spec = GymEnvSpec("tests.envs.dropin:InfoZooEnv")
    with contextlib.closing(reference), PoolVectorEnv(spec, 4, 1, autoreset_mode=mode, trainer_slots=2) as env:
        want, got = run_trace(reference, mode, 8), run_trace(env, mode, 8)
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_values_same(g[-1], w[-1], f"t={t} infos")
        assert_values_same(g[0], w[0], f"t={t} obs")


def test_get_attr_and_call_reach_trainer_and_worker_slots_alike() -> None:
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), NUM_ENVS, 1, trainer_slots=TRAINER_SLOTS) as env:
        env.reset(seed=0)
        assert env.get_attr("spec")[0].id == env.get_attr("spec")[NUM_ENVS - 1].id == "CartPole-v1"
        env.set_attr("custom", list(range(NUM_ENVS)))
        assert list(env.get_attr("custom")) == list(range(NUM_ENVS))


def test_a_killed_worker_costs_only_its_slots_and_never_the_trainers() -> None:
    rng = np.random.default_rng(3)
    reference = _sync()
    options = PoolOptions(restart_backoff=0.0)
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), NUM_ENVS, 1, options=options, trainer_slots=TRAINER_SLOTS) as env:
        env.reset(seed=5)
        reference.reset(seed=5)
        for t in range(40):
            if t == 10:
                os.kill(env.worker_pids[0], signal.SIGKILL)
            actions = rng.integers(0, 2, NUM_ENVS)
            obs, reward, _, truncated, infos = env.step(actions)
            expected, *_ = reference.step(actions)
            assert np.array_equal(obs[TRAINER_SLOTS:], expected[TRAINER_SLOTS:])
            if t == 10:
                assert infos["_error"].tolist() == [True] * TRAINER_SLOTS + [False] * TRAINER_SLOTS
                assert truncated[:TRAINER_SLOTS].all() and (reward[:TRAINER_SLOTS] == 0).all()
        assert env.stats()["workers"][0]["restarts"] == 1
    reference.close()


def test_an_exception_in_a_trainer_slots_env_truncates_that_slot_only() -> None:
    spec = GymEnvSpec("tests.envs.faulty:make_raising_env", raise_seed=NUM_ENVS - 1, raise_at=3)
    with PoolVectorEnv(spec, NUM_ENVS, 1, trainer_slots=TRAINER_SLOTS) as env:
        env.reset(seed=0)  # the last slot (a trainer slot) gets seed NUM_ENVS - 1: it raises at step 3
        for _ in range(2):
            assert "_error" not in env.step(np.zeros(NUM_ENVS, dtype=np.int64))[4]
        _, reward, _, truncated, infos = env.step(np.zeros(NUM_ENVS, dtype=np.int64))
        assert infos["_error"].tolist() == [False] * (NUM_ENVS - 1) + [True]
        assert "injected failure" in infos["error"][NUM_ENVS - 1]
        assert truncated[NUM_ENVS - 1] and reward[NUM_ENVS - 1] == 0
        _, _, terminated, truncated, infos = env.step(np.zeros(NUM_ENVS, dtype=np.int64))
        assert "_error" not in infos and not truncated[NUM_ENVS - 1] and not terminated[NUM_ENVS - 1]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"trainer_slots": NUM_ENVS}, "trainer_slots"),
        ({"trainer_slots": -1}, "trainer_slots"),
        ({"trainer_slots": 4, "num_workers": 3}, "num_workers"),
        ({"trainer_slots": 2, "batch_size": 3}, "trainer_slots"),
    ],
)
def test_bad_trainer_slots_fail_at_construction_naming_the_field(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(SpecError, match=field):
        PoolVectorEnv(GymEnvSpec("CartPole-v1"), NUM_ENVS, **kwargs)


def test_the_default_worker_count_leaves_the_trainer_a_core_with_or_without_its_own_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 3)  # the workers are spawned fresh: only this choice sees it
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), NUM_ENVS, trainer_slots=TRAINER_SLOTS) as env:
        assert env.num_workers == 2 == len(env.worker_pids)
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), NUM_ENVS) as env:
        assert env.num_workers == 2 == len(env.worker_pids)
