"""PoolVectorEnv through a daemon: ``pool-env serve`` in a subprocess, a trainer via ``pool_env.connect``.

Same host, so the trainer reads and writes its rows in the daemon's shared memory and only a
small msgpack header crosses the ipc socket per step. With ``other_trainers=k`` the daemon serves
``k`` more trainers of the same size, each a subprocess stepping as fast as it can while the
candidate is measured (:meth:`DaemonVectorEnv.focus`; idle otherwise, so it never loads the other
candidates' measurements) — issue 13's "two trainers sharing one daemon each get ≥ 0.45x".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import pool_env
from pool_env.daemon.child import ServeProcess

__all__ = ["DaemonVectorEnv"]

# A competing trainer: lease num_envs slots, step them while told to ("go" / "pause" lines on its
# stdin: the candidate's focus) until its stdin closes (the candidate closed).
_OTHER_TRAINER = """
import sys, threading
import numpy as np
import pool_env
endpoint, num_envs = sys.argv[1], int(sys.argv[2])
done, going = threading.Event(), threading.Event()
def listen():
    for line in sys.stdin:
        (going.set if line.strip() == "go" else going.clear)()
    done.set()
    going.set()
threading.Thread(target=listen, daemon=True).start()
with pool_env.connect(endpoint, num_envs=num_envs, timeout=60) as env:
    env.reset(seed=1)
    actions = np.zeros(num_envs, dtype=np.int64)
    print("ready", flush=True)
    while not done.is_set():
        if going.wait(0.5):
            env.step(actions)
"""


class DaemonVectorEnv:
    """A remote vector env that owns the daemon it talks to (closing it stops the daemon)."""

    def __init__(
        self, spec: str, num_envs: int, num_workers: int, start_timeout: float = 60.0, other_trainers: int = 0
    ) -> None:
        self._dir = tempfile.mkdtemp(prefix="pool_env_bench_")
        self._others: list[subprocess.Popen[str]] = []
        endpoint = f"ipc://{self._dir}/pool.sock"
        total = num_envs * (1 + other_trainers)
        args = ["--spec", spec, "--envs", str(total), "--workers", str(num_workers), "--bind", endpoint]
        self._daemon = ServeProcess(args, stderr=subprocess.DEVNULL)
        try:
            self._daemon.start(start_timeout)
            for _ in range(other_trainers):
                other = subprocess.Popen(
                    [sys.executable, "-c", _OTHER_TRAINER, endpoint, str(num_envs)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                self._others.append(other)
                assert other.stdout is not None
                if other.stdout.readline().strip() != "ready":
                    raise RuntimeError("a competing trainer did not start")
            self.env: Any = pool_env.connect(endpoint, num_envs=num_envs, timeout=start_timeout)
        except BaseException:
            self._stop()
            raise

    @property
    def daemon_pid(self) -> int:
        """Pid of the daemon process."""
        return self._daemon.pid

    def focus(self, active: bool) -> None:
        """Let the competing trainers step (``True``: this candidate is being measured) or pause them."""
        for other in self._others:
            assert other.stdin is not None
            other.stdin.write("go\n" if active else "pause\n")
            other.stdin.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def close(self) -> None:
        """Close the trainer side, then stop the daemon (SIGTERM: a clean, complete shutdown)."""
        with contextlib.suppress(Exception):
            self.env.close()
        self._stop()

    def _stop(self) -> None:
        for other in self._others:
            with contextlib.suppress(Exception):
                assert other.stdin is not None and other.stdout is not None
                other.stdin.close()
                other.wait(timeout=30)
                other.stdout.close()
            if other.poll() is None:
                other.kill()
                other.wait()
        self._others = []
        if self._daemon.process is not None:
            self._daemon.stop()
        if os.path.isdir(self._dir):
            shutil.rmtree(self._dir, ignore_errors=True)
