"""The heartbeat thread of one daemon session: keeps its lease alive and notices a goodbye.

It runs in a thread of its own with a socket of its own (zmq sockets are not thread-safe), so a
trainer busy in its own code, or in a long step, keeps its lease; its replies double as the
session's liveness signal (``last_heard``).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from typing import Protocol

import zmq

from pool_env import errors, protocol
from pool_env.daemon import wire
from pool_env.daemon.wire import ClientOp

__all__ = ["Heartbeat", "HeartbeatOwner"]

_POLL_SLICE = 0.05


class HeartbeatOwner(Protocol):
    """What the heartbeat thread uses of its session."""

    last_heard: float
    gone: str | None

    def new_socket(self) -> zmq.Socket[bytes]:
        """A connected socket configured like the session's own."""


class Heartbeat(threading.Thread):
    """Sends ``heartbeat`` for one lease from its own socket; records when the daemon last answered
    and whether it said goodbye."""

    stop_event: threading.Event
    _session: HeartbeatOwner
    _lease_id: str
    _interval: float

    def __init__(self, session: HeartbeatOwner, lease_id: str, interval: float) -> None:
        super().__init__(name=f"pool_env-heartbeat-{lease_id[:8]}", daemon=True)
        self._session = session
        self._lease_id = lease_id
        self._interval = interval
        self.stop_event = threading.Event()

    def run(self) -> None:
        session = self._session
        sock = session.new_socket()
        ids = itertools.count(1)
        try:
            while not self.stop_event.is_set():
                header = {"v": wire.PROTOCOL_VERSION, "id": next(ids), "op": ClientOp.HEARTBEAT.value,
                          "lease": self._lease_id}  # fmt: skip
                with contextlib.suppress(zmq.Again):
                    sock.send(protocol.encode(header), zmq.NOBLOCK)
                deadline = time.monotonic() + self._interval
                while (left := deadline - time.monotonic()) > 0 and not self.stop_event.is_set():
                    if sock.poll(int(min(left, _POLL_SLICE) * 1000)):
                        frames = sock.recv_multipart()
                        session.last_heard = time.monotonic()
                        with contextlib.suppress(errors.ProtocolError):
                            reply = protocol.decode(frames[0], wire.MAX_HEADER_BYTES)
                            if reply.get("op") == wire.GOODBYE:
                                session.gone = str(reply.get("reason", "the daemon is stopping"))
        finally:
            sock.close(linger=0)
