"""EnvPool-style partial batches: send(actions, env_ids) / recv() returns the first batch_size ready slots."""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import pool_env
from pool_env import ErrorKind, GymEnvSpec, PoolVectorEnv, StepFate


class SlotReference:
    """One gymnasium env per slot, stepped with NEXT_STEP autoreset like the pool does."""

    def __init__(self, num_envs: int, seed: int) -> None:
        self.envs = [gym.make("CartPole-v1") for _ in range(num_envs)]
        self.obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]
        self.ended = [False] * num_envs

    def step(self, slot: int, action: int) -> tuple[Any, float, bool, bool]:
        env = self.envs[slot]
        if self.ended[slot]:
            obs, _ = env.reset()
            self.ended[slot] = False
            return obs, 0.0, False, False
        obs, reward, terminated, truncated, _ = env.step(action)
        self.ended[slot] = bool(terminated or truncated)
        return obs, float(reward), bool(terminated), bool(truncated)


def test_every_slot_follows_its_own_reference_trajectory_whatever_the_arrival_order() -> None:
    num_envs, seed = 8, 5
    reference = SlotReference(num_envs, seed)
    rng = np.random.default_rng(1)
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), num_envs, num_workers=2, batch_size=4) as env:
        env.async_reset(seed=seed)
        obs, rewards, _, _, infos = env.recv()
        for row, slot in enumerate(infos["env_id"]):
            np.testing.assert_array_equal(obs[row], reference.obs[slot])
            assert rewards[row] == 0.0
        expected: dict[int, tuple[Any, float, bool, bool]] = {}
        received = 0
        for _ in range(300):
            ids = infos["env_id"]
            actions = rng.integers(0, 2, size=len(ids))
            env.send(actions, ids)
            for slot, action in zip(ids.tolist(), actions.tolist(), strict=True):
                expected[slot] = reference.step(slot, action)
            obs, rewards, terminated, truncated, infos = env.recv()
            for row, slot in enumerate(infos["env_id"].tolist()):
                if slot not in expected:  # the first observation after async_reset
                    np.testing.assert_array_equal(obs[row], reference.obs[slot])
                    continue
                e_obs, e_reward, e_term, e_trunc = expected.pop(slot)
                np.testing.assert_array_equal(obs[row], e_obs)
                assert (rewards[row], terminated[row], truncated[row]) == (e_reward, e_term, e_trunc)
                received += 1
        assert received >= 300 * 4 - 8


def test_no_slot_starves_and_each_action_is_applied_once_with_a_slow_worker() -> None:
    num_envs = 6
    counts: Counter[int] = Counter()
    # Worker 0 owns slots 0-2 and is slow; the fast worker's slots keep flowing meanwhile.
    spec = GymEnvSpec("tests.envs.faulty:make_slow_env", delay=0.01)
    with PoolVectorEnv(spec, num_envs, num_workers=2, batch_size=3) as env:
        env.async_reset(seed=0)
        _, _, _, _, infos = env.recv()
        for _ in range(60):
            ids = infos["env_id"]
            env.send(np.zeros(len(ids), dtype=np.int64), ids)
            counts.update(ids.tolist())
            _, _, _, _, infos = env.recv()
        env.recv()  # drain: nothing in flight any more
        sent_total = sum(counts.values())
        steps_done = sum(w["steps"] for w in env.stats()["workers"])
    assert set(counts) == set(range(num_envs)), "every slot got to step"
    assert min(counts.values()) >= 20, counts
    # steps counted by workers = the reset plus every send, never more (each action once)
    assert steps_done == num_envs + sent_total


def test_misuse_of_send_and_recv_raises_at_once() -> None:
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), 4, num_workers=2, batch_size=2) as env:
        with pytest.raises(pool_env.UsageError, match="reset"):
            env.send(np.zeros(4, dtype=np.int64))
        env.async_reset(seed=0)
        with pytest.raises(pool_env.UsageError, match="in flight"):
            env.send(np.zeros(1, dtype=np.int64), [0])
        with pytest.raises(pool_env.AlreadyPendingError):
            env.step(np.zeros(4, dtype=np.int64))
        _, _, _, _, infos = env.recv()
        env.recv()
        with pytest.raises(pool_env.UsageError, match="in flight"):
            env.recv()
        with pytest.raises(pool_env.InvalidActionError):
            env.send(np.full(2, 9), infos["env_id"])
        with pytest.raises(pool_env.UsageError, match="distinct"):
            env.send(np.zeros(2, dtype=np.int64), [1, 1])
        env.send(np.zeros(4, dtype=np.int64), np.arange(4))
        env.recv()
        env.recv()
        obs, *_ = env.step(np.zeros(4, dtype=np.int64))  # everything received: full steps work again
        assert obs.shape == (4, 4)


def test_a_slot_idle_when_its_worker_died_reports_its_lost_episode_on_its_next_step() -> None:
    # Each step takes 0.5 s, so the worker is surely mid-step when it is killed.
    spec = GymEnvSpec("tests.envs.faulty:make_slow_env", delay=0.5)
    with PoolVectorEnv(spec, 4, num_workers=2, batch_size=1) as env:
        env.async_reset(seed=0)
        first_obs = {}
        for _ in range(4):
            obs, *_, infos = env.recv()
            first_obs[int(infos["env_id"][0])] = obs[0]

        def step_one(slot: int) -> tuple[float, bool, tuple[ErrorKind, StepFate] | None]:
            env.send(np.zeros(1, dtype=np.int64), [slot])
            _, rewards, _, truncated, infos = env.recv()
            assert infos["env_id"].tolist() == [slot]
            error = (infos["error_kind"][0], infos["step_fate"][0]) if "error" in infos else None
            return float(rewards[0]), bool(truncated[0]), error

        env.send(np.zeros(1, dtype=np.int64), [0])  # slot 1, on the same worker, stays idle
        os.kill(env.stats()["workers"][0]["pid"], signal.SIGKILL)
        obs, _, _, truncated, infos = env.recv()
        assert infos["env_id"].tolist() == [0] and truncated[0] and infos["error_kind"][0] is ErrorKind.WORKER_DIED
        assert infos["step_fate"][0] is StepFate.UNKNOWN  # the slow step was under way when the worker died
        np.testing.assert_array_equal(obs[0], first_obs[0])  # the failed slot keeps its last observation
        reward, truncated_1, error = step_one(1)
        assert truncated_1 and reward == 0.0, "the idle slot's episode died with the worker: reported, not hidden"
        assert error == (ErrorKind.EPISODE_LOST, StepFate.NOT_APPLIED), "never sent: its worker was gone"
        reward, truncated_1, error = step_one(1)
        assert (reward, truncated_1, error) == (0.0, False, None), "then it is reset like any ended slot"
        assert step_one(2)[2] is None and step_one(1) == (1.0, False, None)
