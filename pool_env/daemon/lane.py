"""The step lane: a same-host trainer's steps without zmq (two shared words and two eventfds).

Over ``ipc://`` a zmq message crosses four threads (the sender, its zmq I/O thread, the
receiver's I/O thread, the receiver), so a step's request and reply wake six threads, on a
machine whose cores the workers keep busy. A lease in the pool's shared memory already has its
actions and results there; only "step now" and "done" must cross. The lane carries exactly that,
as the workers' fast path does (:mod:`pool_env.fastpath`): the trainer writes its request id in a
shared word and rings the daemon's eventfd; the daemon, once the step is done and its reply has
nothing but the arrays already in shared memory, writes the id in the other word and rings the
trainer's eventfd. Anything else — infos, slot errors, observation parts without a fixed shape,
an error reply, any other op — goes over zmq as always, with the same request id, and the
trainer waits on its zmq socket and its eventfd in one poll.

Handshake: the daemon listens on an *abstract* Unix socket (a name, no file: nothing to remove,
gone with the process), named in the lease reply. The trainer connects and sends its lease id (a
random capability); the daemon checks the peer's uid (``SO_PEERCRED``: this user only, as the
0600 ipc socket admits) and the lease (in shared memory, no lane yet), then hands over three
descriptors with ``SCM_RIGHTS``: a memfd holding the words and the two eventfds. The connection
stays open for the lease's life: when it ends (the trainer closed or died), the lane closes and
its descriptors with it. A trainer that cannot connect (another network namespace, an older
daemon) steps over zmq.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import secrets
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from pool_env.fastpath.bell import Bell

__all__ = ["LANE_WORDS", "REPLY", "REQUEST", "LaneClient", "LaneEnd", "LaneServer"]

log = logging.getLogger(__name__)

REQUEST = 0
"""Word index: the id of the trainer's last step request on the lane (written after its actions)."""
REPLY = 1
"""Word index: the id of the last step the daemon answered on the lane (written after its results)."""
LANE_WORDS = 8
"""int64 words in a lane's memfd (two used; one cache line)."""
MAX_HANDSHAKES = 16
"""Connections that have not sent their lease id yet; the oldest is dropped beyond this."""
_HELLO_BYTES = 256


def _make_words(fd: int) -> tuple[mmap.mmap, memoryview]:
    mapping = mmap.mmap(fd, LANE_WORDS * 8)
    return mapping, memoryview(mapping).cast("q")


class LaneEnd:
    """The daemon's end of one lease's lane: its words, its two eventfds and the trainer's connection.

    Attributes:
        lease: the lease it serves (the daemon's :class:`~pool_env.daemon.leases.Lease`).
        conn: the trainer's connection (its end closes the lane).
    """

    lease: Any
    conn: socket.socket
    _memfd: int
    _request: Bell | None
    _reply: Bell | None
    _mapping: mmap.mmap
    _words: memoryview
    _taken: int

    def __init__(self, lease: Any, conn: socket.socket) -> None:
        self.lease = lease
        self.conn = conn
        self._memfd = os.memfd_create("pool_env_lane", os.MFD_CLOEXEC)
        self._request = self._reply = None
        try:
            os.ftruncate(self._memfd, LANE_WORDS * 8)
            self._mapping, self._words = _make_words(self._memfd)
            self._request = Bell()  # eventfds, as the pool's own bells (pool_env.fastpath.bell)
            self._reply = Bell()
        except BaseException:
            self.close()
            raise
        self._taken = 0

    @property
    def request_fd(self) -> int:
        """The eventfd the trainer rings with a request (to poll)."""
        assert self._request is not None
        return self._request.fileno()

    def descriptors(self) -> list[int]:
        """What the trainer receives: the memfd, the request and the reply eventfd."""
        assert self._request is not None and self._reply is not None
        return [self._memfd, self._request.fileno(), self._reply.fileno()]

    def take_request(self) -> int | None:
        """After the request eventfd was readable: the id of a request not taken yet, if any."""
        assert self._request is not None
        self._request.drain()
        request_id = self._words[REQUEST]
        if request_id <= self._taken:
            return None
        self._taken = request_id
        return int(request_id)

    def answer(self, request_id: int) -> None:
        """The step ``request_id`` is done and its results are in shared memory: tell the trainer."""
        self._words[REPLY] = request_id
        assert self._reply is not None
        self._reply.ring()

    def close(self) -> None:
        """Close the connection and every descriptor (idempotent)."""
        with contextlib.suppress(OSError):
            self.conn.close()
        if getattr(self, "_words", None) is not None:
            self._words.release()
            self._mapping.close()
            del self._words
        for bell in (self._request, self._reply):
            if bell is not None:
                bell.close()
        if self._memfd >= 0:
            os.close(self._memfd)
            self._memfd = -1


