"""Worker states, the transitions between them, the restart policy, and one worker's record.

States and transitions follow supervisor's ``supervisor/states.py`` and circus's watcher
(STARTING → RUNNING → BACKOFF → FATAL), with the groups defined next to the enum::

    STOPPED ──spawn──> STARTING ──ready──> RUNNING
                          │                   │
                          └──died/hung/frozen─┴──> BACKOFF ──retry_at──> STARTING
                          │                   └──────────> FATAL (flap limit: slots stay truncated)
                          └──env creation failed────────> FATAL
    any ──close──> STOPPED

Only :meth:`pool_env.supervisor.Supervisor.change_state` assigns :attr:`WorkerHandle.state`;
it checks the move against :data:`TRANSITIONS`.

The restart decision (:class:`RestartPolicy`) is a pure function of the failure times (circus's
flapping plugin: attempts within a window, a delay between them, a limit), so unit tests drive
it with a fake clock.
"""

from __future__ import annotations

import enum
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pool_env.config import PoolOptions
from pool_env.errors import ErrorKind

if TYPE_CHECKING:
    from pool_env.supervisor.process import WorkerProcess

__all__ = ["ALIVE", "TRANSITIONS", "RestartPolicy", "WorkerHandle", "WorkerState"]


class WorkerState(enum.StrEnum):
    """Where a worker is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FATAL = "fatal"
    STOPPED = "stopped"


#: States with a process that should be alive.
ALIVE = frozenset({WorkerState.STARTING, WorkerState.RUNNING})

#: The states each state may move to (anything may stop: the pool is closing).
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.STOPPED: frozenset({WorkerState.STARTING}),
    WorkerState.STARTING: frozenset({WorkerState.RUNNING, WorkerState.BACKOFF, WorkerState.FATAL}),
    WorkerState.RUNNING: frozenset({WorkerState.BACKOFF, WorkerState.FATAL}),
    WorkerState.BACKOFF: frozenset({WorkerState.STARTING}),
    WorkerState.FATAL: frozenset(),
}
for _state in WorkerState:
    TRANSITIONS[_state] |= {WorkerState.STOPPED}


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a failed worker: at once, after a backoff, or never (flapping).

    The first restart in a quiet period is immediate; each further failure within
    ``flap_window`` doubles the delay (full jitter, capped); ``flap_limit`` failures within the
    window means give up.
    """

    backoff: float = 0.5
    cap: float = 30.0
    flap_limit: int = 5
    flap_window: float = 60.0

    @classmethod
    def from_options(cls, options: PoolOptions) -> RestartPolicy:
        """The policy ``options`` describe."""
        return cls(options.restart_backoff, options.restart_backoff_cap, options.flap_limit, options.flap_window)

    def next_delay(self, failures: deque[float], now: float, rng: random.Random) -> float | None:
        """Seconds to wait before the next start, or ``None`` to give up.

        ``failures`` holds the monotonic times of earlier failures (oldest first) and is
        updated in place: old ones fall out of the window and ``now`` is appended.
        """
        while failures and now - failures[0] > self.flap_window:
            failures.popleft()
        failures.append(now)
        recent = len(failures)
        if recent >= self.flap_limit:
            return None
        if recent == 1:
            return 0.0
        return rng.uniform(0.0, min(self.cap, self.backoff * 2 ** (recent - 2)))


@dataclass(eq=False)  # hashable by identity: the coordinator keys its routing by handle
class WorkerHandle:
    """The supervisor's record of one worker id and its current process.

    Each worker id keeps its slots for the pool's life; every (re)start gets a new
    *generation*, part of its zmq identity, so a late reply of a replaced process is
    recognised. ``state`` is assigned by ``Supervisor.change_state`` only.

    While a worker is recycled (:mod:`pool_env.recycle`), ``successor`` is a second record of the
    same worker id: the new process, which takes the slots over one by one (its ``takes_over``
    is this record); once it has them all, its process becomes this record's.
    """

    worker_id: int
    slots: list[int]
    gen: int = 0
    state: WorkerState = WorkerState.STOPPED
    process: WorkerProcess | None = None
    restarts: int = 0
    failures: deque[float] = field(default_factory=deque)
    retry_at: float = 0.0
    last_error: str | None = None
    last_kind: ErrorKind | None = None
    steps: int = 0
    started_at: float = 0.0
    # Liveness: the last heartbeat count and CPU time seen, and when either last moved.
    last_beat: int = -1
    last_cpu: float | None = None
    progress_at: float = 0.0
    # Backend counters (HTTP requests, retries, ...) of the current process and of earlier ones.
    backend_counters: dict[str, int] = field(default_factory=dict)
    carried_counters: Counter[str] = field(default_factory=Counter)
    # Recycling: episodes the current process finished, processes replaced so, the new process.
    episodes: int = 0
    recycles: int = 0
    successor: WorkerHandle | None = None
    takes_over: WorkerHandle | None = None

    @property
    def identity(self) -> bytes:
        """The zmq identity of the current generation."""
        return f"w{self.worker_id}.{self.gen}".encode()

    @property
    def pid(self) -> int | None:
        """The current process id, if a process exists."""
        return self.process.pid if self.process is not None else None

    def exit_code(self) -> int | None:
        """The exit code if the process has ended (``-signum`` for a signal), else ``None``."""
        return None if self.process is None else self.process.poll()
