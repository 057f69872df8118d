"""A real daemon survives what trainers do to it, and trainers survive what happens to the daemon."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import msgpack
import numpy as np
import psutil
import pytest
import zmq

import pool_env
from pool_env import GymEnvSpec, protocol
from pool_env.daemon.wire import PROTOCOL_VERSION as V
from pool_env.shm import list_segments
from tests.conditions import wait_until
from tests.integration.daemon_process import DaemonProcess, cli, raw_header, raw_request, raw_socket
from tests.integration.reference import assert_same, make_reference
from tests.processes import reap

pytestmark = pytest.mark.timeout(90)

CARTPOLE = GymEnvSpec("CartPole-v1")
TRAINER = """
import sys, numpy as np, pool_env
env = pool_env.connect(sys.argv[1], num_envs=int(sys.argv[2]))
env.reset(seed=0)
print("ready", flush=True)
while True:
    env.step(np.zeros(env.num_envs, dtype=np.int64))
"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with DaemonProcess(envs=6, workers=2, lease_timeout=1.0) as process:
        yield process


def free_slots(endpoint: str) -> int:
    from pool_env.daemon.status import fetch_status

    return int(fetch_status(endpoint)["free_slots"])


class Stepper:
    """A trainer in this process, checked against SyncVectorEnv on every step."""

    def __init__(self, endpoint: str, num_envs: int, seed: int) -> None:
        self.env = pool_env.connect(endpoint, num_envs=num_envs)
        self.ref = make_reference(CARTPOLE, num_envs)
        self.rng = np.random.default_rng(seed)
        for name, got, want in zip(("obs", "infos"), self.env.reset(seed=seed), self.ref.reset(seed=seed), strict=True):
            assert_same(got, want, f"reset {name}")
        self.steps = 0

    def step(self) -> None:
        actions = self.rng.integers(0, 2, self.env.num_envs)
        for got, want in zip(self.env.step(actions), self.ref.step(actions), strict=True):
            assert_same(got, want, f"step {self.steps}")
        self.steps += 1

    def close(self) -> None:
        self.env.close()
        self.ref.close()


def test_a_killed_trainer_loses_its_lease_and_the_other_trainer_is_untouched(daemon: DaemonProcess) -> None:
    other = Stepper(daemon.endpoint, 2, seed=5)
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER, daemon.endpoint, "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout is not None and trainer.stdout.readline().strip() == "ready"
        other.step()
        trainer.kill()  # kill -9: no release, no more heartbeats
        trainer.wait(5)
        with pytest.raises(pool_env.LeaseError, match="only 0 of 6 are free"):
            pool_env.connect(daemon.endpoint, num_envs=4)
        killed_at = time.monotonic()
        wait_until(lambda: free_slots(daemon.endpoint) == 4, 5.0, "the dead trainer's slots come back")
        assert time.monotonic() - killed_at < 4.0
        with pool_env.connect(daemon.endpoint, num_envs=4) as successor:
            successor.reset(seed=1)
            successor.step(np.ones(4, dtype=np.int64))
        for _ in range(50):
            other.step()
    finally:
        reap(trainer, 5)
        other.close()
    assert "expired" in daemon.log()


def test_a_client_disconnecting_mid_step_harms_nobody(daemon: DaemonProcess) -> None:
    other = Stepper(daemon.endpoint, 2, seed=8)
    context = zmq.Context()
    try:
        for _ in range(3):
            sock = raw_socket(context, daemon.endpoint)
            lease = raw_request(sock, {"op": "lease", "num_envs": 1})["lease"]
            raw_request(sock, {"op": "reset", "lease": lease, "seeds": [3]})
            sock.send_multipart([raw_header({"op": "step", "lease": lease}), np.zeros(1, dtype=np.int64).tobytes()])
            sock.close(linger=0)  # gone before the reply
            other.step()
        wait_until(lambda: free_slots(daemon.endpoint) == 4, 5.0, "the vanished clients' slots come back")
        for _ in range(20):
            other.step()
    finally:
        context.term()
        other.close()




