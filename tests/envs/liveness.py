"""Envs that freeze, stay busy, or start processes of their own, for the liveness and
process-tree tests. Import-string targets with plain keyword arguments, like :mod:`tests.envs.faulty`.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import time
from typing import Any

import gymnasium as gym

from tests.envs.faulty import _Fault, worker_id

__all__ = ["make_child_starting_env", "make_gil_burning_env", "make_gil_sleeping_env"]


def _take_flag(flag_path: str, target_worker: int) -> bool:
    """Whether this is worker ``target_worker`` and ``flag_path`` existed (consumed: once only)."""
    if worker_id() != target_worker or not os.path.exists(flag_path):
        return False
    os.unlink(flag_path)
    return True


class _GilSleepingEnv(_Fault):
    """Deadlock-like: a C call that holds the GIL and sleeps (no heartbeat, no CPU)."""

    def __init__(self, flag_path: str, target_worker: int) -> None:
        super().__init__()
        self._flag_path, self._target_worker = flag_path, target_worker

    def before_step(self) -> None:
        if _take_flag(self._flag_path, self._target_worker):
            ctypes.PyDLL(None).sleep(3600)  # PyDLL keeps the GIL during the call


def make_gil_sleeping_env(flag_path: str, target_worker: int) -> gym.Env[Any, Any]:
    """CartPole whose next step in worker ``target_worker`` after ``flag_path`` appears blocks in
    libc ``sleep`` holding the GIL."""
    return _GilSleepingEnv(flag_path, target_worker)


def _hold_gil(seconds: float) -> bool:
    """Burn CPU in one C call holding the GIL for about ``seconds``; whether no other thread ran.

    A ticking thread stamps the time each time it runs. It may run just before the call starts
    or just after it ends (the interpreter hands the GIL over between bytecodes, under load even
    twice), so only a stamp well inside the call, more than ``_EDGE_S`` from both ends, proves
    the GIL was released during it.
    """
    stamps: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.01)

    n = 1_000_000
    while True:  # calibrate one sum(range(n)) (a C loop that never releases the GIL)
        started = time.perf_counter()
        sum(range(n))
        elapsed = time.perf_counter() - started
        if elapsed > 0.05:
            break
        n *= 4
    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    time.sleep(0.05)
    began = time.perf_counter()
    sum(range(int(n * seconds / elapsed)))
    ended = time.perf_counter()
    stop.set()
    thread.join()
    return not any(began + _EDGE_S < stamp < ended - _EDGE_S for stamp in stamps)


_EDGE_S = 0.2


class _GilBurningEnv(_Fault):
    def __init__(self, flag_path: str, target_worker: int, seconds: float) -> None:
        super().__init__()
        self._flag_path, self._target_worker, self._seconds = flag_path, target_worker, seconds
        self.gil_held: bool | None = None

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = super().step(action)
        if self.gil_held is not None:
            info = {**info, "gil_held": self.gil_held}
            self.gil_held = None
        return obs, reward, terminated, truncated, info

    def before_step(self) -> None:
        if _take_flag(self._flag_path, self._target_worker):
            self.gil_held = _hold_gil(self._seconds)


def make_gil_burning_env(flag_path: str, target_worker: int, seconds: float) -> gym.Env[Any, Any]:
    """CartPole whose next step in worker ``target_worker`` after ``flag_path`` appears burns
    CPU for ``seconds`` in one C call holding the GIL; that step's info says ``gil_held``
    (whether the GIL really was never released)."""
    return _GilBurningEnv(flag_path, target_worker, seconds)


class _ChildStartingEnv(_Fault):
    """Starts two ``sleep 1000`` processes (one in the worker's process group, one in a session
    of its own) and never stops them: a leaky simulator. Their pids go to ``pid_dir``."""

    def __init__(self, pid_dir: str, hang_flag: str | None) -> None:
        super().__init__()
        self._hang_flag = hang_flag
        self._children = [
            subprocess.Popen(["sleep", "1000"], start_new_session=escape) for escape in (False, True)
        ]
        if worker_id() is not None:
            for child in self._children:
                with open(os.path.join(pid_dir, f"{os.getpid()}.{child.pid}"), "w"):
                    pass

    def before_step(self) -> None:
        if self._hang_flag is not None and _take_flag(self._hang_flag, 1):
            while True:
                time.sleep(3600)

    def close(self) -> None:
        for child in self._children:  # a test-process reference cleans up; in workers, leave them
            if worker_id() is None:
                child.kill()
                child.wait()
        super().close()


def make_child_starting_env(pid_dir: str, hang_flag: str | None = None) -> gym.Env[Any, Any]:
    """CartPole that leaks two ``sleep 1000`` children (see :class:`_ChildStartingEnv`); with
    ``hang_flag``, worker 1 hangs in its next step once the flag file appears."""
    return _ChildStartingEnv(pid_dir, hang_flag)
