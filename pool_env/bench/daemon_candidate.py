"""PoolVectorEnv through a daemon: ``pool-env serve`` in a subprocess, a trainer via ``pool_env.connect``.

Same host, so the trainer reads and writes its rows in the daemon's shared memory and only a
small msgpack header crosses the ipc socket per step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from typing import Any

import pool_env
from pool_env.daemon.child import ServeProcess

__all__ = ["DaemonVectorEnv"]


class DaemonVectorEnv:
    """A remote vector env that owns the daemon it talks to (closing it stops the daemon)."""

    def __init__(self, spec: str, num_envs: int, num_workers: int, start_timeout: float = 60.0) -> None:
        self._dir = tempfile.mkdtemp(prefix="pool_env_bench_")
        endpoint = f"ipc://{self._dir}/pool.sock"
        args = ["--spec", spec, "--envs", str(num_envs), "--workers", str(num_workers), "--bind", endpoint]
        self._daemon = ServeProcess(args, stderr=subprocess.DEVNULL)
        try:
            self._daemon.start(start_timeout)
            self.env: Any = pool_env.connect(endpoint, num_envs=num_envs, timeout=start_timeout)
        except BaseException:
            self._stop()
            raise

    @property
    def daemon_pid(self) -> int:
        """Pid of the daemon process."""
        return self._daemon.pid

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def close(self) -> None:
        """Close the trainer side, then stop the daemon (SIGTERM: a clean, complete shutdown)."""
        with contextlib.suppress(Exception):
            self.env.close()
        self._stop()

    def _stop(self) -> None:
        if self._daemon.process is not None:
            self._daemon.stop()
        if os.path.isdir(self._dir):
            shutil.rmtree(self._dir, ignore_errors=True)
