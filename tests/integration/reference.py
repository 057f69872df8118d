"""Serial references (``gymnasium.vector.SyncVectorEnv``) and bit-for-bit batch comparisons."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv

import pool_env

__all__ = ["assert_same", "make_reference", "make_single", "take"]


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
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{where}: keys differ"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
        return
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), f"{where}: tuple differs"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{i}]")
        return
    actual_array, expected_array = np.asarray(actual), np.asarray(expected)
    assert actual_array.dtype == expected_array.dtype, f"{where}: dtype {actual_array.dtype} != {expected_array.dtype}"
    assert actual_array.shape == expected_array.shape, f"{where}: shape {actual_array.shape} != {expected_array.shape}"
    if actual_array.dtype.kind == "f":  # bit for bit: -0.0 != 0.0, NaN == NaN of the same payload
        equal = np.ascontiguousarray(actual_array).tobytes() == np.ascontiguousarray(expected_array).tobytes()
    else:
        equal = np.array_equal(actual_array, expected_array)
    assert equal, f"{where}: values differ\nactual:   {actual_array!r}\nexpected: {expected_array!r}"
