"""The quick step (pool_env.quick_step): the common ``step`` takes it, returns exactly what the
generic ``step_async`` + ``step_wait`` return (and SyncVectorEnv), and everything unusual — other
actions, wrong call order, modes and options it does not serve, a worker that dies — goes the
generic way with the generic errors."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from pool_env import GymEnvSpec, PoolVectorEnv
from pool_env.errors import AlreadyPendingError, ClosedError, InvalidActionError, UsageError
from pool_env.quick_step import QuickStep
from tests.integration.reference import assert_values_same

pytestmark = pytest.mark.timeout(90)

CARTPOLE = GymEnvSpec("CartPole-v1")


@pytest.fixture
def posts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the steps posted by a QuickStep (one item per post)."""
    counted: list[int] = []
    original = QuickStep.post

    def post(self: QuickStep) -> Any:
        counted.append(1)
        return original(self)

    monkeypatch.setattr(QuickStep, "post", post)
    yield counted


def _actions(steps: int, num_envs: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 2, size=num_envs, dtype=np.int64) for _ in range(steps)]


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP], ids=lambda m: m.name)
def test_the_common_step_is_quick_and_equals_the_generic_path_and_sync_vector_env(
    mode: AutoresetMode, posts: list[int]
) -> None:
    """Many CartPole episodes end within the run (resets inside steps, SAME_STEP's final_obs infos)."""
    steps = 400
    quick = PoolVectorEnv(CARTPOLE, 4, num_workers=2, autoreset_mode=mode)
    generic = PoolVectorEnv(CARTPOLE, 4, num_workers=2, autoreset_mode=mode)
    generic._quick = None  # step_async + step_wait, as before the quick step
    reference = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 4, autoreset_mode=mode)
    try:
        assert quick._quick is not None
        for env in (quick, generic, reference):
            env.reset(seed=3)
        ended = 0
        for actions in _actions(steps, 4):
            got, want, ref = quick.step(actions), generic.step(actions), reference.step(actions)
            assert_values_same(got, want)
            assert_values_same(got, ref)
            ended += int(np.sum(got[2] | got[3]))
        assert ended >= 10  # the run crossed episode ends
        assert len(posts) == steps  # every step was posted by the quick step
    finally:
        quick.close()
        generic.close()
        reference.close()


def test_the_quick_step_leaves_what_it_does_not_serve_to_the_generic_path(posts: list[int]) -> None:
    with PoolVectorEnv(CARTPOLE, 2, num_workers=1) as env:
        with pytest.raises(UsageError, match="reset"):
            env.step(np.zeros(2, dtype=np.int64))
        env.reset(seed=0)
        with pytest.raises(InvalidActionError, match="outside the action space"):
            env.step(np.array([0, 2], dtype=np.int64))
        with pytest.raises(InvalidActionError, match="dtype"):
            env.step(np.zeros(2, dtype=np.float64))
        assert posts == []
        _, reward, _, _, _ = env.step([1, 0])  # a list: validated and sent by the generic path
        assert reward.tolist() == [1.0, 1.0] and posts == []
        env.step(np.array([1, 0], dtype=np.int32))  # another dtype: the generic path casts it
        assert posts == []
        env.step_async(np.zeros(2, dtype=np.int64))
        with pytest.raises(AlreadyPendingError):
            env.step(np.zeros(2, dtype=np.int64))
        env.step_wait()
        env.step(np.zeros(2, dtype=np.int64))
        assert len(posts) == 1
    with pytest.raises(ClosedError):
        env.step(np.zeros(2, dtype=np.int64))


def test_no_quick_step_where_the_steady_path_does_not_go() -> None:
    with PoolVectorEnv(CARTPOLE, 2, num_workers=1, autoreset_mode=AutoresetMode.DISABLED) as env:
        assert env._quick is None  # ended slots must be refused until reset: _check_can_step's
    with PoolVectorEnv(CARTPOLE, 3, num_workers=1, trainer_slots=1) as env:
        assert env._quick is None  # the trainer steps its own slots inside the step


def test_a_worker_killed_before_a_quick_step_fails_its_slots_and_the_next_steps_are_quick_again(
    posts: list[int],
) -> None:
    with PoolVectorEnv(CARTPOLE, 2, num_workers=1) as env:
        env.reset(seed=0)
        actions = np.zeros(2, dtype=np.int64)
        env.step(actions)
        os.kill(env.worker_pids[0], signal.SIGKILL)
        _, reward, _, truncated, infos = env.step(actions)  # posted quick, waited for by the generic path
        assert truncated.tolist() == [True, True] and reward.tolist() == [0.0, 0.0]
        assert infos["_error"].tolist() == [True, True]
        before = len(posts)
        for _ in range(5):
            _, _, _, _, infos = env.step(actions)
        assert "error" not in infos and len(posts) > before
