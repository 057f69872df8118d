"""A real ``pool-env serve`` subprocess for the daemon tests: start, wait ready, stop, kill, clean."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

import zmq

from pool_env import protocol
from pool_env.daemon.child import ServeProcess
from pool_env.daemon.wire import PROTOCOL_VERSION
from pool_env.shm import sweep_orphans

__all__ = ["DaemonProcess", "cli", "raw_header", "raw_request", "raw_socket"]

START_TIMEOUT = 30.0


def cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pool_env.cli ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "pool_env.cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class DaemonProcess:
    """``pool-env --log-level INFO serve --ready-json ...`` as a child (:class:`ServeProcess`), with
    its stderr kept for assertions and a ``kill -9`` that sweeps what the daemon left; a context manager."""

    serve: ServeProcess
    _stderr: IO[str] | None

    def __init__(
        self,
        spec: str = "gym:CartPole-v1",
        envs: int = 4,
        workers: int = 2,
        lease_timeout: float = 1.0,
        bind: str | None = None,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in __exit__
        args = [
            "--spec", spec, "--envs", str(envs), "--workers", str(workers), "--lease-timeout", str(lease_timeout),
            "--stop-timeout", "5", *(["--bind", bind] if bind else []), *extra,
        ]  # fmt: skip
        self.serve = ServeProcess(args, log_level="INFO", stderr=self._stderr, env=env)

    @property
    def proc(self) -> subprocess.Popen[str] | None:
        """The daemon process."""
        return self.serve.process

    @property
    def endpoint(self) -> str:
        """Where the daemon serves."""
        return self.serve.endpoint

    def start(self) -> DaemonProcess:
        """Start and wait for the ready line."""
        try:
            self.serve.start(START_TIMEOUT)
        except Exception as exc:
            log = self.log()
            self.__exit__(None, None, None)  # __exit__ is not called when __enter__ raises: clean up here
            raise AssertionError(f"daemon did not start: {exc}\n{log}") from exc
        return self

    @property
    def pid(self) -> int:
        """The daemon's pid."""
        return self.serve.pid

    @property
    def socket_path(self) -> str:
        """The ipc socket file ('' for tcp)."""
        return self.endpoint[len("ipc://") :] if self.endpoint.startswith("ipc://") else ""

    def log(self) -> str:
        """The daemon's stderr so far."""
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``signum`` and wait; the exit code.

        Raises:
            subprocess.TimeoutExpired: the daemon is still running after ``timeout`` seconds.
        """
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signum)
        code = proc.wait(timeout)
        self._close_pipes()
        return code

    def kill(self) -> None:
        """``kill -9`` the daemon, wait for its workers to notice, remove what it left behind."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        self._close_pipes()
        deadline = time.monotonic() + 10
        while sweep_orphans() == [] and time.monotonic() < deadline and _has_orphan_segment(self.pid):
            time.sleep(0.05)
        if self.socket_path:
            shutil.rmtree(os.path.dirname(self.socket_path), ignore_errors=True)

    def _close_pipes(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self._close_pipes()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _has_orphan_segment(pid: int) -> bool:
    return any(name.startswith(f"pool_env_{pid}_") for name in os.listdir("/dev/shm"))


_request_ids = iter(range(1, 10**9))


def raw_header(body: dict[str, object]) -> bytes:
    """A daemon request header (protocol version 1) with a fresh request id, for raw-socket tests."""
    return protocol.encode({"v": PROTOCOL_VERSION, "id": next(_request_ids), **body})


def raw_socket(context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    """A DEALER socket of ``context`` connected to a daemon's ``endpoint`` (linger 0), for raw-socket tests."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def raw_request(sock: zmq.Socket[bytes], body: dict[str, object]) -> dict[str, object]:
    """Send one request on a raw DEALER socket and return its (successful) reply."""
    sock.send(raw_header(body))
    assert sock.poll(5000), f"no reply to {body}"
    reply = protocol.decode(sock.recv_multipart()[0])
    assert reply["ok"] is True, reply
    return reply
