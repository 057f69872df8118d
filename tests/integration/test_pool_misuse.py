"""Bad input and wrong call order raise at once, with a clear error, and leave the pool working."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import psutil
import pytest

import pool_env
from pool_env import GymEnvSpec, PoolOptions, PoolVectorEnv
from tests.integration.reference import assert_same, make_reference

pytestmark = pytest.mark.timeout(30)

CARTPOLE = GymEnvSpec("CartPole-v1")
PENDULUM = GymEnvSpec("Pendulum-v1")
DICT_TUPLE = GymEnvSpec("tests.envs.faulty:make_dict_tuple_env")
NUM_ENVS = 3
FIELDS = ("obs", "reward", "terminated", "truncated", "infos")

def worker_processes() -> list[psutil.Process]:
    """Our child processes running ``-m workers``."""
    return [p for p in psutil.Process().children(recursive=True) if "workers" in p.cmdline()]


BadActions = dict[str, Callable[[Any], Any]]  # case name -> valid batch -> bad batch

DISCRETE_BAD: BadActions = {
    "wrong count": lambda good: good[:-1],
    "wrong shape": lambda good: good.reshape(NUM_ENVS, 1),
    "float dtype for Discrete": lambda good: good.astype(np.float64),
    "value 5 for Discrete(2)": lambda good: np.full(NUM_ENVS, 5),
    "negative value": lambda good: np.full(NUM_ENVS, -1),
    "not an array": lambda good: "left",
}
BOX_BAD: BadActions = {
    "missing action dimension": lambda good: good[:, 0],
    "complex dtype": lambda good: good.astype(np.complex64),
}
BOX_BOUNDS_BAD: BadActions = {  # refused only with check_action_bounds=True (gymnasium passes them on)
    "above the bounds": lambda good: np.full_like(good, 2.5),
    "below the bounds": lambda good: np.full_like(good, -100.0),
    "NaN": lambda good: np.full_like(good, np.nan),
}
DICT_BAD: BadActions = {
    "missing key": lambda good: {"move": good["move"]},
    "not a dict": lambda good: good["move"],
    "out-of-space part": lambda good: {"move": np.full(NUM_ENVS, 3), "force": good["force"]},
    "wrong part shape": lambda good: {"move": good["move"], "force": good["force"][:, :1]},
}


@pytest.mark.parametrize(
    ("spec", "bad_actions", "check_bounds"),
    [(CARTPOLE, DISCRETE_BAD, False), (PENDULUM, BOX_BAD, False), (PENDULUM, BOX_BOUNDS_BAD, True),
     (DICT_TUPLE, DICT_BAD, False)],
    ids=["Discrete", "Box", "Box-bounds-checked", "Dict"],
)  # fmt: skip
def test_invalid_actions_are_refused_before_sending_and_the_pool_steps_on(
    spec: GymEnvSpec, bad_actions: BadActions, check_bounds: bool
) -> None:
    reference = make_reference(spec, NUM_ENVS)
    reference.action_space.seed(3)
    pool = PoolVectorEnv(spec, NUM_ENVS, num_workers=2, check_action_bounds=check_bounds)
    with contextlib.closing(reference), pool as env:
        env.reset(seed=5)
        reference.reset(seed=5)
        for t in range(5):
            good = reference.action_space.sample()
            steps_before = [row["steps"] for row in env.stats()["workers"]]
            for case, make_bad in bad_actions.items():
                with pytest.raises(pool_env.InvalidActionError):
                    env.step(make_bad(good))
                    pytest.fail(f"{case}: accepted")
            # Nothing was sent: no worker did anything, the pool is idle and its envs did not move.
            assert [row["steps"] for row in env.stats()["workers"]] == steps_before
            for name, actual, expected in zip(FIELDS, env.step(good), reference.step(good), strict=True):
                assert_same(actual, expected, f"step {t} {name} after refused actions")


def test_invalid_action_error_names_the_problem() -> None:
    with PoolVectorEnv(DICT_TUPLE, NUM_ENVS, num_workers=1) as env:
        env.reset(seed=0)
        good = env.action_space.sample()
        with pytest.raises(pool_env.InvalidActionError, match="force"):
            env.step({"move": good["move"]})
        with pytest.raises(pool_env.InvalidActionError, match=r"shape \(2,\).*expected \(3,\)"):
            env.step({"move": good["move"][:2], "force": good["force"]})
        assert isinstance(pool_env.InvalidActionError("x"), ValueError)


def test_step_before_reset_is_a_usage_error() -> None:
    with PoolVectorEnv(CARTPOLE, NUM_ENVS, num_workers=1) as env:
        with pytest.raises(pool_env.UsageError, match="reset"):
            env.step(np.zeros(NUM_ENVS, dtype=np.int64))
        with pytest.raises(pool_env.UsageError, match="reset"):
            env.step_async(np.zeros(NUM_ENVS, dtype=np.int64))
        env.reset(seed=0)
        env.step(np.zeros(NUM_ENVS, dtype=np.int64))


def test_every_call_after_close_raises_closed_error_and_close_is_idempotent() -> None:
    env = PoolVectorEnv(CARTPOLE, NUM_ENVS, num_workers=1)
    env.reset(seed=0)
    env.close()
    env.close()
    actions = np.zeros(NUM_ENVS, dtype=np.int64)
    calls: dict[str, Callable[[], Any]] = {
        "reset": lambda: env.reset(seed=0),
        "reset_envs": lambda: env.reset_envs([0]),
        "step": lambda: env.step(actions),
        "step_async": lambda: env.step_async(actions),
        "step_wait": env.step_wait,
        "stats": env.stats,
    }
    for name, call in calls.items():
        with pytest.raises(pool_env.ClosedError):
            call()
            pytest.fail(f"{name}() after close() did not raise")
    assert env.worker_pids == []


def test_step_wait_timeout_raises_and_keeps_the_step_pending() -> None:
    spec = GymEnvSpec("tests.envs.faulty:make_slow_env", delay=0.3)
    reference = make_reference(GymEnvSpec("tests.envs.faulty:make_slow_env", delay=0.0), 2)
    actions = np.array([0, 1])
    with contextlib.closing(reference), PoolVectorEnv(spec, 2, num_workers=1) as env:
        env.reset(seed=0)
        reference.reset(seed=0)
        env.step_async(actions)
        with pytest.raises(pool_env.StepTimeoutError) as caught:
            env.step_wait(timeout=0.01)
        assert isinstance(caught.value, TimeoutError)
        with pytest.raises(pool_env.AlreadyPendingError):
            env.step_async(actions)  # still pending
        for name, actual, expected in zip(FIELDS, env.step_wait(), reference.step(actions), strict=True):
            assert_same(actual, expected, name)
        for name, actual, expected in zip(FIELDS, env.step(actions), reference.step(actions), strict=True):
            assert_same(actual, expected, f"next step {name}")


def test_ctrl_c_while_a_step_waits_keeps_the_step_pending_as_async_vector_env() -> None:
    spec = GymEnvSpec("tests.envs.faulty:make_slow_env", delay=0.3)
    reference = make_reference(GymEnvSpec("tests.envs.faulty:make_slow_env", delay=0.0), 2)
    actions = np.array([0, 1])

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with contextlib.closing(reference), PoolVectorEnv(spec, 2, num_workers=1) as env:
            env.reset(seed=0)
            reference.reset(seed=0)
            signal.setitimer(signal.ITIMER_REAL, 0.1)  # real SIGALRM while the workers sleep in step
            with pytest.raises(KeyboardInterrupt):
                env.step(actions)
            with pytest.raises(pool_env.AlreadyPendingError):
                env.step(actions)  # still pending: nothing the workers ran is dropped
            for name, actual, expected in zip(FIELDS, env.step_wait(), reference.step(actions), strict=True):
                assert_same(actual, expected, name)
            for name, actual, expected in zip(FIELDS, env.step(actions), reference.step(actions), strict=True):
                assert_same(actual, expected, f"next step {name}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_step_async_twice_raises_already_pending() -> None:
    actions = np.zeros(NUM_ENVS, dtype=np.int64)
    with PoolVectorEnv(CARTPOLE, NUM_ENVS, num_workers=1) as env:
        env.reset(seed=0)
        env.step_async(actions)
        with pytest.raises(pool_env.AlreadyPendingError) as caught:
            env.step_async(actions)
        assert isinstance(caught.value, gym.error.AlreadyPendingCallError)
        with pytest.raises(pool_env.AlreadyPendingError):
            env.reset(seed=0)
        env.step_wait()
        env.step(actions)


def test_step_wait_without_step_async_raises_no_pending_call() -> None:
    with PoolVectorEnv(CARTPOLE, NUM_ENVS, num_workers=1) as env:
        env.reset(seed=0)
        with pytest.raises(pool_env.NoPendingCallError) as caught:
            env.step_wait()
        assert isinstance(caught.value, gym.error.NoAsyncCallError)
        env.step(np.zeros(NUM_ENVS, dtype=np.int64))
        with pytest.raises(pool_env.NoPendingCallError):
            env.step_wait()


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("NoSuchEnv-v0", {}),
        ("tests.envs.no_such_module:make_env", {}),
        ("tests.envs.faulty:no_such_factory", {}),
        ("tests.envs.faulty:make_slow_env", {"no_such_argument": 1}),
    ],
)
def test_env_that_cannot_be_made_fails_construction_naming_it_and_leaves_nothing(
    env_id: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises((pool_env.EnvCreationError, pool_env.SpecError), match=env_id.split(":")[0]):
        PoolVectorEnv(GymEnvSpec(env_id, **kwargs), NUM_ENVS, num_workers=1)
    assert worker_processes() == []


def test_env_that_cannot_be_made_in_a_worker_fails_construction_and_leaves_nothing() -> None:
    spec = GymEnvSpec("tests.envs.faulty:make_failing_in_worker_env")
    with pytest.raises(pool_env.EnvCreationError, match="cannot be created in a worker"):
        PoolVectorEnv(spec, NUM_ENVS, num_workers=2, options=PoolOptions(start_timeout=30))
    assert worker_processes() == []


@pytest.mark.parametrize("num_workers", [0, -1, NUM_ENVS + 1, 1.5])
def test_num_workers_outside_one_to_num_envs_is_a_spec_error(num_workers: Any) -> None:
    with pytest.raises(pool_env.SpecError, match="num_workers"):
        PoolVectorEnv(CARTPOLE, NUM_ENVS, num_workers=num_workers)


@pytest.mark.parametrize("num_envs", [0, -2, 2.0])
def test_num_envs_must_be_a_positive_int(num_envs: Any) -> None:
    with pytest.raises(pool_env.SpecError, match="num_envs"):
        PoolVectorEnv(CARTPOLE, num_envs, num_workers=1)

