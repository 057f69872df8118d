"""Gymnasium spaces ↔ shared-memory leaves, and the spaces of each env spec (coordinator side).

Box, Discrete, MultiDiscrete and MultiBinary are leaves; Dict and Tuple recurse (as gymnasium's
``vector/utils/shared_memory.py`` does with ``singledispatch``). Anything else (Text, Graph,
Sequence, ...) has no fixed-size array form and is refused when the pool is built.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pool_env.config import EnvSpec, GymEnvSpec, HttpEnvSpec
from pool_env.errors import EnvCreationError, SpecError
from pool_env.shm import Leaf, PathKey, build_structure

__all__ = [
    "OBS_FIELDS",
    "http_spaces",
    "leaves_of",
    "make_gym_env",
    "probe_spaces",
    "structure_of_batch",
    "tree_of",
]

OBS_FIELDS = 9
"""Values per flight in a DegradationEnv observation (7 sensors, phase, DTAMB)."""


def leaves_of(space: spaces.Space[Any], path: tuple[PathKey, ...] = ()) -> list[Leaf]:
    """Flatten ``space`` into its array leaves, in a stable order.

    Raises:
        SpecError: the space (or a part of it) cannot live in shared memory.
    """
    if isinstance(space, spaces.Box | spaces.MultiDiscrete | spaces.MultiBinary):
        return [Leaf(path, np.dtype(space.dtype).str, tuple(space.shape))]
    if isinstance(space, spaces.Discrete):
        return [Leaf(path, np.dtype(space.dtype).str, ())]
    if isinstance(space, spaces.Dict):
        return [leaf for key, sub in space.spaces.items() for leaf in leaves_of(sub, (*path, key))]
    if isinstance(space, spaces.Tuple):
        return [leaf for i, sub in enumerate(space.spaces) for leaf in leaves_of(sub, (*path, i))]
    where = "/".join(map(str, path)) or "the space"
    raise SpecError(
        f"space: {type(space).__name__} at {where} has no fixed-size array form; pool_env supports "
        "Box, Discrete, MultiDiscrete, MultiBinary and Dict/Tuple of those"
    )


def tree_of(space: spaces.Space[Any], counter: Iterator[int] | None = None) -> Any:
    """The nesting of ``space`` for :func:`pool_env.shm.build_structure` (leaves in :func:`leaves_of` order).

    Keeps what leaf paths lose: Dict keys that are ints, and empty Dicts.
    """
    counter = itertools.count() if counter is None else counter
    if isinstance(space, spaces.Dict):
        return {"dict": [[key, tree_of(sub, counter)] for key, sub in space.spaces.items()]}
    if isinstance(space, spaces.Tuple):
        return {"tuple": [tree_of(sub, counter) for sub in space.spaces]}
    return next(counter)


def structure_of_batch(leaves: list[Leaf], arrays: list[np.ndarray], tree: Any = None) -> Any:
    """Nest per-leaf batch arrays into the structure gymnasium's ``batch_space`` gives."""
    return build_structure(leaves, arrays, tree)


def http_spaces(spec: HttpEnvSpec) -> tuple[spaces.Box, spaces.Discrete]:
    """Observation and action space of one DegradationEnv slot.

    ``observation="last"``: ``Box(-inf, inf, (9,), float32)``, the last flight of each step.
    ``observation="chunk"``: ``Box(-inf, inf, (step_size, 9), float32)``, padded with zeros.
    """
    shape = (OBS_FIELDS,) if spec.observation == "last" else (spec.step_size, OBS_FIELDS)
    return spaces.Box(-np.inf, np.inf, shape, np.float32), spaces.Discrete(3)


def make_gym_env(spec: GymEnvSpec) -> gym.Env[Any, Any]:
    """Make one env of ``spec`` (registered id or ``"module:callable"``).

    Raises:
        EnvCreationError: unknown id, bad import string, or the constructor raised.
    """
    import importlib

    try:
        for module in spec.imports:
            importlib.import_module(module)
        if ":" in spec.env_id and spec.env_id not in gym.registry:
            module_name, _, attr = spec.env_id.partition(":")
            factory = getattr(importlib.import_module(module_name), attr)
            env = factory(**spec.kwargs)
        else:
            env = gym.make(spec.env_id, **spec.kwargs)
    except Exception as exc:
        raise EnvCreationError(f"cannot create env {spec.env_id!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(env, gym.Env):
        raise EnvCreationError(f"{spec.env_id!r} returned {type(env).__name__}, not a gymnasium.Env")
    return env


def probe_spaces(
    spec: EnvSpec,
) -> tuple[spaces.Space[Any], spaces.Space[Any], dict[str, Any], str | None]:
    """Observation space, action space, metadata and render_mode of one env of ``spec``.

    For local envs this makes (and closes) one env in the calling process, as gymnasium's
    ``AsyncVectorEnv`` does with its dummy env.
    """
    if isinstance(spec, HttpEnvSpec):
        obs_space, act_space = http_spaces(spec)
        return obs_space, act_space, {}, None
    env = make_gym_env(spec)
    try:
        leaves_of(env.observation_space)
        leaves_of(env.action_space)
        return env.observation_space, env.action_space, dict(env.metadata), env.render_mode
    finally:
        env.close()
