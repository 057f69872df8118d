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

from collections.abc import Sequence
from typing import Any

from pool_env.shm import BatchBuffers
from workers.backends.base import Outcome

__all__ = ["adopt_rng", "finish_same_step", "keep_finals", "release_rng", "saved_flags"]


def release_rng(backend: Any, i: int) -> dict[str, Any] | None:
    """The RNG state of local slot ``i``'s env, or ``None`` (no local RNG, or none drawn yet)."""
    rng_state = getattr(backend, "rng_state", None)
    return None if rng_state is None else rng_state(i)


def adopt_rng(backend: Any, i: int, state: dict[str, Any] | None) -> None:
    """Give local slot ``i``'s env the RNG state a retiring process released (``None``: keep its own)."""
    set_rng_state = getattr(backend, "set_rng_state", None)
    if state is not None and set_rng_state is not None:
        set_rng_state(i, state)


def keep_finals(finals: dict[int, tuple[Any, Any]], slots: Sequence[int], outcomes: list[Outcome]) -> None:
    """SAME_STEP while releasing: keep in ``finals`` (local slot -> (obs, info)) the last obs and
    info of the slots this step ended."""
    for slot, outcome in zip(slots, outcomes, strict=True):
        if outcome.error is None and (outcome.terminated or outcome.truncated):
            finals[slot] = (outcome.obs, outcome.info)


def saved_flags(buffers: BatchBuffers, finish: dict[int, Any]) -> dict[int, tuple[float, bool, bool]]:
    """The reward and flags the old process wrote for the slots whose step it ended (SAME_STEP)."""
    return {
        int(row): (float(buffers.reward[row]), bool(buffers.terminated[row]), bool(buffers.truncated[row]))
        for row in finish
    }


def finish_same_step(
    buffers: BatchBuffers,
    finish: dict[int, Any],
    flags: dict[int, tuple[float, bool, bool]] | None,
    infos: dict[int, Any],
    failures: dict[int, list[str]],
) -> None:
    """Complete a SAME_STEP step the old process ended: the step's reward and flags with the new
    episode's observation, and ``{"final_obs", "final_info", **reset info}`` as gymnasium lays out."""
    assert flags is not None
    for row, final in finish.items():
        row = int(row)
        if row in failures:
            continue
        infos[row] = {"final_obs": final["obs"], "final_info": final["info"], **infos.get(row, {})}
        buffers.reward[row], buffers.terminated[row], buffers.truncated[row] = flags[row]
