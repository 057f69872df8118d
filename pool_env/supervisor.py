"""Worker processes: spawn, watch, stop, and the restart policy (backoff, flapping, give-up).

Each worker id keeps its slots for the pool's life; every (re)start gets a new *generation*,
which is part of its zmq identity, so a late reply of a replaced process is recognised.
States follow supervisor/circus::

    STARTING ──ready──> RUNNING ──died/hung──> BACKOFF ──retry_at──> STARTING
                                           └──flap limit──> FATAL (slots stay truncated)

The restart decision (:class:`RestartPolicy`) is a pure function of the failure times, so
unit tests drive it with a fake clock.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import psutil

from pool_env.config import PoolOptions

__all__ = ["RestartPolicy", "WorkerHandle", "WorkerState", "spawn_worker", "stop_process"]

log = logging.getLogger(__name__)


class WorkerState(enum.StrEnum):
    """Where a worker is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FATAL = "fatal"
    STOPPED = "stopped"


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


@dataclass
class WorkerHandle:
    """The coordinator's record of one worker id and its current process."""

    worker_id: int
    slots: list[int]
    gen: int = 0
    state: WorkerState = WorkerState.STOPPED
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    failures: deque[float] = field(default_factory=deque)
    retry_at: float = 0.0
    last_error: str | None = None
    stderr_path: str | None = None
    steps: int = 0
    started_at: float = 0.0
    # Backend counters (HTTP requests, retries, ...) of the current process and of earlier ones.
    backend_counters: dict[str, int] = field(default_factory=dict)
    carried_counters: Counter[str] = field(default_factory=Counter)
    _psutil: psutil.Process | None = None

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

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters the process wrote to stderr."""
        if not self.stderr_path:
            return ""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def resources(self) -> dict[str, Any]:
        """cpu % and rss of the current process (``None`` where unknown), from a cached psutil handle."""
        pid = self.pid
        if pid is None or self.exit_code() is not None:
            return {"cpu_percent": None, "rss": None}
        try:
            if self._psutil is None or self._psutil.pid != pid:
                self._psutil = psutil.Process(pid)
                self._psutil.cpu_percent(None)
            with self._psutil.oneshot():
                return {"cpu_percent": self._psutil.cpu_percent(None), "rss": self._psutil.memory_info().rss}
        except psutil.Error:
            return {"cpu_percent": None, "rss": None}


def spawn_worker(
    handle: WorkerHandle, endpoint: str, socket_dir: str, log_level: str = "WARNING", accept_pickle: bool = False
) -> None:
    """Start a new generation of ``handle``'s worker: ``python -m workers ...``.

    Never a fork of this (possibly threaded) process: a fresh interpreter, arguments on the
    command line, everything else over the socket. ``accept_pickle`` lets it unpickle the env
    factories of an ``env_fns`` pool (``--accept-pickle``); never for a daemon's workers.
    """
    handle.gen += 1
    handle.stderr_path = os.path.join(socket_dir, f"worker-{handle.worker_id}.{handle.gen}.stderr")
    command = [
        sys.executable, "-m", "workers",
        "--endpoint", endpoint,
        "--worker-id", str(handle.worker_id),
        "--gen", str(handle.gen),
        "--parent-pid", str(os.getpid()),
        "--socket-dir", socket_dir,
        "--log-level", log_level,
        *(["--accept-pickle"] if accept_pickle else []),
    ]  # fmt: skip
    with open(handle.stderr_path, "wb") as stderr:
        handle.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, close_fds=True
        )
    handle.state = WorkerState.STARTING
    handle.started_at = time.monotonic()
    handle._psutil = None
    log.debug("worker %d gen %d started, pid %d", handle.worker_id, handle.gen, handle.process.pid)


def stop_process(process: subprocess.Popen[bytes] | None, grace: float) -> int | None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL and reap. Returns the exit code."""
    if process is None:
        return None
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    try:
        return process.wait(5.0)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process in uninterruptible sleep
        log.error("pid %d did not exit after SIGKILL", process.pid)
        return None
