"""Worker recycling: replace a worker process without cutting an episode.

Long runs grow some envs' memory (leaks in simulators, caches); PufferLib and RLlib users restart
workers for it, SB3/gymnasium users restart the whole run. ``PoolOptions.max_episodes_per_worker``
and ``max_worker_rss_mb`` make the pool do it by itself, invisibly to the trainer:

1. A worker process is *due* once it finished that many episodes, or its RSS passed the cap
   (checked about once a second).
2. A *successor* process is started beside it for the same worker id and slots; it creates its
   envs but owns no slot yet (``init`` with ``successor``).
3. Once the successor is ready, every command to the old process carries ``release``: the old
   process answers as usual and hands over each slot whose episode has ended (or failed), with its
   env's RNG state, seed schedule and counters (:mod:`workers.handover`). From then on that slot's
   commands go to the successor, whose next command carries the state (``adopt``) before the
   slot's reset — the reset the old process would have done, drawing the same random numbers.
4. When the successor holds every slot and nothing is in flight, the old process is told to
   close (its process tree is stopped after one ``kill_grace``) and the successor becomes the
   worker's process: its generation, its fast-path record, its heartbeat.

A failure of either process during a handover is a failure of the worker, as always: both are
stopped and the worker restarts (its slots come back truncated, README failure table).
Autoreset modes: NEXT_STEP and DISABLED hand a slot over once its episode ended (its reset is in a
later command). Under SAME_STEP the reset belongs to the step that ended the episode: the old
process hands the slot over with the episode's last observation and info instead of resetting it,
and the coordinator adds the successor's reset to the same command, which completes only then
(``infos["final_obs"]``/``["final_info"]`` laid out as gymnasium does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pool_env.config import PoolOptions
from pool_env.supervisor import WorkerHandle, WorkerState

__all__ = ["Handover", "Recycler"]

log = logging.getLogger(__name__)

#: Seconds between two looks at the workers' RSS.
RSS_CHECK_INTERVAL = 1.0


@dataclass(eq=False)
class Handover:
    """One worker's change of process in progress.

    Attributes:
        old: the worker's record (its current, retiring process).
        new: the successor's record.
        reason: why the worker is recycled (for logs).
        to_adopt: slot -> handed-over state not yet sent to the successor.
        moved: slots the successor owns.
    """

    old: WorkerHandle
    new: WorkerHandle
    reason: str
    to_adopt: dict[int, dict[str, Any]] = field(default_factory=dict)
    moved: set[int] = field(default_factory=set)

    @property
    def releasing(self) -> bool:
        """Whether the old process should hand slots over (the successor is ready for them)."""
        return self.new.state is WorkerState.RUNNING

    @property
    def complete(self) -> bool:
        """Whether the successor owns every slot."""
        return len(self.moved) == len(self.old.slots)


class Recycler:
    """When to recycle which worker, and the handovers under way.

    Args:
        options: ``max_episodes_per_worker`` and ``max_worker_rss_mb``.
        clock: monotonic seconds.
    """

    max_episodes: int | None
    max_rss_bytes: float | None
    handovers: dict[int, Handover]
    _clock: Callable[[], float]
    _rss_checked_at: float

    def __init__(self, options: PoolOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_episodes = options.max_episodes_per_worker
        self.max_rss_bytes = None if options.max_worker_rss_mb is None else options.max_worker_rss_mb * 2**20
        self.handovers = {}
        self._clock = clock
        self._rss_checked_at = clock()

    @classmethod
    def from_options(cls, options: PoolOptions) -> Recycler | None:
        """A recycler if ``options`` ask for recycling, else ``None`` (nothing on the hot path)."""
        if options.max_episodes_per_worker is None and options.max_worker_rss_mb is None:
            return None
        return cls(options)

    def count_episodes(self, handle: WorkerHandle, slots: list[int], terminated: Any, truncated: Any) -> None:
        """Count the episodes that ended in ``slots`` (a step's flags, failed slots included)."""
        handle.episodes += int(np.count_nonzero(terminated[slots] | truncated[slots]))

    def due(self, workers: list[WorkerHandle]) -> list[tuple[WorkerHandle, str]]:
        """Running workers to recycle now, with the reason (none already being recycled)."""
        found = []
        candidates = [h for h in workers if h.state is WorkerState.RUNNING and h.successor is None and h.slots]
        if self.max_episodes is not None:
            for handle in candidates:
                if handle.episodes >= self.max_episodes:
                    found.append((handle, f"{handle.episodes} episodes >= max_episodes_per_worker={self.max_episodes}"))
        now = self._clock()
        if self.max_rss_bytes is not None and now - self._rss_checked_at >= RSS_CHECK_INTERVAL:
            self._rss_checked_at = now
            chosen = {id(h) for h, _ in found}
            for handle in candidates:
                rss = _rss(handle)
                if id(handle) not in chosen and rss is not None and rss > self.max_rss_bytes:
                    mib = self.max_rss_bytes / 2**20
                    found.append((handle, f"RSS {rss / 2**20:.0f} MiB > max_worker_rss_mb={mib:g}"))
        return found


def _rss(handle: WorkerHandle) -> int | None:
    """The resident memory of ``handle``'s process in bytes, ``None`` if unknown."""
    process = handle.process
    rss = getattr(process, "rss", None)
    return None if rss is None else rss()
