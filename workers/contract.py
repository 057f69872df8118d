"""What an env must return: one outcome checked against the pool's declared layout, per slot.

A return that breaks the env's declared contract is a bug in the env, never transient: an
observation whose shape differs from its space (or whose dtype cannot be cast to it under numpy's
``same_kind`` rule, the rule gymnasium's ``SyncVectorEnv`` applies when it stacks observations), a
reward that is not a real scalar (``SyncVectorEnv`` stores it in a float64 array and numpy 2
refuses a shape-``(1,)`` array there), a flag that is not a bool (or 0/1, which ``SyncVectorEnv``
stores losslessly), an info that is not a dict. :func:`check_outcome` names the field, what was
expected and what came; the worker turns that into an ``invalid env return`` error for the slot
alone, so its neighbours keep their episodes and the worker lives.

Values that pass are returned converted (``float`` reward, ``bool`` flags), the only conversion
the worker makes before writing shared memory. Imports no gymnasium (HTTP workers stay light).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from pool_env.shm import Leaf, leaf_value

__all__ = ["ContractViolation", "check_outcome", "describe_value"]


class ContractViolation(ValueError):
    """One field of an env's return breaks the declared contract.

    Attributes:
        field: what was wrong (``"reward"``, ``"terminated"``, ``"observation['pos']"``, ...).
        expected: what the contract asks for.
        got: what came, described.
    """

    field: str
    expected: str
    got: str

    def __init__(self, field: str, expected: str, got: str) -> None:
        super().__init__(f"invalid {field}: expected {expected}, got {got}")
        self.field = field
        self.expected = expected
        self.got = got


def describe_value(value: Any) -> str:
    """A short description of ``value`` for an error message: its type, and shape/dtype for arrays."""
    if isinstance(value, np.ndarray):
        return f"ndarray of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _reward(value: Any) -> float:
    kind = type(value)
    if kind is float or kind is int:  # the common case first: no numpy call on the hot path
        return float(value)
    if isinstance(value, np.ndarray):
        if value.shape == () and value.dtype.kind in "biuf":
            return float(value)
    elif isinstance(value, numbers.Real | np.bool_):  # bool, numpy ints and floats, Fraction, ...
        return float(value)
    expected = "a real scalar (SyncVectorEnv stores rewards in a float64 array)"
    raise ContractViolation("reward", expected, describe_value(value))


def _flag(name: str, value: Any) -> bool:
    if value is True or value is False:
        return bool(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        if value.shape == () and value.dtype.kind in "biu" and value.item() in (0, 1):
            return bool(value)
    elif isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    raise ContractViolation(name, "a bool", describe_value(value))


@functools.cache
def _dtype(name: str) -> np.dtype[Any]:
    return np.dtype(name)


def _where(leaf: Leaf) -> str:
    return "observation" + "".join(f"[{key!r}]" for key in leaf.path)


def _observation(obs: Any, leaves: Sequence[Leaf], flat: bool) -> None:
    for leaf in leaves:
        if flat:
            value = obs
        else:
            try:
                value = leaf_value(obs, leaf.path)
            except (KeyError, IndexError, TypeError) as exc:
                got = f"none ({exc!r})"
                raise ContractViolation(_where(leaf), "a part the observation space declares", got) from exc
        if leaf.by_message:
            continue  # no fixed shape to check: it travels as it is (SyncVectorEnv checks nothing)
        dtype = _dtype(leaf.dtype)
        if type(value) is np.ndarray and value.shape == leaf.shape and value.dtype == dtype:
            continue  # the common case: nothing more to look at
        try:
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested sequences
            got = f"{describe_value(value)} ({exc})"
            raise ContractViolation(_where(leaf), f"an array of shape {leaf.shape}", got) from exc
        if array.shape != leaf.shape:
            raise ContractViolation(
                _where(leaf),
                f"shape {leaf.shape} and dtype {dtype} (as the observation space declares)",
                f"{describe_value(array)}",
            )
        if array.dtype != dtype and not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise ContractViolation(
                _where(leaf),
                f"dtype {dtype} or one that casts to it (numpy 'same_kind', as SyncVectorEnv stacks)",
                describe_value(array),
            )


def check_outcome(
    obs: Any,
    reward: Any,
    terminated: Any,
    truncated: Any,
    info: Any,
    leaves: Sequence[Leaf],
    flat: bool,
) -> tuple[float, bool, bool]:
    """Check one slot's return against the layout; the reward and flags as ``float``/``bool``.

    ``obs`` may be ``None`` (a failed slot keeps its previous observation) and is then not checked.

    Raises:
        ContractViolation: a field breaks the contract (the first one found, in the order
            observation, reward, terminated, truncated, info).
    """
    if obs is not None:
        _observation(obs, leaves, flat)
    checked = (_reward(reward), _flag("terminated", terminated), _flag("truncated", truncated))
    if not isinstance(info, dict):
        raise ContractViolation("info", "a dict", describe_value(info))
    return checked
