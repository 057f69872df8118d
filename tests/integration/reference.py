"""Serial references (``gymnasium.vector.SyncVectorEnv``) and bit-for-bit batch comparisons, shared by
the pool, daemon and drop-in tests (one home: ``test_dropin*`` import them from here)."""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import pool_env

__all__ = [
    "FIELDS",
    "assert_same",
    "assert_steps_same",
    "assert_traces_same",
    "assert_values_same",
    "cartpole",
    "kill_worker_0_mid_episode",
    "make_reference",
    "make_single",
    "run_trace",
    "sync",
    "take",
]


def make_single(spec: pool_env.GymEnvSpec) -> gym.Env[Any, Any]:
    """One env of ``spec`` made in the test process (registered id or import string)."""
    if ":" in spec.env_id:
        module, _, name = spec.env_id.partition(":")
        return getattr(importlib.import_module(module), name)(**spec.kwargs)
    return gym.make(spec.env_id, **spec.kwargs)


def make_reference(spec: pool_env.GymEnvSpec, num_envs: int) -> SyncVectorEnv:
    """A serial vector env of ``num_envs`` envs of ``spec`` (NEXT_STEP autoreset, like the pool)."""
    return SyncVectorEnv([lambda: make_single(spec) for _ in range(num_envs)])


def take(batch: Any, slots: Sequence[int]) -> Any:
    """The rows ``slots`` of a (possibly nested dict/tuple) batch."""
    if isinstance(batch, dict):
        return {key: take(value, slots) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(take(value, slots) for value in batch)
    return np.asarray(batch)[list(slots)]


def assert_same(actual: Any, expected: Any, where: str = "") -> None:
    """Same structure, dtypes, shapes and values, bit for bit (NaN equals NaN)."""
    if _assert_parts(actual, expected, where, assert_same):
        return
    actual_array, expected_array = np.asarray(actual), np.asarray(expected)
    assert actual_array.dtype == expected_array.dtype, f"{where}: dtype {actual_array.dtype} != {expected_array.dtype}"
    assert actual_array.shape == expected_array.shape, f"{where}: shape {actual_array.shape} != {expected_array.shape}"
    if actual_array.dtype.kind == "f":  # bit for bit: -0.0 != 0.0, NaN == NaN of the same payload
        equal = np.ascontiguousarray(actual_array).tobytes() == np.ascontiguousarray(expected_array).tobytes()
    else:
        equal = np.array_equal(actual_array, expected_array)
    assert equal, f"{where}: values differ\nactual:   {actual_array!r}\nexpected: {expected_array!r}"


def _assert_parts(actual: Any, expected: Any, where: str, check: Callable[[Any, Any, str], None]) -> bool:
    """For a dict or tuple ``expected``: the same keys or length, then ``check`` on each part (True).

    False for anything else (a leaf, for the caller to compare).
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{where}: keys differ"
        for key in expected:
            check(actual[key], expected[key], f"{where}[{key!r}]")
        return True
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), f"{where}: tuple differs"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            check(a, e, f"{where}[{i}]")
        return True
    return False


FIELDS = ("obs", "reward", "terminated", "truncated", "infos")
"""The names of a step's five results."""


def assert_values_same(actual: Any, expected: Any, where: str = "") -> None:
    """:func:`assert_same`, also for object arrays (compared element by element, types included)."""
    if isinstance(expected, np.ndarray) and expected.dtype == object:
        assert isinstance(actual, np.ndarray) and actual.dtype == object, f"{where}: not an object array"
        assert actual.shape == expected.shape, f"{where}: shape"
        for i, (a, e) in enumerate(zip(actual.tolist(), expected.tolist(), strict=True)):
            assert type(a) is type(e), f"{where}[{i}]: {type(a)} != {type(e)}"
            if isinstance(e, np.ndarray | dict | tuple):
                assert_values_same(a, e, f"{where}[{i}]")
            else:
                assert a == e, f"{where}[{i}]: {a!r} != {e!r}"
        return
    if not _assert_parts(actual, expected, where, assert_values_same):
        assert_same(actual, expected, where)


def sync(make: Callable[[], gym.Env[Any, Any]], num_envs: int, **kwargs: Any) -> SyncVectorEnv:
    """``SyncVectorEnv`` of ``num_envs`` envs made by ``make`` (gymnasium's keyword arguments)."""
    return SyncVectorEnv([make for _ in range(num_envs)], **kwargs)


def cartpole() -> gym.Env[Any, Any]:
    """One ``CartPole-v1``."""
    return gym.make("CartPole-v1")


def run_trace(
    env: Any, mode: AutoresetMode, steps: int, seed: int = 3, action_seed: int | None = None
) -> list[tuple[Any, ...]]:
    """Reset with ``seed``, then ``steps`` random actions in {0, 1} drawn with ``action_seed`` (default
    ``seed``); under DISABLED the ended slots are reset with a mask. Every call's results, in order."""
    trace: list[tuple[Any, ...]] = [env.reset(seed=seed)]
    actions = np.random.default_rng(seed if action_seed is None else action_seed)
    for _ in range(steps):
        batch = env.step(actions.integers(0, 2, env.num_envs))
        trace.append(batch)
        done = batch[2] | batch[3]
        if mode is AutoresetMode.DISABLED and done.any():
            trace.append(env.reset(options={"reset_mask": done}))
    return trace


def assert_traces_same(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], label: str = "") -> None:
    """Two :func:`run_trace` results, call by call: every result of a step, obs and infos of a reset."""
    assert len(got) == len(want), f"{label}: {len(got)} calls, expected {len(want)}"
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        for name, actual, expected in zip(FIELDS if len(w) == 5 else ("obs", "infos"), g, w, strict=True):
            assert_values_same(actual, expected, f"{label} t={t} {name}")


def assert_steps_same(env: Any, reference: SyncVectorEnv, actions: Any, steps: int = 5) -> None:
    """``env`` and ``reference`` reset with seed 3, then ``steps`` steps of ``actions``, value for value;
    every observation of ``env`` is in its observation space."""
    assert_values_same(env.reset(seed=3), reference.reset(seed=3))
    for t in range(steps):
        got, want = env.step(actions), reference.step(actions)
        assert env.observation_space.contains(got[0])
        for name, a, e in zip(FIELDS, got, want, strict=True):
            assert_values_same(a, e, f"t={t} {name}")


def kill_worker_0_mid_episode(env: Any) -> tuple[np.ndarray, list[int], tuple[Any, ...]]:
    """Reset a 4-slot CartPole ``env`` (seed 10) and step it, SIGKILL its worker 0, step again.

    Asserts that the killed worker's slots come back failed (truncated, not terminated, reward 0,
    ``_error``) and slots 2 and 3 do not. Returns the observations before the kill, the killed
    worker's slots and the results of the step after it.
    """
    env.reset(seed=10)
    before, *_ = env.step(np.zeros(4, np.int64))
    victim = env.stats()["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    results = env.step(np.zeros(4, np.int64))
    _, reward, terminated, truncated, infos = results
    failed: list[int] = victim["slots"]
    assert truncated[failed].all() and not terminated[failed].any() and (reward[failed] == 0).all()
    assert infos["_error"][failed].all() and not infos["_error"][[2, 3]].any()
    return before, failed, results