def _fuzz_message(rng: random.Random, lease: str) -> list[bytes]:
    """One malformed (or hostile) request."""
    kind = rng.randrange(10)
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 64))]
    if kind == 1:
        valid = msgpack.packb({"v": V, "id": 1, "op": "lease", "num_envs": 1})
        return [valid[: rng.randrange(1, len(valid))]]
    if kind == 2:
        return [msgpack.packb({"v": V, "id": rng.randrange(100), "op": rng.choice(["nop", "", "STEP", "x" * 200])})]
    if kind == 3:
        value = rng.choice([None, True, -1, 2**63, 1.5, "x", [1], {"a": 1}, b"\x00"])
        name = rng.choice(["num_envs", "lease", "seeds", "options", "positions", "shm", "client"])
        op = rng.choice(["hello", "lease", "reset", "step", "heartbeat", "release"])
        return [msgpack.packb({"v": V, "id": 3, "op": op, "lease": lease, name: value})]
    if kind == 4:  # wrong action frames for a real lease
        frame = rng.choice([b"", b"\x00" * 3, b"\x00" * 16, np.array([7], dtype=np.int64).tobytes(), rng.randbytes(8)])
        return [msgpack.packb({"v": V, "id": 4, "op": "step", "lease": lease}), frame]
    if kind == 5:  # claims of huge sizes
        return [
            rng.choice(
                [b"\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\x7f\xff\xff\xff", b"\xc6\xff\xff\xff\xff"]
            )
        ]
    if kind == 6:
        return [msgpack.packb({"v": V, "id": 6, "op": "hello"}), *[b"x"] * rng.choice([300, 2])]
    if kind == 7:
        return [msgpack.packb({"v": rng.choice([0, V + 1, str(V), None]), "id": 7, "op": "hello"})]
    if kind == 8:
        return [msgpack.packb({"v": V, "id": 8, "op": "reset", "lease": lease, "seeds": [-1], "positions": [5]})]
    return [msgpack.packb({"v": V, "id": 9, "op": "lease", "num_envs": rng.choice([0, -3, 10**9, 7])})]


def test_a_fuzz_loop_of_malformed_messages_leaves_the_daemon_and_a_trainer_unharmed(daemon: DaemonProcess) -> None:
    rng = random.Random(1234)
    trainer = Stepper(daemon.endpoint, 2, seed=21)
    context = zmq.Context()
    sockets = [raw_socket(context, daemon.endpoint) for _ in range(4)]
    try:
        lease = str(raw_request(sockets[0], {"op": "lease", "num_envs": 1})["lease"])
        raw_request(sockets[0], {"op": "reset", "lease": lease, "seeds": [0]})
        sent = replies = 0
        for i in range(3200):
            sock = sockets[i % len(sockets)]
            sock.send_multipart(_fuzz_message(rng, lease))
            sent += 1
            if i % 25 == 0:
                trainer.step()
            for s in sockets:
                while s.poll(0):
                    header = protocol.decode(s.recv_multipart()[0])
                    assert "op" in header and isinstance(header.get("ok"), bool)
                    replies += 1
        deadline = time.monotonic() + 10
        while replies < sent and time.monotonic() < deadline:
            for s in sockets:
                if s.poll(20):
                    s.recv_multipart()
                    replies += 1
        assert replies == sent, f"{sent - replies} fuzz messages got no reply"
        for _ in range(30):
            trainer.step()
    finally:
        for sock in sockets:
            sock.close(linger=0)
        context.term()
        trainer.close()
    status = cli("status", daemon.endpoint, "--json")
    assert '"bad_requests"' in status.stdout


