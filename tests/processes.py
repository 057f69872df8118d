"""Child processes in tests: is one still running, and reaping one whatever state it is in."""

from __future__ import annotations

import subprocess
from typing import Any

import psutil

__all__ = ["is_running", "reap"]


def is_running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def reap(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGKILL ``proc`` if it still runs, wait for it (up to ``timeout`` s) and close its pipes.

    Raises:
        subprocess.TimeoutExpired: It did not exit within ``timeout`` after SIGKILL.
    """
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
