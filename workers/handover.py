"""Handing a slot from a retiring worker process to its successor, at the slot's episode boundary.

Recycling (``PoolOptions.max_episodes_per_worker`` / ``max_worker_rss_mb``, :mod:`pool_env.recycle`)
replaces a worker process without cutting an episode: the old process *releases* each slot once its
episode ended, and the new one *adopts* it before the slot's next reset. What crosses is what the
next episode depends on and the old process alone knows:

* the env's RNG — gymnasium's ``Env.np_random`` generator (its bit generator's whole state) and
  ``np_random_seed`` — so a seedless reset in the new process draws exactly what it would have
  drawn in the old one (``reset(seed=None)`` continues ``np_random``, gymnasium's rule);
* the slot's seed schedule (the seed a restarted worker still owes the slot's next reset), its
  episode counter (for error messages) and its run of env exceptions (``env_failure_limit``).

The record travels in the worker's ``done`` reply and the successor's next command as plain data
through :mod:`pool_env.codec` (a generator crosses as its bit generator's state), never pickle, so
workers that serve a daemon recycle the same way. The HTTP backend hands over its per-slot seed
stream (the ``random.Random`` that draws the server's seed for a seedless reset), so seeded HTTP
runs stay reproducible too.
"""

from __future__ import annotations

from typing import Any

__all__ = ["adopt_rng", "release_rng"]


def release_rng(backend: Any, i: int) -> dict[str, Any] | None:
    """The RNG state of local slot ``i``'s env, or ``None`` (no local RNG, or none drawn yet)."""
    rng_state = getattr(backend, "rng_state", None)
    return None if rng_state is None else rng_state(i)


def adopt_rng(backend: Any, i: int, state: dict[str, Any] | None) -> None:
    """Give local slot ``i``'s env the RNG state a retiring process released (``None``: keep its own)."""
    set_rng_state = getattr(backend, "set_rng_state", None)
    if state is not None and set_rng_state is not None:
        set_rng_state(i, state)
