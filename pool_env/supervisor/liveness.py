"""Liveness: a heartbeat board in a small shared file, and the rule that tells frozen from busy.

Each worker runs a heartbeat thread that increments its own 8-byte counter in a file of the
pool's private directory, mapped into memory by the coordinator and every worker. The thread
runs while the worker's main thread waits on a socket, sleeps or retries a slow server, so a
*busy* worker keeps beating. A worker is *frozen* when, for ``freeze_timeout`` seconds, its
counter did not move **and** its CPU time did not advance: stopped by SIGSTOP, or deadlocked
in C code that holds the GIL without running. A long C step that holds the GIL does not beat
but burns CPU, so it counts as busy and keeps its ``step_timeout`` (uvicorn's supervisor asks
"alive and answering a ping"; a ping needs the main thread, which a long step holds).

Reading the board costs a memory read; the CPU time (``/proc``) is read only when the counter
did not move. Progress is judged between two looks of the supervisor, never from the time of a
look alone, so a coordinator that did not look for a while (the trainer was busy) sees the
counter moved and never cuts a worker for its own absence.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from collections.abc import Callable

__all__ = ["HEARTBEAT_INTERVAL", "HeartbeatBoard", "HeartbeatThread"]

#: Seconds between two beats of a worker (far below any sensible ``freeze_timeout``).
HEARTBEAT_INTERVAL = 0.2
_COUNTER_BYTES = 8


class HeartbeatBoard:
    """One unsigned 64-bit counter per worker id, in a file mapped into memory.

    Args:
        path: the board's file.
        size: the number of counters; ``None`` to map an existing file (a worker).

    Raises:
        OSError: the file cannot be created or mapped.
    """

    path: str
    _map: mmap.mmap
    _counters: memoryview

    def __init__(self, path: str, size: int | None = None) -> None:
        self.path = path
        if size is not None:
            with open(path, "wb") as f:
                f.write(bytes(_COUNTER_BYTES * max(1, size)))
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        self._counters = memoryview(self._map).cast("Q")

    def __len__(self) -> int:
        return len(self._counters)

    def __getitem__(self, index: int) -> int:
        return int(self._counters[index])

    def beat(self, index: int) -> None:
        """Move counter ``index`` on (an aligned 8-byte store: readers never see half of it)."""
        self._counters[index] = (self._counters[index] + 1) & 0xFFFF_FFFF_FFFF_FFFF

    def close(self) -> None:
        """Unmap the board (the file stays until its directory is removed)."""
        self._counters.release()
        with contextlib.suppress(BufferError):
            self._map.close()


class HeartbeatThread(threading.Thread):
    """A worker's heartbeat: beats every :data:`HEARTBEAT_INTERVAL` s until stopped.

    Args:
        board: the pool's heartbeat board.
        index: this worker's id.
        on_orphaned: called (once) from the thread when ``parent_alive`` turns false while the
            main thread did not exit within ``orphan_grace`` seconds (it is stuck in a step):
            the worker's last resort to stop its process tree when the trainer died.
        parent_alive: whether the coordinator process still lives.
        orphan_grace: see ``on_orphaned``.
    """

    board: HeartbeatBoard
    index: int
    _stop_event: threading.Event
    _on_orphaned: Callable[[], None] | None
    _parent_alive: Callable[[], bool]
    _orphan_grace: float

    def __init__(
        self,
        board: HeartbeatBoard,
        index: int,
        on_orphaned: Callable[[], None] | None = None,
        parent_alive: Callable[[], bool] = lambda: True,
        orphan_grace: float = 2.0,
    ) -> None:
        super().__init__(name="pool_env-heartbeat", daemon=True)
        self.board = board
        self.index = index
        self._stop_event = threading.Event()
        self._on_orphaned = on_orphaned
        self._parent_alive = parent_alive
        self._orphan_grace = orphan_grace

    def run(self) -> None:
        """Beat until :meth:`stop`; call ``on_orphaned`` if the parent is gone for too long."""
        orphaned_beats = 0
        while not self._stop_event.wait(HEARTBEAT_INTERVAL):
            self.board.beat(self.index)
            if self._on_orphaned is None or self._parent_alive():
                orphaned_beats = 0
                continue
            orphaned_beats += 1
            if orphaned_beats * HEARTBEAT_INTERVAL >= self._orphan_grace:
                self._on_orphaned()
                return

    def stop(self) -> None:
        """Stop beating (returns at once; the thread ends within one interval)."""
        self._stop_event.set()
