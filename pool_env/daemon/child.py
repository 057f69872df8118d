"""``pool-env serve`` as a child process: start it, wait for its ``--ready-json`` line, stop it.

The one place that starts a daemon process for a program (the test suite, ``pool-env bench``,
``pool-env soak``). It reads the machine line ``{"event": "ready", "endpoint": ..., "pid": ...}``
that ``serve --ready-json`` prints once it serves, never the banner meant for people. Stopping
is circus's: a signal, a bounded wait, then SIGKILL and reap.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from pool_env.errors import PoolEnvError

__all__ = ["ServeProcess", "serve_command"]


def serve_command(args: Sequence[str], log_level: str | None = None) -> list[str]:
    """The argv of ``pool-env [--log-level L] serve --ready-json ARGS`` run by this interpreter."""
    level = ["--log-level", log_level] if log_level else []
    return [sys.executable, "-m", "pool_env.cli", *level, "serve", "--ready-json", *args]


class ServeProcess:
    """A ``pool-env serve`` child process; a context manager that stops it on exit.

    Args:
        args: the ``serve`` flags (``--spec``, ``--envs``, ...; ``--ready-json`` is added).
        log_level: the daemon's ``--log-level`` (``None``: the default, WARNING).
        stderr: where the daemon's stderr goes (default: this process's stderr).
        env: extra environment variables for the child.

    Attributes:
        endpoint: where it serves (``ipc://...`` or ``tcp://...``), known once started.
        process: the child (``None`` before :meth:`start`).
    """

    endpoint: str
    process: subprocess.Popen[str] | None
    _command: list[str]
    _stderr: IO[Any] | int | None
    _env: dict[str, str] | None

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_level: str | None = None,
        stderr: IO[Any] | int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._command = serve_command(args, log_level)
        self._stderr = stderr
        self._env = env
        self.endpoint = ""
        self.process = None

    @property
    def command(self) -> list[str]:
        """The child's argv."""
        return list(self._command)

    @property
    def pid(self) -> int:
        """The daemon's pid."""
        assert self.process is not None, "start() first"
        return self.process.pid

    def start(self, timeout: float = 60.0) -> ServeProcess:
        """Start the daemon and wait (at most ``timeout`` seconds) until it serves.

        Raises:
            PoolEnvError: it exited or printed no ready line in time (the child is stopped).
        """
        self.process = subprocess.Popen(
            self._command, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            env=None if self._env is None else {**os.environ, **self._env},
        )  # fmt: skip
        try:
            ready = self._read_ready(timeout)
        except BaseException:
            self.stop(timeout=5.0)
            raise
        self.endpoint = str(ready["endpoint"])
        return self

    def _read_ready(self, timeout: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.process.stdout], [], [], left)
            if not readable:
                break
            line = self.process.stdout.readline()
            if not line:  # the daemon exited before serving; its stderr said why
                code = self.process.wait(5.0)
                raise PoolEnvError(f"pool-env serve exited with code {code} before serving")
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a line for people (an env that prints at import, say)
            if isinstance(message, dict) and message.get("event") == "ready":
                return message
        raise PoolEnvError(f"pool-env serve printed no ready line within {timeout} s")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``signum``, wait up to ``timeout`` seconds, then SIGKILL; the exit code (-N: signal N)."""
        process = self.process
        assert process is not None, "start() first"
        if process.poll() is None:
            process.send_signal(signum)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return code

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.stop()
