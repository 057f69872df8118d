"""The trainer's copy of the observations of the slots it leased from daemons (one batch for all).

Each daemon's reply brings the rows of its lease: arrays for the observation leaves of fixed
shape (from its shared memory or its frames), lists of values for the leaves without one (Text,
Sequence, Graph, OneOf, custom spaces: :mod:`pool_env.daemon.space_wire`). :class:`LeasedObservations`
keeps them in one batch: a failed slot keeps its last valid observation (even if its worker wrote
a new one before it died or hung), and the batch handed to the trainer is a copy, the leaves
without a fixed shape as tuples of one value per slot, as gymnasium's ``concatenate`` gives them
with ``AsyncVectorEnv(shared_memory=False)``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from pool_env.shm import build_structure
from pool_env.spaces import leaves_of, structure_of_batch, tree_of

__all__ = ["LeasedObservations"]


class LeasedObservations:
    """The observations of ``num_envs`` slots of one observation space.

    Attributes:
        parts: per observation leaf, a ``(num_envs, *shape)`` array, or a list of ``num_envs``
            values for a leaf without a fixed shape.
    """

    parts: list[Any]

    def __init__(self, single_space: spaces.Space[Any], num_envs: int) -> None:
        self._leaves = leaves_of(single_space)
        self._tree = tree_of(single_space)
        self.parts = [
            [None] * num_envs if leaf.by_message else np.zeros((num_envs, *leaf.shape), dtype=leaf.dtype)
            for leaf in self._leaves
        ]

    def update(self, offset: int, values: Sequence[Any], failed: Collection[int] = ()) -> None:
        """Rows ``offset, offset + 1, ...`` from one daemon's reply (``values``: one per leaf, an
        array or a list of rows); the slots in ``failed`` keep what they had."""
        for target, value in zip(self.parts, values, strict=True):
            if isinstance(target, list):  # no fixed shape: one value per slot
                for position, item in enumerate(value):
                    if offset + position not in failed:
                        target[offset + position] = item
                continue
            if not failed:
                target[offset : offset + len(value)] = value
                continue
            chosen = list(failed)
            kept = target[chosen].copy()
            target[offset : offset + len(value)] = value
            target[chosen] = kept

    def slot(self, i: int) -> Any:
        """Slot ``i``'s observation (one env's structure; arrays copied)."""
        values = [part[i] if isinstance(part, list) else part[i].copy() for part in self.parts]
        return build_structure(self._leaves, values, self._tree)

    def batch(self) -> Any:
        """A copy of the whole batch, structured as ``batch_space`` of the single space."""
        values: list[Any] = [tuple(part) if isinstance(part, list) else part.copy() for part in self.parts]
        return structure_of_batch(self._leaves, values, self._tree)
