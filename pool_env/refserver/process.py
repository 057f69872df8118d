"""Run the reference server as a child process: start, stop, kill, restart, and steer its faults.

Only the standard library is used here, so a parent process needs neither FastAPI nor uvicorn.
The child runs ``sys.executable -m pool_env.refserver ... --exit-with-parent`` and so exits on its
own if this process dies.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from types import TracebackType
from typing import IO, Any

from pool_env.refserver.faults import FaultConfig
from pool_env.refserver.limits import ServerLimits

__all__ = ["RefServer", "RefServerError", "free_port"]

logger = logging.getLogger(__name__)

_START_ATTEMPTS = 3


class RefServerError(RuntimeError):
    """The reference server process could not be started or did not answer a control call."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class RefServer:
    """A reference server child process; a context manager that starts on enter and stops on exit.

    Example::

        with RefServer(p_http_500=0.1, fault_seed=1) as server:
            requests.get(server.url + "/api/v1/version", headers={"User-Token": "t"})

    Args:
        port: TCP port; None picks a free one (and retries on a bind race).
        host: Interface to bind.
        start_timeout: Seconds to wait for ``/api/v1/version`` to answer.
        limits: Start-up limits (body size, idle eviction, ``/control`` access); default
            :class:`ServerLimits`. With a ``control_token`` the control calls below send it.
        **faults: Initial :class:`FaultConfig` fields (``p_http_500=0.1``, ``latency_ms=5`` …).
    """

    host: str
    port: int
    faults: FaultConfig
    limits: ServerLimits
    start_timeout: float
    stop_timeout: float
    _proc: subprocess.Popen[bytes] | None
    _log: IO[bytes] | None

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        start_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        limits: ServerLimits | None = None,
        **faults: Any,
    ) -> None:
        self.host = host
        self._auto_port = port is None
        self.port = free_port(host) if port is None else port
        self.faults = FaultConfig().replace(**faults)
        self.limits = limits or ServerLimits()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc = None
        self._log = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8001``."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """Pid of the running server. Raises RefServerError if it is not running."""
        if self._proc is None:
            raise RefServerError("reference server is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the child process exists and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The child's command line (current fault settings as flags)."""
        cmd = [
            sys.executable,
            "-m",
            "pool_env.refserver",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--exit-with-parent",
        ]
        for name, value in self.faults.to_dict().items():
            if value is not None and value != getattr(FaultConfig, name):
                cmd += ["--" + name.replace("_", "-"), str(value)]
        for name in ("max_body_bytes", "num_envs_limit", "idle_timeout_s", "max_live_episodes"):
            value = getattr(self.limits, name)
            if value != getattr(ServerLimits, name):
                cmd += ["--" + name.replace("_", "-"), str(value)]
        if not self.limits.control:
            cmd.append("--no-control")
        return cmd

    def start(self) -> None:
        """Start the server and wait until ``/api/v1/version`` answers.

        Raises:
            RefServerError: If it is already running, exits early or does not answer in time.
        """
        if self.running:
            raise RefServerError(f"reference server already running (pid {self.pid})")
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except RefServerError:
                if not self._auto_port or attempt == _START_ATTEMPTS:
                    raise
                self.port = free_port(self.host)  # probably lost a bind race: try another port
                logger.warning("reference server failed to start; retrying on port %d", self.port)

    def _start_once(self) -> None:
        self._close_log()
        self._log = tempfile.TemporaryFile(prefix="pool_env_refserver_")  # noqa: SIM115 - kept open
        env = dict(os.environ)
        env.pop("POOL_ENV_CONTROL_TOKEN", None)
        if self.limits.control_token is not None:  # by environment, so it is not visible in ps
            env["POOL_ENV_CONTROL_TOKEN"] = self.limits.control_token
        self._proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                output = self.output()
                self._reap()
                raise RefServerError(f"reference server on port {self.port} exited with code {code}:\n{output}")
            if self._answers():
                logger.info("reference server up at %s (pid %d)", self.url, self._proc.pid)
                return
            if time.monotonic() > deadline:
                output = self.output()
                self.kill()
                raise RefServerError(
                    f"reference server did not answer at {self.url} within {self.start_timeout} s:\n{output}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        request = urllib.request.Request(self.url + "/api/v1/version", headers={"User-Token": "ping"})
        try:
            with urllib.request.urlopen(request, timeout=1.0) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """SIGTERM, wait up to ``stop_timeout``, then SIGKILL; reap. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("reference server pid %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        self._reap()

    def restart(self) -> None:
        """Stop and start again on the same port; every session and episode is lost."""
        self.stop()
        auto, self._auto_port = self._auto_port, False
        try:
            self.start()
        finally:
            self._auto_port = auto

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def output(self) -> str:
        """The last 4000 characters the server process wrote to stdout/stderr (kept until close)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-4000:].decode(errors="replace")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop the server and release its log file."""
        self.stop()
        self._close_log()

    # --- control API -----------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.limits.control_token is not None:
            headers["X-Control-Token"] = self.limits.control_token
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10.0) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except urllib.error.HTTPError as exc:
            raise RefServerError(f"{method} {path} answered {exc.code}: {exc.read().decode()}") from exc
        except OSError as exc:
            raise RefServerError(f"{method} {path} failed: {exc}") from exc

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """``POST /control/faults``: change fault fields, add ``fail_next`` triggers.

        The changes also apply to later restarts (``fail_next``/``clear_pending`` excepted).
        """
        result = self._control("POST", "/control/faults", changes)
        fields = {k: v for k, v in changes.items() if k not in ("fail_next", "clear_pending")}
        self.faults = self.faults.replace(**fields)
        return result

    def fail_next(self, kind: str, count: int = 1, path: str | None = None) -> dict[str, Any]:
        """Make the next ``count`` matching requests (or step entries for ``episode_error``) fail."""
        return self.set_faults(fail_next={"kind": kind, "count": count, "path": path})

    def get_faults(self) -> dict[str, Any]:
        """``GET /control/faults``."""
        return self._control("GET", "/control/faults")

    def stats(self) -> dict[str, Any]:
        """``GET /control/stats``."""
        return self._control("GET", "/control/stats")

    def episodes(self) -> dict[str, Any]:
        """``GET /control/episodes``."""
        return self._control("GET", "/control/episodes")

    def __enter__(self) -> RefServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            warnings.warn(f"RefServer pid {proc.pid} was not stopped; killing it", ResourceWarning, stacklevel=2)
            proc.kill()
            proc.wait()
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()

    def __repr__(self) -> str:
        state = f"pid {self._proc.pid}" if self.running and self._proc else "stopped"
        return f"RefServer({self.url}, {state})"
