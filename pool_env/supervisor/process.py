"""The process seam: how the supervisor starts, watches and stops one worker process.

:class:`WorkerProcess` and :class:`Launcher` are what :class:`~pool_env.supervisor.Supervisor`
needs from the operating system; unit tests swap in fakes (circus and supervisor test their
state machines the same way). The real ones start ``python -P -m workers ...``:

* a fresh interpreter, never a fork of the (possibly threaded) trainer;
* ``-P``: the working directory does not come first on ``sys.path``, so a user's own
  ``workers.py`` or ``workers/`` package cannot shadow ours; the trainer's ``sys.path`` is
  handed over (``POOL_ENV_SYS_PATH``) and appended by the worker *after* it imported itself,
  so modules next to the training script stay importable for env import strings;
* in a session (and process group) of its own, so that stopping a worker stops everything its
  envs started: the group is killed, and so is every descendant found before the kill (for
  those that left the group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Protocol

import psutil

__all__ = ["SYS_PATH_VARIABLE", "Launcher", "SubprocessLauncher", "SubprocessWorker", "WorkerProcess"]

#: Environment variable carrying the trainer's ``sys.path`` (``os.pathsep``-joined) to workers.
SYS_PATH_VARIABLE = "POOL_ENV_SYS_PATH"


class WorkerProcess(Protocol):
    """One running (or ended) worker process, as the supervisor sees it."""

    @property
    def pid(self) -> int:
        """The process id."""
        ...

    def poll(self) -> int | None:
        """The exit code if the process ended (``-signum`` for a signal, reaped), else ``None``."""
        ...

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the exit; the exit code, or ``None`` if still running."""
        ...

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM)."""
        ...

    def remember_tree(self) -> None:
        """Note the current descendants, so :meth:`kill_tree` finds them after the worker exited."""
        ...

    def kill_tree(self) -> None:
        """SIGKILL the process, its process group and every descendant; never raises."""
        ...

    def heartbeat(self) -> int:
        """The worker's heartbeat counter (any change proves its interpreter ran)."""
        ...

    def cpu_time(self) -> float | None:
        """CPU seconds (user + system) used so far, ``None`` if unknown."""
        ...

    def resources(self) -> dict[str, Any]:
        """``cpu_percent`` and ``rss`` (bytes), ``None`` where unknown."""
        ...

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters the process wrote to stderr."""
        ...


class Launcher(Protocol):
    """Starts one generation of one worker id."""

    def launch(self, worker_id: int, gen: int) -> WorkerProcess:
        """Start the process (do not wait for it to get ready)."""
        ...


class SubprocessWorker:
    """A real worker process: a ``Popen`` plus a cached ``psutil.Process`` (circus's stats pattern)."""

    popen: subprocess.Popen[bytes]
    stderr_path: str
    _beats: Any
    _index: int
    _psutil: psutil.Process | None
    _descendants: list[psutil.Process]

    def __init__(self, popen: subprocess.Popen[bytes], stderr_path: str, beats: Any, index: int) -> None:
        self.popen = popen
        self.stderr_path = stderr_path
        self._beats = beats  # a sequence of counters, one per worker id (liveness.HeartbeatBoard)
        self._index = index
        self._psutil = None
        self._descendants = []

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def poll(self) -> int | None:
        """The exit code, or ``None`` while running."""
        return self.popen.poll()

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the exit; the exit code or ``None``."""
        try:
            return self.popen.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def terminate(self) -> None:
        """SIGTERM (a stopped process only gets it when continued)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()

    def remember_tree(self) -> None:
        """Note the current descendants (they are reparented once the worker exits)."""
        if self.popen.poll() is None:
            with contextlib.suppress(psutil.Error):
                known = {p.pid for p in self._descendants}
                found = psutil.Process(self.pid).children(recursive=True)
                self._descendants += [p for p in found if p.pid not in known]

    def kill_tree(self) -> None:
        """SIGKILL the worker, its process group (its own session) and every descendant found."""
        self.remember_tree()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        # The group outlives its leader while any member lives; its id is not reused meanwhile.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for process in self._descendants:  # psutil checks the pid still names the same process
            with contextlib.suppress(psutil.Error):
                process.kill()

    def heartbeat(self) -> int:
        """The worker's heartbeat counter."""
        return int(self._beats[self._index])

    def _process(self) -> psutil.Process:
        if self._psutil is None:
            self._psutil = psutil.Process(self.pid)
            self._psutil.cpu_percent(None)
        return self._psutil

    def cpu_time(self) -> float | None:
        """User + system CPU seconds of the worker process."""
        try:
            times = self._process().cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def resources(self) -> dict[str, Any]:
        """cpu % and rss of the process (``None`` where unknown)."""
        if self.popen.poll() is not None:
            return {"cpu_percent": None, "rss": None}
        try:
            process = self._process()
            with process.oneshot():
                return {"cpu_percent": process.cpu_percent(None), "rss": process.memory_info().rss}
        except psutil.Error:
            return {"cpu_percent": None, "rss": None}

    def rss(self) -> int | None:
        """Resident memory of the worker process in bytes (``None`` if unknown); for recycling."""
        if self.popen.poll() is not None:
            return None
        try:
            return int(self._process().memory_info().rss)
        except psutil.Error:
            return None

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters of the process's stderr file."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""


class SubprocessLauncher:
    """Starts ``python -P -m workers ...`` processes for one coordinator.

    Args:
        endpoint: the coordinator's zmq endpoint.
        run_dir: the pool's private directory (stderr files, heartbeat board).
        heartbeat_path: the file of the heartbeat board.
        beats: the coordinator's view of that board (indexable by worker id).
        log_level: the workers' logging level.
        accept_pickle: let the workers unpickle the env factories of an ``env_fns`` pool in
            ``init`` (``--accept-pickle``); never for a daemon's workers.
        echo_output: the workers share our stdout and get a copy of our stderr (``--echo-fd``),
            so what their envs print reaches our terminal, prefixed (:mod:`workers.output`);
            otherwise their stdout is dropped. Their stderr always goes to their files too.
        worker_fds: descriptors worker ``i`` inherits besides (the fast path's eventfds,
            :mod:`pool_env.fastpath`), by worker id.
    """

    endpoint: str
    run_dir: str
    heartbeat_path: str
    log_level: str
    accept_pickle: bool
    echo_output: bool
    _beats: Any

    def __init__(
        self,
        endpoint: str,
        run_dir: str,
        heartbeat_path: str,
        beats: Any,
        log_level: str,
        accept_pickle: bool = False,
        echo_output: bool = False,
        worker_fds: Callable[[int], tuple[int, ...]] | None = None,
    ) -> None:
        self.worker_fds = worker_fds
        self.endpoint = endpoint
        self.run_dir = run_dir
        self.heartbeat_path = heartbeat_path
        self._beats = beats
        self.log_level = log_level
        self.accept_pickle = accept_pickle
        self.echo_output = echo_output

    def launch(self, worker_id: int, gen: int) -> SubprocessWorker:
        """Start generation ``gen`` of worker ``worker_id``."""
        extra_fds = self.worker_fds(worker_id) if self.worker_fds is not None else ()
        stderr_path = os.path.join(self.run_dir, f"worker-{worker_id}.{gen}.stderr")
        command = [
            sys.executable, "-P", "-m", "workers",
            "--endpoint", self.endpoint,
            "--worker-id", str(worker_id),
            "--gen", str(gen),
            "--parent-pid", str(os.getpid()),
            "--socket-dir", self.run_dir,
            "--heartbeat", self.heartbeat_path,
            "--log-level", self.log_level,
            *(["--accept-pickle"] if self.accept_pickle else []),
        ]  # fmt: skip
        environment = dict(os.environ)
        environment[SYS_PATH_VARIABLE] = os.pathsep.join(trainer_sys_path())
        echo_fd = _dup_stderr() if self.echo_output else None
        if echo_fd is not None:
            command += ["--echo-fd", str(echo_fd)]
        try:
            with open(stderr_path, "wb") as stderr:
                popen = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=None if echo_fd is not None else subprocess.DEVNULL,
                    stderr=stderr,
                    close_fds=True,
                    pass_fds=(() if echo_fd is None else (echo_fd,)) + extra_fds,
                    start_new_session=True,
                    env=environment,
                )
        finally:
            if echo_fd is not None:
                os.close(echo_fd)
        return SubprocessWorker(popen, stderr_path, self._beats, worker_id)


def _dup_stderr() -> int | None:
    """A duplicate of our stderr descriptor for a worker to write to, or None if there is none."""
    try:
        return os.dup(2)
    except OSError:
        return None


def trainer_sys_path() -> list[str]:
    """This process's ``sys.path`` as absolute directories (``""`` is the working directory)."""
    return [os.path.abspath(entry or os.curdir) for entry in sys.path if isinstance(entry, str)]
