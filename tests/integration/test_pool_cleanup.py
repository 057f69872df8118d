"""Nothing is left behind: processes, ``/dev/shm`` segments, socket directories.

Every test here also runs under the ``no_leaks`` checker. The trainer-level tests run a small
trainer script in its own process (and process group), kill or interrupt it, and check what
its workers and its segment do on their own.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil
import pytest

import pool_env
from pool_env import GymEnvSpec, PoolOptions, PoolVectorEnv
from pool_env.shm import SEGMENT_PREFIX, list_segments, sweep_orphans
from tests.conditions import wait_until
from tests.processes import is_running

pytestmark = pytest.mark.timeout(40)

CARTPOLE = GymEnvSpec("CartPole-v1")

TRAINER = r"""
import json, sys, time
import numpy as np
import pool_env

env = pool_env.PoolVectorEnv(pool_env.GymEnvSpec("CartPole-v1"), num_envs=4, num_workers=2)
env.reset(seed=0)
print(json.dumps({"workers": env.worker_pids}), flush=True)
if sys.argv[1] == "sleep":
    while True:
        time.sleep(1)  # until the test kills us
interrupts = 0
try:
    print(json.dumps({"stepping": True}), flush=True)
    while True:
        env.step(np.zeros(4, dtype=np.int64))
except KeyboardInterrupt:
    interrupts += 1
