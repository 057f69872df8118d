"""The step/reset fast path: sequence words in shared memory, a short spin, then a blocking wait.

zmq stays the route for control, start-up, errors, infos and everything slow; this package only
carries the common case — a step or reset of a worker's slots that ended with nothing to report —
without a socket round trip. :mod:`~pool_env.fastpath.block` holds the per-worker records,
:mod:`~pool_env.fastpath.bell` the wake-ups and the measured reasons for them, and
:mod:`~pool_env.fastpath.probe` the micro-benchmark of the raw floors.
"""

from __future__ import annotations

from pool_env.fastpath.bell import SPIN_BUDGET, AdaptiveSpin, Bell, Waiter, Wake, spin_budget, spin_until, usable_cores
from pool_env.fastpath.block import (
    FAST_RESET,
    FAST_STEP,
    FastCommand,
    FastLane,
    WorkerPort,
    control_words,
    pack,
    supported,
)

__all__ = [
    "FAST_RESET",
    "FAST_STEP",
    "SPIN_BUDGET",
    "AdaptiveSpin",
    "Bell",
    "FastCommand",
    "FastLane",
    "Waiter",
    "Wake",
    "WorkerPort",
    "control_words",
    "pack",
    "spin_budget",
    "spin_until",
    "supported",
    "usable_cores",
]
