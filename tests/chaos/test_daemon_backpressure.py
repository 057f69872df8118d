"""A client that floods the daemon and never reads its replies cannot make the daemon grow without
bound, nor stall another trainer.

The daemon's client socket queues at most ``MAX_QUEUED_MESSAGES`` (16) messages per client and
direction, and takes frames of at most ``max_frame_bytes()`` (1 MiB + the actions of every slot):
a flooding client is throttled by its own transport once its inbound queue is full (zmq stops
reading that connection), and replies it does not read are dropped once 16 are queued. So the
flood can hold at most 16 frames of ≈ 1 MiB inbound (16 MiB) and 16 small replies outbound in the
daemon; we allow twice that for the allocator: 32 MiB of RSS growth.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import numpy as np
import psutil
import pytest
import zmq

import pool_env
from pool_env import GymEnvSpec
from pool_env.daemon.server import MAX_QUEUED_MESSAGES
from tests.integration.daemon_process import DaemonProcess, raw_header, raw_request
from tests.integration.reference import assert_same, make_reference

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

RSS_LIMIT = 2 * MAX_QUEUED_MESSAGES * 2**20
BIG_FRAME = 900 * 1024  # below the daemon's frame limit, so it is queued, not refused
STEP_DEADLINE = 5.0
FLOOD_DEADLINE = 90.0
FLOOD_WHILE_SATURATED = 10_000
"""Messages tried after both bounds are seen (a count of attempts, not a rate)."""


class PeakRss:
    """Samples a process's RSS every few milliseconds in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


@pytest.fixture
def flooder() -> Iterator[zmq.Socket[bytes]]:
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        yield sock
    finally:
        sock.close(linger=0)
        context.term()


def test_a_client_that_floods_without_reading_neither_grows_the_daemon_nor_stalls_a_trainer(
    flooder: zmq.Socket[bytes],
) -> None:
    spec = GymEnvSpec("CartPole-v1")
    with DaemonProcess(envs=4, workers=2, lease_timeout=2.0) as daemon:
        trainer = pool_env.connect(daemon.endpoint, num_envs=2)
        reference = make_reference(spec, 2)
        rng = np.random.default_rng(0)
        steps = 0

        def trainer_step() -> None:
            nonlocal steps
            actions = rng.integers(0, 2, 2)
            trainer.step_async(actions)
            got = trainer.step_wait(timeout=STEP_DEADLINE)  # StepTimeoutError if the flood stalls us
            for a, b in zip(got, reference.step(actions), strict=True):
                assert_same(a, b, f"trainer step {steps}")
            steps += 1

        try:
            assert_same(trainer.reset(seed=1)[0], reference.reset(seed=1)[0], "reset")
            for _ in range(20):
                trainer_step()
            requests_before = trainer.stats()["counters"].get("requests", 0)
            flooder.connect(daemon.endpoint)
            lease = raw_request(flooder, {"op": "lease", "num_envs": 2})["lease"]
            raw_request(flooder, {"op": "reset", "lease": lease, "seeds": [5, 6]})
            action = np.zeros(2, dtype=np.int64).tobytes()
            big = b"\0" * BIG_FRAME
            sent = refused = 0
            counters: dict[str, int] = {}
            saturated_at: int | None = None
            # Flood until both bounds are seen at work, however fast this machine is: our own send
            # queue is full (the daemon stopped taking our messages: we are throttled) and the daemon
            # dropped replies we do not read (not queued without bound); then go on flooding the
            # saturated daemon for FLOOD_WHILE_SATURATED more messages. The trainer steps between.
            deadline = time.monotonic() + FLOOD_DEADLINE
            with PeakRss(daemon.pid) as rss:
                for i in itertools.count():  # many small requests, never a reply read
                    frames = [raw_header({"op": "step", "lease": lease}), action]
                    if i % 20 == 0:
                        frames.append(big)  # and some big ones
                    try:
                        flooder.send_multipart(frames, zmq.NOBLOCK)
                        sent += 1
                    except zmq.Again:
                        refused += 1  # our own queue is full: the daemon is not reading us faster
                    if i % 500 == 0:
                        trainer_step()
                        counters = trainer.stats()["counters"]
                        if saturated_at is None and refused and counters.get("replies_dropped", 0) > 0:
                            saturated_at = i  # both bounds at work: keep flooding the saturated daemon
                        if saturated_at is not None and i >= saturated_at + FLOOD_WHILE_SATURATED:
                            break
                        assert time.monotonic() < deadline, (
                            f"no backpressure within {FLOOD_DEADLINE} s: {sent} sent, {refused} refused, {counters}"
                        )
                for _ in range(50):
                    trainer_step()
            counters = trainer.stats()["counters"]  # the daemon still answers, and counted the flood
        finally:
            trainer.close()
            reference.close()
    assert refused > 0 and counters["replies_dropped"] > 0
    assert counters["requests"] - requests_before > MAX_QUEUED_MESSAGES, "the daemon read the flood"
    assert steps >= 20 + FLOOD_WHILE_SATURATED // 500 + 50, "the trainer stepped during the flood"
    assert rss.growth < RSS_LIMIT, f"daemon RSS grew {rss.growth / 2**20:.1f} MiB (limit {RSS_LIMIT / 2**20:.0f})"
    print(f"flood: {sent} sent, {refused} refused, daemon peak RSS growth {rss.growth / 2**20:.1f} MiB, {counters}")
