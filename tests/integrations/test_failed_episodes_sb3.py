"""Failures are not experience, Stable-Baselines3 side: an episode cut by a worker killed with
SIGKILL reaches SB3 as done with the pool's error_kind, and PoolVecMonitor keeps it out of the
episode statistics."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

pytest.importorskip("stable_baselines3", reason="the [sb3] extra is not installed")

from pool_env import ErrorKind, GymEnvSpec, PoolOptions
from pool_env.sb3 import PoolVecEnv, PoolVecMonitor

pytestmark = [pytest.mark.integrations, pytest.mark.timeout(120)]


def test_an_episode_cut_by_a_killed_worker_is_not_an_episode_in_pool_vec_monitor() -> None:
    options = PoolOptions(restart_backoff=0.0, kill_grace=0.2)
    venv = PoolVecEnv(GymEnvSpec("CartPole-v1"), num_envs=2, num_workers=2, options=options)
    with venv:
        monitor = PoolVecMonitor(venv)
        monitor.seed(0)
        obs = monitor.reset()
        actions = np.array([0, 1])
        for _ in range(2):
            obs, _, dones, _ = monitor.step(actions)
            actions = 1 - actions  # alternate: the pole stays up for a while
            assert not dones.any()
        victim = venv.pool.stats()["workers"][0]
        [slot] = victim["slots"]
        os.kill(victim["pid"], signal.SIGKILL)  # mid-episode, between two steps
        before = obs.copy()
        obs, rewards, dones, infos = monitor.step(actions)
        assert dones[slot] and infos[slot]["TimeLimit.truncated"] and rewards[slot] == 0
        assert infos[slot]["error_kind"] == ErrorKind.WORKER_DIED
        np.testing.assert_array_equal(infos[slot]["terminal_observation"], before[slot])
        assert "episode" not in infos[slot]
        assert monitor.failed_episode_count == 1 and monitor.episode_count == 0
        # The slot's next episode (on a new worker) is counted from its own first step.
        steps_since = 0
        for _ in range(200):
            actions = 1 - actions
            obs, rewards, dones, infos = monitor.step(actions)
            steps_since += 1
            if dones[slot]:
                break
        assert dones[slot] and "error_kind" not in infos[slot]
        assert infos[slot]["episode"]["l"] == steps_since and infos[slot]["episode"]["r"] == steps_since
        assert monitor.failed_episode_count == 1
