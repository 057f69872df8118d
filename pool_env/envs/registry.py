"""The env kinds the pool knows, by their wire name: the one list to extend with a new kind.

A kind is a spec class satisfying :class:`pool_env.envs.base.EnvSpec` (one module each). The
workers rebuild a spec with :func:`spec_from_wire`; a kind whose wire form carries pickled code
(``carries_code``) is only rebuilt where the caller says pickle is allowed (workers of an
embedded pool), never in a daemon's workers.
"""

from __future__ import annotations

from typing import Any

from pool_env.envs.base import EnvSpec
from pool_env.envs.callables import EnvFnsSpec
from pool_env.envs.gym import GymEnvSpec
from pool_env.envs.http import HttpEnvSpec
from pool_env.errors import SpecError

__all__ = ["KINDS", "is_spec", "spec_from_wire"]

KINDS: dict[str, type[EnvSpec]] = {cls.kind: cls for cls in (HttpEnvSpec, GymEnvSpec, EnvFnsSpec)}
"""Spec class of each kind, by its wire name."""


def is_spec(value: Any) -> bool:
    """Whether ``value`` is a spec of a registered kind."""
    return isinstance(value, tuple(KINDS.values()))


def spec_from_wire(data: dict[str, Any], *, allow_pickle: bool = False) -> EnvSpec:
    """Rebuild a spec from its ``to_wire`` output.

    Args:
        data: the wire dict, with its ``kind``.
        allow_pickle: whether a kind that carries pickled code may be rebuilt here (only the
            workers of an embedded pool, on its private channel).

    Raises:
        SpecError: unknown ``kind``, bad fields, or pickled code where it is not allowed.
    """
    kind = data.get("kind") if isinstance(data, dict) else None
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SpecError(f"kind: unknown env spec kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    if cls.carries_code and not allow_pickle:
        raise SpecError(
            f"kind: a {kind!r} spec carries pickled code, which this process does not accept "
            "(workers serving a daemon never unpickle; only an embedded pool's own workers do)"
        )
    return cls.from_wire({k: v for k, v in data.items() if k != "kind"})
