"""Observation banks (pool_env.banks). A worker that wrote (and made current) a slot's new
observation, then died: the failed slots come back with the observations handed out last, also
after a step that raised. ``copy=False``: views of the segment, with SyncVectorEnv's values.

One worker owns both slots. Slot 0's episode ends (or its env raises) one step before slot 1's env
kills the worker: in the killing step the worker first resets slot 0 — writing its new first
observation — and then steps slot 1, which SIGKILLs the process before anything is reported.
"""

from __future__ import annotations

import functools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from pool_env import GymEnvSpec, PoolOptions, PoolVectorEnv, vector_env
from pool_env.banks import EarlyRows, ObservationBanks
from pool_env.errors import PoolEnvError
from pool_env.fastpath import usable_cores
from tests.envs.banks import ScriptedEnv
from tests.envs.faulty import make_slow_env

pytestmark = pytest.mark.timeout(60)

ZEROS = np.zeros(2, dtype=np.int64)


def _pool(tmp_path: Path, slot0: dict[str, int], options: PoolOptions | None = None) -> PoolVectorEnv:
    flag = str(tmp_path / "killed")
    fns = [
        functools.partial(ScriptedEnv, 0, **slot0),
        functools.partial(ScriptedEnv, 1, kill_at=3, flag=flag),
    ]
    return PoolVectorEnv(fns, num_workers=1, options=options)


def test_slots_written_by_a_worker_that_then_died_come_back_as_handed_out_last(tmp_path: Path) -> None:
    with _pool(tmp_path, {"end_at": 2}) as env:
        env.reset(seed=0)
        env.step(ZEROS)
        obs, _, terminated, _, _ = env.step(ZEROS)
        assert terminated.tolist() == [True, False]
        handed_out = obs.copy()
        obs[:] = -1.0  # the trainer changes the returned array in place
        obs, _, _, truncated, infos = env.step(ZEROS)  # slot 0 reset (written), then slot 1 killed the worker
        assert truncated.tolist() == [True, True] and infos["_error"].tolist() == [True, True]
        np.testing.assert_array_equal(obs, handed_out)
        obs, *_ = env.step(ZEROS)  # both start new episodes in the new worker
        assert obs[:, 1].tolist() == [0.0, 0.0]


def test_after_a_step_that_raised_failed_slots_come_back_as_handed_out_before_it(tmp_path: Path) -> None:
    with _pool(tmp_path, {"raise_at": 2}, PoolOptions(on_env_error="raise")) as env:
        env.reset(seed=0)
        handed_out, *_ = env.step(ZEROS)
        with pytest.raises(PoolEnvError, match="scripted failure at step 2"):
            env.step(ZEROS)  # slot 1's new observation was written; nothing was handed out
        obs, _, _, truncated, _ = env.step(ZEROS)  # slot 0 reset (written), then slot 1 killed the worker
        assert truncated.tolist() == [True, True]
        np.testing.assert_array_equal(obs, handed_out)


@pytest.mark.parametrize("copy", [True, False])
def test_copy_false_hands_out_views_valid_until_the_step_after_next_with_the_same_values(copy: bool) -> None:
    reference = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(4)])
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), 4, num_workers=2, copy=copy) as env:
        obs, _ = env.reset(seed=3)
        want, _ = reference.reset(seed=3)
        np.testing.assert_array_equal(obs, want)
        rng = np.random.default_rng(0)
        for _ in range(30):
            actions = rng.integers(0, 2, 4)
            got = env.step(actions)
            expected = reference.step(actions)
            np.testing.assert_array_equal(got[0], expected[0])
            assert got[0].flags.owndata is copy  # False: a view of the pool's segment, no copy made
            np.testing.assert_array_equal(obs, want)  # the previous step's observations are still intact
            obs, want = got[0], expected[0].copy()
    reference.close()


def test_rows_copied_while_a_slower_worker_still_steps_are_sync_vector_env_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """Early rows (pool_env.banks.EarlyRows): the fast worker's rows are copied while the slow one
    steps; every observation equals SyncVectorEnv's, autoresets included."""
    monkeypatch.setattr(vector_env, "EARLY_COPY_BYTES", 0)  # CartPole's rows are small: copy them early too
    copied: list[list[int]] = []
    copy_early = ObservationBanks.copy_early

    def counted(self: ObservationBanks, early: EarlyRows, slots: list[int]) -> None:
        copied.append(list(slots))
        copy_early(self, early, slots)

    monkeypatch.setattr(ObservationBanks, "copy_early", counted)
    fns = [lambda: gym.make("CartPole-v1")] * 2 + [functools.partial(make_slow_env, 0.005)] * 2
    reference = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 4)
    rng = np.random.default_rng(5)
    with PoolVectorEnv(fns, num_workers=2) as env:
        obs, _ = env.reset(seed=3)
        np.testing.assert_array_equal(obs, reference.reset(seed=3)[0])
        for _ in range(60):  # CartPole episodes end within this: autoresets included
            actions = rng.integers(0, 2, 4)
            got, want = env.step(actions), reference.step(actions)
            for value, wanted in zip(got[:4], want[:4], strict=True):
                np.testing.assert_array_equal(value, wanted)
    reference.close()
    assert all(slots == [0, 1] for slots in copied)  # only the fast worker's, whenever it finished first
    if usable_cores() > 1:  # one core: the trainer never waits on a free core, nothing is copied early
        assert copied
