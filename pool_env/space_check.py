"""The start-up space check: every env of a pool must declare the pool's spaces.

The batch arrays in shared memory are laid out from the pool's spaces, so an env that declares
others (a factory whose spaces depend on its arguments or on chance) would be written into the
wrong layout. Gymnasium's vector envs check this at construction (``SyncVectorEnv`` and
``AsyncVectorEnv``'s ``_check_spaces``, comparing with ``Space.__eq__``); so do we: the
coordinator sends the pool's spaces to each worker as plain data (:func:`describe`, msgpack,
never pickle), and the worker compares every env's declared spaces with them before it reports
``ready`` (:func:`mismatch`). Bounds compare like gymnasium's ``Box.__eq__`` (``np.allclose``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["describe", "describe_pool", "mismatch"]


def describe(space: spaces.Space[Any]) -> Any:
    """``space`` as msgpack-able data (numpy arrays travel as arrays) that :func:`mismatch` compares."""
    if isinstance(space, spaces.Box):
        return ["Box", np.dtype(space.dtype).str, list(space.shape), space.low, space.high]
    if isinstance(space, spaces.Discrete):
        return ["Discrete", int(space.n), int(space.start)]
    if isinstance(space, spaces.MultiDiscrete):
        return ["MultiDiscrete", np.dtype(space.dtype).str, space.nvec, space.start]
    if isinstance(space, spaces.MultiBinary):
        return ["MultiBinary", np.asarray(space.n).tolist()]
    if isinstance(space, spaces.Dict):
        return ["Dict", [[key, describe(sub)] for key, sub in space.spaces.items()]]
    if isinstance(space, spaces.Tuple):
        return ["Tuple", [describe(sub) for sub in space.spaces]]
    kind = f"{type(space).__module__}.{type(space).__qualname__}"
    if type(space).__repr__ is object.__repr__:  # a custom space without a repr: its address says nothing
        return [kind]
    return [kind, repr(space)]


def describe_pool(observation_space: spaces.Space[Any], action_space: spaces.Space[Any]) -> dict[str, Any]:
    """What the coordinator sends each worker: per space, its description and its repr for messages."""
    return {
        "observation_space": [describe(observation_space), repr(observation_space)],
        "action_space": [describe(action_space), repr(action_space)],
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return bool(np.allclose(a, b))
        return bool(np.array_equal(a, b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def mismatch(
    pool: dict[str, Any], declared: Sequence[tuple[spaces.Space[Any], spaces.Space[Any]]], slots: Sequence[int]
) -> str | None:
    """The first env whose declared spaces differ from the pool's, as a message; ``None`` if all agree.

    Args:
        pool: :func:`describe_pool` of the pool's spaces (as received over the wire).
        declared: per local env, its ``(observation_space, action_space)``.
        slots: the pool slot of each local env (for the message).
    """
    for slot, (observation_space, action_space) in zip(slots, declared, strict=True):
        for name, space in (("observation_space", observation_space), ("action_space", action_space)):
            description, shown = pool[name]
            if not _same(describe(space), description):
                return (
                    f"slot {slot}: its env declares {name} {space!r}, but the pool's is {shown}; every env of a "
                    "pool must declare the same spaces (the batch arrays are laid out from them), as gymnasium's "
                    "vector envs require"
                )
    return None
