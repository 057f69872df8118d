"""How busy the rest of the machine was while the bench ran (not the bench's own processes).

Issue 13 asks for every run's load average and for measurements at a load below 0.5. The load
average at the *end* of a run mostly counts the run's own processes (its pools, daemons and
reference servers), and at its start it still counts whatever ran in the minute before, so on its
own it cannot say whether something else competed with the measurement. :class:`ForeignCpu`
answers that directly: the CPU time every core spent busy (``psutil.cpu_times``) minus the CPU
time of this process and of every descendant it (or they) waited for (``os.times``' children
fields, i.e. ``RUSAGE_CHILDREN``), over the run's wall time.
"""

from __future__ import annotations

import os
import time

import psutil

__all__ = ["BUSY_CORES", "LOADED_AVERAGE", "ForeignCpu"]

LOADED_AVERAGE = 0.5
"""A run that starts at this 1-minute load average or above is reported as measured on a loaded machine."""
BUSY_CORES = 0.1
"""So is a run during which other processes used this many cores or more on average."""


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    # user includes guest time on Linux; idle, iowait and steal are not work done here
    return float(times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0))


def _own_seconds() -> float:
    own = os.times()
    return own.user + own.system + own.children_user + own.children_system


class ForeignCpu:
    """The CPU that processes outside this one's tree used since construction, in cores.

    Only descendants that were waited for are known as this run's own: call :meth:`cores` once
    every pool, daemon and server of the run is closed, or their CPU counts as foreign.
    """

    def __init__(self) -> None:
        self._start = (time.monotonic(), _busy_seconds(), _own_seconds())

    def cores(self) -> float:
        """Average number of cores kept busy by other processes since construction (≥ 0)."""
        started, busy, own = self._start
        elapsed = time.monotonic() - started
        if elapsed <= 0:
            return 0.0
        foreign = (_busy_seconds() - busy) - (_own_seconds() - own)
        return max(0.0, foreign / elapsed)
