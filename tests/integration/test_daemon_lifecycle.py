"""A trainer's life around a real daemon: goodbye on SIGTERM, exit without close(), timeouts, where leases land."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import pool_env
from tests.conditions import wait_until
from tests.integration.daemon_process import DaemonProcess, cli

pytestmark = pytest.mark.timeout(90)

SCRIPT_TIMEOUT = 40.0


def status_of(endpoint: str) -> dict[str, object]:
    result = cli("status", "--json", endpoint)
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


@pytest.mark.parametrize("busy", [False, True], ids=["idle trainer", "trainer in a call"])
def test_a_daemon_stopped_by_sigterm_says_goodbye_and_the_next_call_raises_at_once(busy: bool) -> None:
    with DaemonProcess(envs=2, workers=1, lease_timeout=5.0) as daemon:
        env = pool_env.connect(daemon.endpoint, num_envs=2, timeout=60.0)
        try:
            env.reset(seed=0)
            env.step(np.zeros(2, dtype=np.int64))
            if busy:
                env.step_async(np.zeros(2, dtype=np.int64))
                env.step_wait()  # answered before the goodbye: the in-flight step finishes
            assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
            started = time.monotonic()
            with pytest.raises(pool_env.DaemonUnavailableError, match="is stopping"):
                env.step(np.zeros(2, dtype=np.int64))
            assert time.monotonic() - started < 30.0  # not the 60 s liveness timeout
            with pytest.raises(pool_env.DaemonUnavailableError):  # and every later call too
                env.reset(seed=1)
        finally:
            env.close()  # no release is attempted: the daemon is gone


def test_connect_to_a_missing_socket_fails_within_its_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(pool_env.DaemonUnavailableError, match="within 3"):
        pool_env.connect(f"ipc://{tmp_path}/nobody.sock", num_envs=1, timeout=3)
    assert time.monotonic() - started < 8.0  # the handshake waits min(timeout, 10 s), not 10 s


def test_status_of_a_tcp_daemon_without_keys_says_keys_are_needed() -> None:
    result = cli("status", "tcp://127.0.0.1:9")
    assert result.returncode == 2 and "needs CURVE keys" in result.stderr


TRAINER = """
import sys, numpy as np, pool_env
env = pool_env.connect(sys.argv[1], num_envs=2)
env.reset(seed=0)
env.step(np.zeros(2, dtype=np.int64))
print("stepping", flush=True)
{ending}
"""

ENDINGS = {
    "end of script": "print('end of script, no close()')",
    "uncaught exception": "raise RuntimeError('the training loop failed')",
    "ctrl-c": "while True:\n    env.step(np.zeros(2, dtype=np.int64))",
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_trainer_that_never_closes_its_env_exits_and_releases_its_lease(ending: str, tmp_path: Path) -> None:
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent(TRAINER).format(ending=ENDINGS[ending]))
    with DaemonProcess(envs=2, workers=1, lease_timeout=30.0) as daemon:
        trainer = subprocess.Popen(
            [sys.executable, str(script), daemon.endpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert trainer.stdout is not None
            assert trainer.stdout.readline().strip() == "stepping"
            if ending == "ctrl-c":
                trainer.send_signal(signal.SIGINT)  # one Ctrl-C
            code = trainer.wait(SCRIPT_TIMEOUT)
        finally:
            if trainer.poll() is None:
                trainer.kill()
                trainer.wait()
            stderr = trainer.stderr.read() if trainer.stderr else ""
            for pipe in (trainer.stdout, trainer.stderr):
                if pipe is not None:
                    pipe.close()
        expected = {"end of script": 0, "uncaught exception": 1, "ctrl-c": -signal.SIGINT}[ending]
        assert code == expected, stderr
        # the exit hook released the lease (with 30 s of lease timeout, expiry did not)
        wait_until(lambda: status_of(daemon.endpoint)["free_slots"] == 2, 5.0, "the lease is released")


def test_a_lease_smaller_than_a_worker_steps_on_every_worker() -> None:
    with (
        DaemonProcess(envs=8, workers=2, lease_timeout=5.0) as daemon,
        pool_env.connect(daemon.endpoint, num_envs=2) as env,
    ):
        env.reset(seed=0)
        for _ in range(3):
            env.step(np.zeros(2, dtype=np.int64))
        status = status_of(daemon.endpoint)
    leases, workers = status["leases"], status["workers"]
    assert isinstance(leases, list) and isinstance(workers, list)
    assert leases[0]["slots"] == [0, 4]  # one on each worker (slots 0-3 and 4-7)
    assert [w["steps"] > 0 for w in workers] == [True, True]  # both workers stepped the lease


def test_a_lease_of_a_whole_worker_steps_on_the_fast_path() -> None:
    with (
        DaemonProcess(envs=8, workers=2, lease_timeout=5.0) as daemon,
        pool_env.connect(daemon.endpoint, num_envs=4) as env,
    ):
        env.reset(seed=0)
        before = status_of(daemon.endpoint)["counters"]
        for _ in range(3):
            env.step(np.zeros(4, dtype=np.int64))
        status = status_of(daemon.endpoint)
    leases, counters = status["leases"], status["counters"]
    assert isinstance(leases, list) and isinstance(counters, dict) and isinstance(before, dict)
    assert leases[0]["slots"] == [0, 1, 2, 3]  # all of worker 0
    # each step was one command of every slot of worker 0: posted in its record, not sent over zmq
    assert counters.get("fast_path_calls", 0) - before.get("fast_path_calls", 0) == 3


def test_the_directory_a_kill_9_leaves_is_removed_when_the_next_daemon_starts(tmp_path: Path) -> None:
    runtime = {"XDG_RUNTIME_DIR": str(tmp_path)}  # where a default ipc directory goes
    with DaemonProcess(envs=1, workers=1, env=runtime) as killed:
        left = Path(killed.socket_path).parent
        assert left.parent == tmp_path and left.name.startswith(f"pool_env_daemon_{killed.pid}_")
        assert killed.proc is not None
        killed.proc.kill()  # kill -9: nothing of the daemon's own cleanup runs
        killed.proc.wait(10)
        assert left.is_dir(), "kill -9 leaves the directory (and its socket file)"
        with DaemonProcess(envs=1, workers=1, env=runtime) as live:
            with DaemonProcess(envs=1, workers=1, env=runtime) as next_one:
                assert not left.exists(), "the dead daemon's directory is swept"
                assert Path(live.socket_path).exists(), "a live daemon's directory is not"
                with pool_env.connect(live.endpoint, 1) as env:
                    env.reset(seed=0)
                assert Path(next_one.socket_path).parent.parent == tmp_path
            assert next_one.stop() == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == [], "every daemon removed its own directory"
