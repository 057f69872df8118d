"""Failures are not experience: pool_env.integrations.wrappers.RecordEpisodeStatistics records
the episodes that ended on their own and leaves out the one a worker killed with SIGKILL cut,
under each autoreset mode that steps on by itself."""

from __future__ import annotations

import os
import signal
from contextlib import closing

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from pool_env import ErrorKind, GymEnvSpec, PoolOptions, PoolVectorEnv
from pool_env.integrations.infos import failed_slots
from pool_env.integrations.wrappers import RecordEpisodeStatistics

pytestmark = pytest.mark.timeout(90)

MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_without_failures_every_episode_is_recorded_with_its_return_and_length(mode: AutoresetMode) -> None:
    # The reference: SyncVectorEnv's raw stream, summed by the autoreset mode's rule (under NEXT_STEP
    # the step after an end is the reset: reward 0, not part of an episode). gymnasium's own wrapper
    # gives the same values from 1.1 on; 1.2.2 (Ray's pin) ignores SAME_STEP, so it is no reference.
    pool = PoolVectorEnv(GymEnvSpec("CartPole-v1"), 3, 2, autoreset_mode=mode)
    sync = SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(3)], autoreset_mode=mode)
    with closing(RecordEpisodeStatistics(pool)) as ours, closing(sync):
        ours.reset(seed=2)
        sync.reset(seed=2)
        returns, lengths, prev_done = np.zeros(3), np.zeros(3, int), np.zeros(3, bool)
        expected: list[tuple[float, int]] = []
        rng = np.random.default_rng(0)
        for t in range(40):
            actions = rng.integers(0, 2, 3)
            got = ours.step(actions)[4]
            _, reward, terminated, truncated, _ = sync.step(actions)
            counts = ~prev_done if mode is AutoresetMode.NEXT_STEP else np.ones(3, bool)
            returns[~counts], lengths[~counts] = 0, 0
            returns[counts] += reward[counts]
            lengths[counts] += 1
            done = terminated | truncated
            assert ("episode" in got) == done.any(), f"t={t}"
            if done.any():
                np.testing.assert_array_equal(got["_episode"], done, err_msg=f"t={t}")
                np.testing.assert_array_equal(got["episode"]["r"], np.where(done, returns, 0), err_msg=f"t={t}")
                np.testing.assert_array_equal(got["episode"]["l"], np.where(done, lengths, 0), err_msg=f"t={t}")
                expected += [(returns[i], lengths[i]) for i in np.flatnonzero(done)]
            if mode is AutoresetMode.SAME_STEP:
                returns[done], lengths[done] = 0, 0
            prev_done = done
        assert ours.episode_count == len(expected) > 0 and ours.failed_episode_count == 0
        assert list(ours.return_queue) == [r for r, _ in expected]
        assert list(ours.length_queue) == [n for _, n in expected]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_an_episode_cut_by_a_killed_worker_is_left_out(mode: AutoresetMode) -> None:
    options = PoolOptions(restart_backoff=0.0, kill_grace=0.2)
    pool = PoolVectorEnv(GymEnvSpec("CartPole-v1"), 2, 2, options=options, autoreset_mode=mode)
    with closing(RecordEpisodeStatistics(pool)) as envs:
        envs.reset(seed=0)
        actions = np.array([0, 1])
        for _ in range(2):
            _, _, terminated, truncated, _ = envs.step(actions)
            actions = 1 - actions  # alternate: the pole stays up for a while
            assert not (terminated | truncated).any()
        victim = pool.stats()["workers"][0]
        [slot] = victim["slots"]
        os.kill(victim["pid"], signal.SIGKILL)  # mid-episode
        _, _, terminated, truncated, infos = envs.step(actions)
        assert truncated[slot] and failed_slots(infos, 2)[slot]
        kind = infos["final_info" if mode is AutoresetMode.SAME_STEP else "error_kind"]
        assert (kind["error_kind"] if mode is AutoresetMode.SAME_STEP else kind)[slot] == ErrorKind.WORKER_DIED
        assert not infos.get("_episode", np.zeros(2, bool))[slot]
        assert envs.failed_episode_count == 1 and envs.episode_count == 0 and not envs.return_queue
        # The slot's next episode (a new worker) is recorded, counted from its own first step.
        steps = 0
        for _ in range(200):
            actions = 1 - actions
            _, _, terminated, truncated, infos = envs.step(actions)
            steps += 1
            if terminated[slot] or truncated[slot]:
                break
        assert terminated[slot] and infos["_episode"][slot]
        # NEXT_STEP spends the step after the failure on the reset (reward 0, not counted).
        length = steps - 1 if mode is AutoresetMode.NEXT_STEP else steps
        assert infos["episode"]["l"][slot] == length and infos["episode"]["r"][slot] == length
        assert envs.failed_episode_count == 1