class LaneServer:
    """The daemon's lane listener and its lanes, their descriptors registered in the daemon's poller.

    Args:
        poller: the daemon loop's poller (the listener, handshakes and lanes are registered there).
        authorize: the lease of a lease id that may open a lane (in shared memory, no lane yet),
            else ``None``.

    Attributes:
        name: the abstract socket's name (without its leading NUL), sent in lease replies.
        lanes: by request eventfd, the open lanes.
    """

    name: str
    lanes: dict[int, LaneEnd]
    _listener: socket.socket
    _poller: zmq.Poller
    _authorize: Callable[[str], Any]
    _handshakes: dict[int, socket.socket]
    _conns: dict[int, LaneEnd]

    def __init__(self, poller: zmq.Poller, authorize: Callable[[str], Any]) -> None:
        self.name = f"pool_env_lane_{os.getpid()}_{secrets.token_hex(8)}"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self._listener.bind("\0" + self.name)
            self._listener.listen(MAX_HANDSHAKES)
            self._listener.setblocking(False)
        except BaseException:
            self._listener.close()
            raise
        self._poller = poller
        self._authorize = authorize
        self._handshakes = {}
        self._conns = {}
        self.lanes = {}
        poller.register(self._listener.fileno(), zmq.POLLIN)

    def owns(self, key: object) -> bool:
        """Whether ``key`` (of the poller's events) is one of the lanes' descriptors."""
        return key in self.lanes or key in self._conns or key in self._handshakes or key == self._listener.fileno()

    def requests(self, events: dict[Any, int]) -> Iterator[tuple[LaneEnd, int]]:
        """Handle the poller's ``events`` on lane descriptors; the step requests that came, by lane."""
        for fd in [fd for fd in events if isinstance(fd, int)]:
            lane = self.lanes.get(fd)
            if lane is not None:
                request_id = lane.take_request()
                if request_id is not None:
                    yield lane, request_id
            elif fd in self._conns:
                self.close_lane(self._conns[fd])  # the trainer closed (or died): nothing else comes here
            elif fd in self._handshakes:
                self._handshake(self._handshakes.pop(fd))
            elif fd == self._listener.fileno():
                self._accept()

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EMFILE and the like: the trainer steps over zmq
            log.warning("cannot accept a lane connection: %s", exc)
            return
        conn.setblocking(False)
        if len(self._handshakes) >= MAX_HANDSHAKES:
            oldest = next(iter(self._handshakes))
            self._drop(self._handshakes.pop(oldest))
        self._handshakes[conn.fileno()] = conn
        self._poller.register(conn.fileno(), zmq.POLLIN)

    def _drop(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError, zmq.ZMQError):
            self._poller.unregister(conn.fileno())
        conn.close()

    def _handshake(self, conn: socket.socket) -> None:
        """The trainer's lease id came (or its connection ended): open its lane, or close the connection."""
        with contextlib.suppress(KeyError, zmq.ZMQError):
            self._poller.unregister(conn.fileno())
        try:
            hello = conn.recv(_HELLO_BYTES)
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        except OSError:
            conn.close()
            return
        lease = self._authorize(hello.decode(errors="replace")) if uid == os.getuid() and hello else None
        if lease is None:
            log.info("refused a lane connection (another user, or not a lease that may open one)")
            conn.close()
            return
        try:
            lane = LaneEnd(lease, conn)
        except OSError as exc:
            log.warning("cannot open a lane for lease %s: %s", lease.short_id, exc)
            conn.close()
            return
        try:
            socket.send_fds(conn, [b"lane"], lane.descriptors())
        except OSError:
            lane.close()
            return
        lease.lane = lane
        self.lanes[lane.request_fd] = lane
        self._conns[conn.fileno()] = lane
        self._poller.register(lane.request_fd, zmq.POLLIN)
        self._poller.register(conn.fileno(), zmq.POLLIN)

    def close_lane(self, lane: LaneEnd) -> None:
        """Stop serving ``lane`` (its lease ended or its trainer closed) and close its descriptors."""
        if self.lanes.pop(lane.request_fd, None) is None:
            return
        self._conns.pop(lane.conn.fileno(), None)
        for fd in (lane.request_fd, lane.conn.fileno()):
            with contextlib.suppress(KeyError, zmq.ZMQError):
                self._poller.unregister(fd)
        if lane.lease.lane is lane:
            lane.lease.lane = None
        lane.close()

    def close(self) -> None:
        """Close every lane, pending handshake and the listener (idempotent)."""
        for lane in list(self.lanes.values()):
            self.close_lane(lane)
        for conn in self._handshakes.values():
            self._drop(conn)
        self._handshakes = {}
        if self._listener.fileno() >= 0:
            with contextlib.suppress(KeyError, zmq.ZMQError):
                self._poller.unregister(self._listener.fileno())
            self._listener.close()