print(json.dumps({"interrupts": interrupts, "workers": env.worker_pids}), flush=True)
sys.stdin.readline()  # the test reads the workers' stderr meanwhile
env.close()
print(json.dumps({"closed": True}), flush=True)
"""


def segments_of(owner_pid: int) -> list[str]:
    return [name for name in list_segments() if name.startswith(f"{SEGMENT_PREFIX}{owner_pid}_")]


def socket_dir_of(worker_pid: int) -> str:
    """The coordinator's socket directory, from the worker's command line."""
    command = psutil.Process(worker_pid).cmdline()
    return command[command.index("--socket-dir") + 1]


class Trainer:
    """A trainer script in its own process group, read line by line (JSON) with deadlines."""

    def __init__(self, mode: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", TRAINER, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        assert self.process.stdout is not None
        self._stdout_fd = self.process.stdout.fileno()
        self._pending = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout_fd, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.process.pid

    def read(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON line the trainer prints."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            if not self._selector.select(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"the trainer printed nothing within {timeout} s")
            chunk = os.read(self._stdout_fd, 65536)  # unbuffered: a line is never hidden in a buffer
            if not chunk:
                _, stderr = self.process.communicate(timeout=10)
                raise AssertionError(f"the trainer exited with {self.process.returncode}:\n{stderr}")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]

    def finish(self, stdin: str = "") -> tuple[int, str]:
        """Let the trainer end (or reap it after a kill); its exit code and stderr."""
        _, stderr = self.process.communicate(stdin, timeout=20)
        return self.process.returncode, stderr

    def close(self) -> None:
        self._selector.close()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=10)


@contextlib.contextmanager
def trainer(mode: str) -> Iterator[Trainer]:
    run = Trainer(mode)
    try:
        yield run
    finally:
        run.close()


def test_close_is_idempotent_and_bounded_with_a_hung_and_a_dead_worker() -> None:
    options = PoolOptions(kill_grace=0.5)
    env = PoolVectorEnv(CARTPOLE, num_envs=4, num_workers=2, options=options)
    env.reset(seed=0)
    hung, dead = env.worker_pids
    os.kill(hung, signal.SIGSTOP)
    os.kill(dead, signal.SIGKILL)

    started = time.monotonic()
    env.close()
    elapsed = time.monotonic() - started
    env.close()
    env.close()

    # A bound on close (SIGTERM, grace, SIGKILL per worker), generous for a loaded machine: not a speed test.
    assert elapsed < 2 * 2 * options.kill_grace + 10, f"close() took {elapsed:.1f} s"
    assert not is_running(hung) and not is_running(dead)
    assert env.closed and segments_of(os.getpid()) == []


def test_close_with_a_step_pending_stops_everything() -> None:
    env = PoolVectorEnv(GymEnvSpec("tests.envs.faulty:make_slow_env", delay=0.3), num_envs=2, num_workers=2)
    env.reset(seed=0)
    pids = env.worker_pids
    env.step_async(np.zeros(2, dtype=np.int64))
    env.close()
    assert not any(is_running(pid) for pid in pids)
    with pytest.raises(pool_env.ClosedError):
        env.step_wait()


def test_context_manager_closes_the_pool() -> None:
    with PoolVectorEnv(CARTPOLE, num_envs=2, num_workers=2) as env:
        env.reset(seed=0)
        pids = env.worker_pids
        assert len(pids) == 2 and len(segments_of(os.getpid())) == 1
    assert env.closed
    assert not any(is_running(pid) for pid in pids)
    assert segments_of(os.getpid()) == []


def test_exception_in_the_trainer_inside_with_leaves_nothing() -> None:
    with pytest.raises(RuntimeError, match="trainer bug"), PoolVectorEnv(CARTPOLE, 4, num_workers=2) as env:
        env.reset(seed=0)
        pids = env.worker_pids
        env.step(np.zeros(4, dtype=np.int64))
        raise RuntimeError("trainer bug")
    assert not any(is_running(pid) for pid in pids)
    assert segments_of(os.getpid()) == []


def test_unclosed_pool_warns_and_still_cleans_up_when_collected() -> None:
    env = PoolVectorEnv(CARTPOLE, num_envs=2, num_workers=1)
    pids = env.worker_pids
    with pytest.warns(ResourceWarning, match="unclosed"):
        del env
        gc.collect()
    assert not any(is_running(pid) for pid in pids)
    assert segments_of(os.getpid()) == []


@pytest.mark.timeout(60)
def test_trainer_killed_with_sigkill_leaves_no_worker_segment_or_socket_dir() -> None:
    with trainer("sleep") as run:
        workers = run.read()["workers"]
        socket_dir = socket_dir_of(workers[0])
        assert len(segments_of(run.pid)) == 1 and os.path.isdir(socket_dir)

        os.kill(run.pid, signal.SIGKILL)
        run.finish()

        wait_until(lambda: not any(is_running(pid) for pid in workers), 10, "orphaned workers exit by themselves")
        wait_until(lambda: not segments_of(run.pid), 10, "the dead trainer's segment is unlinked")
        wait_until(lambda: not os.path.exists(socket_dir), 10, "the dead trainer's socket dir is removed")


@pytest.mark.timeout(60)
def test_sweep_orphans_removes_the_segment_of_a_trainer_killed_with_its_resource_tracker() -> None:
    with trainer("sleep") as run:
        workers = run.read()["workers"]
        (segment,) = segments_of(run.pid)
        trackers = [p for p in psutil.Process(run.pid).children() if "resource_tracker" in " ".join(p.cmdline())]
        assert len(trackers) == 1
        trackers[0].kill()  # nobody is left to unlink the segment at the trainer's death ...
        os.kill(run.pid, signal.SIGKILL)
        run.finish()

        live_owned = os.path.join("/dev/shm", f"{SEGMENT_PREFIX}{os.getpid()}_0123456789ab")
        with open(live_owned, "wb"):
            pass
        try:
            # (Sweep at once: a pool built meanwhile by another test session on this machine sweeps too.)
            assert segments_of(run.pid) == [segment]
            removed = sweep_orphans()  # ... but the next coordinator's sweep does
            assert segment in removed and segments_of(run.pid) == []
            assert os.path.exists(live_owned), "a segment whose owner is alive is kept"
        finally:
            os.unlink(live_owned)
        wait_until(lambda: not any(is_running(pid) for pid in workers), 10, "orphaned workers exit by themselves")


@pytest.mark.timeout(60)
def test_ctrl_c_interrupts_the_trainer_once_and_workers_stay_quiet() -> None:
    with trainer("step") as run:
        workers = run.read()["workers"]
        socket_dir = socket_dir_of(workers[0])
        assert run.read()["stepping"]

        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        report = run.read()

        assert report["interrupts"] == 1
        assert sorted(report["workers"]) == sorted(workers), "workers ignore SIGINT and keep running"
        stderr_files = [os.path.join(socket_dir, n) for n in os.listdir(socket_dir) if n.endswith(".stderr")]
        assert len(stderr_files) == len(workers)
        for path in stderr_files:
            with open(path) as f:
                text = f.read()
            assert "Traceback" not in text and "KeyboardInterrupt" not in text, f"{path}:\n{text}"

        code, stderr = run.finish("close\n")
        assert code == 0, stderr
        assert "Traceback" not in stderr, stderr
        assert not any(is_running(pid) for pid in workers)
        assert segments_of(run.pid) == [] and not os.path.exists(socket_dir)
