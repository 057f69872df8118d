"""The env kinds the pool knows, by their wire name: the one list to extend with a new kind.

A kind is a spec class satisfying :class:`pool_env.envs.base.EnvSpec` (one module each). The
workers rebuild a spec with :func:`spec_from_wire`; a kind whose wire form carries pickled code
(``carries_code``) is only rebuilt where the caller says pickle is allowed (workers of an
embedded pool), never in a daemon's workers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pool_env.envs.base import EnvSpec
from pool_env.envs.callables import EnvFnsSpec
from pool_env.envs.gym import GymEnvSpec
from pool_env.envs.http import HttpEnvSpec
from pool_env.errors import SpecError

__all__ = ["KINDS", "Count", "as_count", "is_spec", "resolve_spec", "spec_from_wire"]

Count = int | np.integer[Any]
"""An integer argument: a Python int or a numpy integer (``np.int64(8)``, as users pass)."""

DEFAULT_NUM_ENVS = 16
"""Slots of a pool built from a spec when ``num_envs`` is not given."""

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


def as_count(name: str, value: Any) -> int:
    """``value`` as an int (numpy integers included, bools refused).

    Raises:
        SpecError: not an integer.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SpecError(f"{name}: must be an integer, got {value!r}")
    return int(value)


def resolve_spec(
    spec: EnvSpec | Sequence[Callable[[], Any]] | None,
    env_fns: Sequence[Callable[[], Any]] | None,
    num_envs: Count | None,
) -> tuple[EnvSpec, int]:
    """The spec (callables become an :class:`EnvFnsSpec`) and the slot count.

    Raises:
        SpecError: neither or both of ``spec`` and ``env_fns``, a ``num_envs`` that is not a
            positive integer or differs from ``len(env_fns)``.
    """
    if env_fns is not None:
        if spec is not None:
            raise SpecError("env_fns: pass either a spec or env_fns, not both")
        spec = env_fns
    if spec is None:
        raise SpecError("spec: pass an env spec (GymEnvSpec, HttpEnvSpec) or env_fns, a list of callables")
    count = None if num_envs is None else as_count("num_envs", num_envs)
    if count is not None and count < 1:
        raise SpecError(f"num_envs: must be a positive int, got {num_envs!r}")
    if is_spec(spec):
        return spec, DEFAULT_NUM_ENVS if count is None else count  # type: ignore[return-value]
    if isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        fns = EnvFnsSpec.from_callables(spec)
        if count is not None and count != fns.num_envs:
            raise SpecError(f"num_envs: {count} given with {fns.num_envs} env_fns; one slot per callable")
        return fns, fns.num_envs
    if isinstance(spec, Mapping):  # RLlib calls `.environment(env=PoolVectorEnv)` with its env_config dict
        raise SpecError(
            f"spec: got a {type(spec).__name__} ({dict(spec)!r:.80}), as RLlib passes its env_config to "
            "`.environment(env=PoolVectorEnv)`; for RLlib use "
            "`.environment(pool_env.ray.register_pool_env(name, spec))` with "
            "`.env_runners(gym_env_vectorize_mode='vector_entry_point')`, else pass an env spec or env_fns"
        )
    raise SpecError(
        f"spec: expected an env spec (HttpEnvSpec, GymEnvSpec) or a list of env factories, got {type(spec).__name__}"
    )