class LaneClient:
    """The trainer's end of a lane (see the module docstring).

    Raises (from :meth:`connect`):
        OSError: no lane (cannot connect, refused, no descriptors): step over zmq.
    """

    _conn: socket.socket
    _request: Bell
    _reply: Bell
    _mapping: mmap.mmap
    _words: memoryview

    def __init__(self, conn: socket.socket, fds: list[int]) -> None:
        self._conn = conn
        memfd, request_fd, reply_fd = fds
        try:
            self._mapping, self._words = _make_words(memfd)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        os.close(memfd)  # the mapping keeps the memory
        self._request, self._reply = Bell(request_fd), Bell(reply_fd)  # the daemon's bells, ours to close

    @property
    def reply_fd(self) -> int:
        """The eventfd the daemon rings with a reply (to poll; -1 once closed)."""
        return self._reply.fileno()

    @classmethod
    def connect(cls, name: str, lease_id: str, timeout: float) -> LaneClient:
        """Open the lane of ``lease_id`` at the daemon's abstract socket ``name``."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            conn.settimeout(timeout)
            conn.connect("\0" + name)
            conn.sendall(lease_id.encode())
            _, fds, _, _ = socket.recv_fds(conn, 16, 3)
        except BaseException:
            conn.close()
            raise
        for fd in fds:  # received descriptors are inheritable: not into the trainer's subprocesses
            os.set_inheritable(fd, False)
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            conn.close()
            raise OSError("the daemon refused the lane")
        try:
            return cls(conn, list(fds))
        except BaseException:
            conn.close()
            raise

    def post(self, request_id: int) -> None:
        """Ask for step ``request_id`` (its actions are in shared memory already)."""
        self._words[REQUEST] = request_id
        self._request.ring()

    def answered(self, request_id: int) -> bool:
        """Whether the daemon answered step ``request_id`` on the lane."""
        return self._words[REPLY] == request_id

    def drain(self) -> None:
        """Consume the reply eventfd's rings (after it was readable)."""
        self._reply.drain()

    def close(self) -> None:
        """Close the connection (the daemon closes its end) and the descriptors (idempotent)."""
        if self.reply_fd < 0:
            return
        self._words.release()
        self._mapping.close()
        self._request.close()
        self._reply.close()
        self._conn.close()