def test_thousands_of_connects_and_disconnects_leave_the_daemon_serving(daemon: DaemonProcess) -> None:
    with pool_env.connect(daemon.endpoint, num_envs=1) as keeper:
        keeper.reset(seed=0)
        for i in range(150):
            with pool_env.connect(daemon.endpoint, num_envs=1 + i % 3) as env:
                if i % 10 == 0:
                    env.reset(seed=i)
        for _ in range(10):  # 2,000 bare connections that say hello and vanish
            # A context per 200: zmq frees a closed socket's fd in the background, and this
            # process has only ~1,000 fds (and zmq ~1,000 sockets per context) to spare.
            context = zmq.Context()
            try:
                for _ in range(200):
                    sock = raw_socket(context, daemon.endpoint)
                    sock.send(raw_header({"op": "hello"}))
                    sock.close(linger=0)
            finally:
                context.term()
        keeper.step(np.zeros(1, dtype=np.int64))
    wait_until(lambda: free_slots(daemon.endpoint) == 6, 5.0, "every slot is free again")


def test_sigterm_finishes_the_step_in_flight_and_leaves_nothing() -> None:
    with DaemonProcess(envs=2, workers=2, lease_timeout=2.0) as process:
        workers = [p for p in psutil.Process(process.pid).children() if "workers" in p.cmdline()]
        assert len(workers) == 2
        segments = [name for name in list_segments() if name.startswith(f"pool_env_{process.pid}_")]
        assert segments
        env = pool_env.connect(process.endpoint, num_envs=2, timeout=5)
        env.reset(seed=0)
        env.step_async(np.zeros(2, dtype=np.int64))
        os.kill(process.pid, signal.SIGTERM)
        with contextlib.suppress(pool_env.PoolEnvError):
            env.step_wait(timeout=10)  # the step either finishes or is failed cleanly
        assert process.proc is not None
        assert process.proc.wait(15) == 0, process.log()
        env.close()
        assert "stopping" in process.log()
    assert not os.path.exists(process.socket_path)
    assert not os.path.exists(os.path.dirname(process.socket_path))
    assert not [name for name in list_segments() if name.startswith(f"pool_env_{process.pid}_")]
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]


def test_a_killed_daemon_makes_the_next_step_fail_clearly_within_the_timeout() -> None:
    with DaemonProcess(envs=2, workers=1, lease_timeout=2.0) as process:
        env = pool_env.connect(process.endpoint, num_envs=2, timeout=1.5, shared_memory=False)
        env.reset(seed=0)
        env.step(np.zeros(2, dtype=np.int64))
        process.kill()  # kill -9, then remove the segment and socket directory it left behind
        started = time.monotonic()
        with pytest.raises(pool_env.DaemonUnavailableError, match="did not answer"):
            env.step(np.zeros(2, dtype=np.int64))
        assert time.monotonic() - started < 4.0
        closing = time.monotonic()
        env.close()
        assert time.monotonic() - closing < 3.0


def test_a_worker_killed_under_one_trainer_reports_the_lost_episodes_of_the_other() -> None:
    """Two trainers whose slots share one worker: the one stepping when it dies sees its slots fail;
    the other sees its episodes' loss (truncated + error) on its next step, then fresh episodes."""
    with DaemonProcess(envs=4, workers=1, lease_timeout=5.0) as process:
        a = pool_env.connect(process.endpoint, num_envs=2)
        b = pool_env.connect(process.endpoint, num_envs=2)
        try:
            a.reset(seed=0)
            b.reset(seed=10)
            b.step(np.zeros(2, dtype=np.int64))
            worker_pid = a.stats()["workers"][0]["pid"]
            os.kill(worker_pid, signal.SIGKILL)
            _, _, _, truncated_a, infos_a = a.step(np.zeros(2, dtype=np.int64))
            assert truncated_a.all() and "exited with code -9" in infos_a["error"][0]
            _, rewards_b, _, truncated_b, infos_b = b.step(np.zeros(2, dtype=np.int64))
            assert truncated_b.all() and (rewards_b == 0).all(), "b's episodes died with the worker: reported"
            assert all("episode lost" in e for e in infos_b["error"])
            _, rewards_b, _, truncated_b, infos_b = b.step(np.zeros(2, dtype=np.int64))
            assert not truncated_b.any() and "error" not in infos_b and (rewards_b == 0).all(), "then reset"
        finally:
            a.close()
            b.close()
