"""Gymnasium spaces ↔ shared-memory leaves (coordinator side; each env kind gives its spaces).

Box, Discrete, MultiDiscrete and MultiBinary are leaves; Dict and Tuple recurse (as gymnasium's
``vector/utils/shared_memory.py`` does with ``singledispatch``). Any other space (Text, Graph,
Sequence, OneOf, a custom ``Space``) has no fixed-size array form: it becomes a *message leaf*
(:data:`pool_env.shm.MESSAGE_DTYPE`) whose values travel in the workers' replies through
:mod:`pool_env.codec`, and whose batch is a tuple with one value per slot, as gymnasium's
``concatenate`` gives with ``AsyncVectorEnv(shared_memory=False)``. What gymnasium cannot batch at
all (an object that is not a ``Space``) fails in ``batch_space`` with gymnasium's own ``TypeError``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
from gymnasium import spaces

from pool_env.shm import MESSAGE_DTYPE, Leaf, PathKey, build_structure

__all__ = [
    "leaves_of",
    "structure_of_batch",
    "tree_of",
]


def leaves_of(space: spaces.Space[Any], path: tuple[PathKey, ...] = ()) -> list[Leaf]:
    """Flatten ``space`` into its leaves, in a stable order (message leaves for spaces without a
    fixed-size array form)."""
    if isinstance(space, spaces.Box | spaces.MultiDiscrete | spaces.MultiBinary):
        return [Leaf(path, np.dtype(space.dtype).str, tuple(space.shape))]
    if isinstance(space, spaces.Discrete):
        return [Leaf(path, np.dtype(space.dtype).str, ())]
    if isinstance(space, spaces.Dict):
        return [leaf for key, sub in space.spaces.items() for leaf in leaves_of(sub, (*path, key))]
    if isinstance(space, spaces.Tuple):
        return [leaf for i, sub in enumerate(space.spaces) for leaf in leaves_of(sub, (*path, i))]
    return [Leaf(path, MESSAGE_DTYPE, ())]


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
