"""A real daemon and trainer without CPU: stopped (SIGSTOP) past the lease timeout, or under load ≫ cores.

Leases and heartbeats must not expire while both ends are alive, and SIGTERM must still stop
the daemon in bounded time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import pool_env
from tests.conditions import wait_until
from tests.integration.daemon_process import DaemonProcess, cli

pytestmark = pytest.mark.timeout(120)

LEASE_TIMEOUT = 1.0


def counters(endpoint: str) -> dict[str, int]:
    result = cli("status", "--json", endpoint)
    assert result.returncode == 0, result.stderr
    document: dict[str, dict[str, int]] = json.loads(result.stdout)
    return document["counters"]


TRAINER = """
import sys, numpy as np, pool_env
env = pool_env.connect(sys.argv[1], num_envs=2)
env.reset(seed=0)
env.step(np.zeros(2, dtype=np.int64))
print("ready", flush=True)
sys.stdin.readline()  # the test stops us (SIGSTOP) and lets us go again before this line comes
for _ in range(5):
    env.step(np.zeros(2, dtype=np.int64))
env.close()
print("ok", flush=True)
"""


def test_a_trainer_stopped_past_its_lease_timeout_gets_its_lease_back(tmp_path: Path) -> None:
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent(TRAINER))
    with DaemonProcess(envs=2, workers=1, lease_timeout=LEASE_TIMEOUT) as daemon:
        trainer = subprocess.Popen(
            [sys.executable, str(script), daemon.endpoint],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert trainer.stdout is not None and trainer.stdin is not None
            assert trainer.stdout.readline().strip() == "ready"
            os.kill(trainer.pid, signal.SIGSTOP)  # no CPU at all for the trainer and its heartbeat thread
            wait_until(lambda: counters(daemon.endpoint).get("leases_expired", 0) == 1, 20.0, "the lease expires")
            os.kill(trainer.pid, signal.SIGCONT)
            trainer.stdin.write("go\n")
            trainer.stdin.flush()
            out, err = trainer.communicate(timeout=60)
        finally:
            if trainer.poll() is None:
                os.kill(trainer.pid, signal.SIGCONT)
                trainer.kill()
                trainer.communicate()
        assert trainer.returncode == 0 and out.strip() == "ok", err
        assert counters(daemon.endpoint).get("leases_revived", 0) == 1


def test_a_daemon_stopped_past_the_lease_timeout_keeps_the_leases() -> None:
    with DaemonProcess(envs=2, workers=1, lease_timeout=LEASE_TIMEOUT) as daemon:
        env = pool_env.connect(daemon.endpoint, num_envs=2, timeout=60.0)
        try:
            env.reset(seed=0)
            env.step(np.zeros(2, dtype=np.int64))
            session = env._sessions[0]
            os.kill(daemon.pid, signal.SIGSTOP)
            try:
                wait_until(
                    lambda: time.monotonic() - session.last_heard > 4 * LEASE_TIMEOUT,
                    30.0,
                    "the daemon is silent for four lease timeouts",
                )
            finally:
                os.kill(daemon.pid, signal.SIGCONT)
            for _ in range(3):
                env.step(np.zeros(2, dtype=np.int64))  # no LeaseError: the lease did not expire
            assert counters(daemon.endpoint).get("leases_expired", 0) == 0
        finally:
            env.close()


@contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """``count`` busy-looping processes: load ≫ cores."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def test_under_cpu_starvation_leases_hold_and_sigterm_still_stops_the_daemon() -> None:
    with DaemonProcess(envs=2, workers=1, lease_timeout=LEASE_TIMEOUT) as daemon:
        env = pool_env.connect(daemon.endpoint, num_envs=2, timeout=60.0)
        try:
            env.reset(seed=0)
            with cpu_hogs(4 * (os.cpu_count() or 2)):
                deadline = time.monotonic() + 4 * LEASE_TIMEOUT
                while time.monotonic() < deadline:  # stepping under load for four lease timeouts
                    env.step(np.zeros(2, dtype=np.int64))
                assert counters(daemon.endpoint).get("leases_expired", 0) == 0
                assert daemon.stop(signal.SIGTERM, timeout=60.0) == 0, daemon.log()
        finally:
            env.close()
