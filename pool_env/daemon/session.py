"""The client side of one daemon connection: handshake, lease, requests with deadlines, heartbeats.

* A DEALER socket (never REQ: a REQ socket is stuck forever after one lost reply) with
  ``LINGER 0``. Every request carries an id; replies to other ids (late replies of a request
  that timed out) are dropped. When the daemon shows no sign of life for ``timeout`` seconds
  the call raises :class:`~pool_env.errors.DaemonUnavailableError` and the socket is recreated.
* Heartbeats come from a background thread with its *own* socket (zmq sockets are not
  thread-safe), every ``lease_timeout / 4`` seconds. Its replies double as the liveness signal:
  a long step on a live daemon does not time out, a dead daemon is noticed within ``timeout``.
* On one host (``ipc://``) the client attaches to the daemon's shared-memory segment, reads its
  rows and writes its action rows there; across hosts arrays travel as raw frames. On one host a
  step goes on the lease's step lane when the daemon offers one (:mod:`pool_env.daemon.lane`):
  no zmq message unless its reply has more than arrays to tell.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import zmq

from pool_env import errors, protocol, shm
from pool_env.daemon import wire
from pool_env.daemon.heartbeat import Heartbeat
from pool_env.daemon.lane import LaneClient
from pool_env.daemon.security import CurveClientKeys
from pool_env.daemon.wire import ClientOp
from pool_env.errors import SlotFailure
from pool_env.spaces import leaves_of

__all__ = ["DaemonSession", "Outcome"]

log = logging.getLogger(__name__)

_POLL_SLICE = 0.05

_FLAG_LEAVES = (shm.Leaf((), "float64", ()), shm.Leaf((), "bool", ()), shm.Leaf((), "bool", ()))
"""A step reply's ``reward``, ``terminated`` and ``truncated`` frames (the daemon's shm dtypes)."""

HANDSHAKE_TIMEOUT = 10.0
"""Default seconds to wait for a daemon's first answer (at most the session's ``timeout``)."""

_OPEN_SESSIONS: weakref.WeakSet[DaemonSession] = weakref.WeakSet()
"""Sessions not closed yet: closed at interpreter exit (see :func:`_close_open_sessions`)."""


@atexit.register
def _close_open_sessions() -> None:
    """Close the sessions a script did not close (no ``close()``, no ``with``, an uncaught exception
    or Ctrl-C): without this, the interpreter hangs at exit in ``zmq.Context.term()``, which waits
    for the sockets still open in the session and its heartbeat thread. Releases leases quickly."""
    for session in list(_OPEN_SESSIONS):
        with contextlib.suppress(Exception):
            session.close(release_timeout=0.5)


@dataclass
class Reply:
    """A successful reply as it came off the wire: its header and raw array frames."""

    header: dict[str, Any]
    frames: list[zmq.Frame]


@dataclass
class Outcome:
    """A finished ``reset``/``step`` of one session, decoded; positions are the lease's rows.

    Attributes:
        infos: per position, the slot's info dict (only positions that have one).
        errors: per position, why the slot failed (typed: kind, fate, message; it is truncated).
        restarts: per failed position, the restarts of its worker so far.
        obs: one array per observation leaf, shape ``(num_envs, *leaf.shape)``; for a leaf without
            a fixed shape, the list of its ``num_envs`` values.
        reward, terminated, truncated: shape ``(num_envs,)`` (``None`` for a reset).
    """

    infos: dict[int, Any]
    errors: dict[int, SlotFailure]
    restarts: dict[int, int]
    obs: list[Any]
    reward: np.ndarray | None = None
    terminated: np.ndarray | None = None
    truncated: np.ndarray | None = None


class DaemonSession:
    """One trainer's connection to one daemon, holding one lease.

    Raises (constructor):
        DaemonUnavailableError: no answer to the handshake (not running, unreachable, refused).
        VersionMismatchError: the daemon speaks another protocol version.
        LeaseError: not enough free slots (the message names how many are free).
    """

    endpoint: str
    timeout: float
    curve: CurveClientKeys | None
    last_heard: float
    """``time.monotonic()`` when the daemon last answered (any reply, heartbeats included)."""
    gone: str | None
    """Why the daemon said goodbye (it is stopping), or ``None``; every later call raises."""
    buffers: shm.BatchBuffers | None
    lane: LaneClient | None
    """The lease's step lane (same host, when the daemon offers one), else ``None``."""
    lease_id: str | None
    slots: list[int]
    num_envs: int
    hello: dict[str, Any]
    observation_space: gym.Space[Any]
    """One slot's observation space, as the daemon declared it."""
    action_space: gym.Space[Any]
    """One slot's action space, as the daemon declared it."""
    _obs_leaves: list[shm.Leaf]
    _act_leaves: list[shm.Leaf]
    _sent_at: float
    _closed: bool
    _context: zmq.Context[zmq.Socket[bytes]]
    _ids: Iterator[int]
    _heartbeat: Heartbeat | None
    _socket: zmq.Socket[bytes]
    _rows: slice | list[int]
    _poller: zmq.Poller
    """Polls the socket and the lane's reply eventfd (one wait for both)."""

    def __init__(
        self,
        endpoint: str,
        num_envs: int,
        *,
        timeout: float = 30.0,
        handshake_timeout: float | None = None,
        curve: CurveClientKeys | None = None,
        shared_memory: bool | None = None,
        autoreset: str = "NextStep",
    ) -> None:
        self.endpoint = endpoint
        self.autoreset = autoreset
        self.timeout = timeout
        self.curve = curve
        self.last_heard = 0.0
        self.gone = None
        self._sent_at = time.monotonic()
        self._closed = False
        self.buffers = None
        self.lane = None
        self._context = zmq.Context()
        self._ids = itertools.count(1)
        self._heartbeat = None
        self._socket = self.new_socket()
        self._poller = self._new_poller()
        self.lease_id = None
        _OPEN_SESSIONS.add(self)
        try:
            self.hello = self._handshake(
                min(timeout, HANDSHAKE_TIMEOUT) if handshake_timeout is None else handshake_timeout
            )
            self.observation_space = wire.space_from_wire(self.hello["observation_space"])
            self.action_space = wire.space_from_wire(self.hello["action_space"])
            self._obs_leaves = leaves_of(self.observation_space)
            self._act_leaves = leaves_of(self.action_space)
            self._lease(num_envs, endpoint.startswith("ipc://") if shared_memory is None else shared_memory)
        except BaseException:
            self.close()
            raise

    def new_socket(self) -> zmq.Socket[bytes]:
        """A connected DEALER socket configured like every socket of this session."""
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(self.endpoint)
        return sock

    def _handshake(self, handshake_timeout: float) -> dict[str, Any]:
        request_id = self.send(ClientOp.HELLO, {"client": "pool_env.connect"})
        try:
            reply = self.wait(request_id, None, liveness=handshake_timeout, handshake=True)
        except errors.DaemonUnavailableError as exc:
            raise errors.DaemonUnavailableError(
                f"no answer from the daemon at {self.endpoint} within {handshake_timeout} s: it is not "
                "running, unreachable, or refused this client (with CURVE: is this client's public key on "
                "the daemon's --allow-client-key list, and is the server key right?)"
            ) from exc
        version = reply.header.get("version")
        if version != wire.PROTOCOL_VERSION:
            raise errors.VersionMismatchError(wire.PROTOCOL_VERSION, int(version or -1), self.endpoint)
        return reply.header

    def _lease(self, num_envs: int, want_shm: bool) -> None:
        body: dict[str, Any] = {"num_envs": num_envs, "shm": want_shm}
        if self.autoreset != "NextStep":  # the default stays implicit (older daemons know no other)
            body["autoreset"] = self.autoreset
        reply = self.request(ClientOp.LEASE, body)
        self.lease_id = str(reply.header["lease"])
        self.slots = [int(s) for s in reply.header["slots"]]
        self.num_envs = len(self.slots)
        first = self.slots[0]  # its rows in the daemon's arrays: a slice (views) when they follow each other
        contiguous = self.slots == list(range(first, first + self.num_envs))
        self._rows = slice(first, first + self.num_envs) if contiguous else self.slots
        layout = reply.header.get("shm")
        if layout:
            try:
                self.buffers = shm.attach(layout["name"], shm.BatchLayout.from_wire(layout["layout"]))
            except (OSError, KeyError, TypeError, ValueError) as exc:  # another host after all: use frames
                log.info("cannot attach the daemon's shared memory (%s); using frames", exc)
                self.request(ClientOp.RELEASE, {"lease": self.lease_id})
                self._lease(num_envs, want_shm=False)
                return
            if reply.header.get("lane"):
                self._open_lane(str(reply.header["lane"]))
        interval = max(0.05, float(reply.header.get("heartbeat", 10.0)) / 4)
        self._heartbeat = Heartbeat(self, self.lease_id, interval)
        self._heartbeat.start()

    def _open_lane(self, name: str) -> None:
        try:
            self.lane = LaneClient.connect(name, str(self.lease_id), min(self.timeout, HANDSHAKE_TIMEOUT))
        except OSError as exc:  # another network namespace, refused, ...: steps go over zmq
            log.info("no step lane to the daemon (%s); steps go over zmq", exc)
            return
        self._poller = self._new_poller()

    def _new_poller(self) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        if self.lane is not None:
            poller.register(self.lane.reply_fd, zmq.POLLIN)
        return poller

    # -- requests ---------------------------------------------------------------------------

    def send(self, op: ClientOp, body: dict[str, Any], arrays: list[np.ndarray] | None = None) -> int:
        """Send one request; its id.

        Raises:
            DaemonUnavailableError: the daemon said goodbye (it stopped).
        """
        self._check_not_gone()
        request_id = next(self._ids)
        header = protocol.encode({"v": wire.PROTOCOL_VERSION, "id": request_id, "op": op.value, **body})
        frames: list[Any] = [header, *(np.ascontiguousarray(a) for a in arrays or [])]
        big = any(getattr(f, "nbytes", 0) >= wire.ZERO_COPY_BYTES for f in frames)
        self._socket.send_multipart(frames, copy=not big)
        self._sent_at = time.monotonic()
        return request_id

    def wait(
        self, request_id: int, deadline: float | None, liveness: float | None = None, handshake: bool = False
    ) -> Reply:
        """Wait for the reply to ``request_id``.

        Args:
            deadline: the caller's own deadline (``time.monotonic()``), or ``None``.
            liveness: seconds without any sign of life from the daemon before giving up.

        Raises:
            StepTimeoutError: ``deadline`` passed; the request stays outstanding (wait again).
            DaemonUnavailableError: the daemon showed no sign of life for ``liveness`` seconds.
            PoolEnvError (subclasses): the daemon answered with an error.
        """
        liveness = self.timeout if liveness is None else liveness
        lane = self.lane
        while True:
            self._check_not_gone()
            now = time.monotonic()
            if lane is not None and lane.answered(request_id):  # a step answered on the lane
                self.last_heard = now
                return Reply({"v": wire.PROTOCOL_VERSION, "id": request_id, "ok": True}, [])
            heard = self._sent_at if handshake else max(self._sent_at, self.last_heard)
            if now - heard > liveness:
                self._reset_socket()
                raise errors.DaemonUnavailableError(
                    f"the daemon at {self.endpoint} did not answer for {liveness} s (it is gone or unreachable)"
                )
            if deadline is not None and now >= deadline:
                raise errors.StepTimeoutError("the daemon did not answer before the deadline; the call stays pending")
            limit = min(_POLL_SLICE, liveness - (now - heard), (deadline - now) if deadline is not None else 1.0)
            events = dict(self._poller.poll(max(1, int(limit * 1000))))
            if lane is not None and lane.reply_fd in events:
                lane.drain()  # the word is checked at the top
            if self._socket not in events:
                continue
            frames = self._socket.recv_multipart(copy=False)
            self.last_heard = time.monotonic()
            # Replies carry infos (megabytes with big arrays); the daemon is trusted by its client.
            header = protocol.decode(frames[0].bytes, protocol.MAX_MESSAGE_BYTES)
            if header.get("op") == wire.GOODBYE:
                self.gone = str(header.get("reason", "the daemon is stopping"))
                continue  # raised at the top of the loop
            if header.get("id") != request_id:
                continue  # a late reply to a request that timed out
            if header.get("ok") is not True:
                wire.raise_reply_error(header, self.endpoint)
            return Reply(header, list(frames[1:]))

    def request(self, op: ClientOp, body: dict[str, Any], arrays: list[np.ndarray] | None = None) -> Reply:
        """``send`` then ``wait`` (no caller deadline)."""
        return self.wait(self.send(op, body, arrays), None)

    # -- what the remote vector env calls: arrays and documents in, arrays and documents out --

    def send_reset(self, positions: list[int], seeds: list[int | None], options: dict[str, Any] | None) -> int:
        """Ask for a reset of the lease's ``positions`` with their seeds; the request id."""
        body = {"lease": self.lease_id, "positions": positions, "seeds": seeds, "options": options}
        return self.send(ClientOp.RESET, body)

    def send_step(self, actions: list[Any]) -> int:
        """Send one step of validated ``actions`` (one array per action leaf, this lease's rows
        only): written to shared memory on one host, as frames otherwise; the request id. A leaf
        without a fixed shape is a list of plain values (:func:`space_wire.to_plain`): in the header."""
        body: dict[str, Any] = {"lease": self.lease_id}
        leaves = self._act_leaves
        sent = {i: value for i, (leaf, value) in enumerate(zip(leaves, actions, strict=True)) if leaf.by_message}
        if sent:
            body["actions"] = sent
        arrays = [value for leaf, value in zip(self._act_leaves, actions, strict=True) if not leaf.by_message]
        if self.buffers is None:
            return self.send(ClientOp.STEP, body, arrays)
        targets = [array for leaf, array in zip(self._act_leaves, self.buffers.act, strict=True) if not leaf.by_message]
        for target, value in zip(targets, arrays, strict=True):
            target[self._rows] = value
        if self.lane is None or sent:
            return self.send(ClientOp.STEP, body)
        self._check_not_gone()
        request_id = next(self._ids)
        self.lane.post(request_id)
        self._sent_at = time.monotonic()
        return request_id

    def send_call(self, name: str, args: list[Any], kwargs: dict[str, Any], positions: list[int] | None = None) -> int:
        """Ask every slot of the lease (or those at ``positions``) to call (or get) ``name``; the request id."""
        body = {"lease": self.lease_id, "name": name, "args": args, "kwargs": kwargs}
        return self.send(ClientOp.CALL, body if positions is None else {**body, "positions": positions})

    def send_set_attr(self, name: str, values: list[Any], positions: list[int] | None = None) -> int:
        """Ask the lease's slots (or those at ``positions``) to set ``name``, the ``i``-th to
        ``values[i]``; the request id."""
        body = {"lease": self.lease_id, "name": name, "values": values}
        return self.send(ClientOp.CALL, body if positions is None else {**body, "positions": positions})

    def call_outcome(self, request_id: int, deadline: float | None) -> tuple[dict[int, Any], dict[int, SlotFailure]]:
        """Wait for the call ``request_id``: results and failures by position.

        Raises:
            StepTimeoutError: ``deadline`` passed; the request stays outstanding.
            DaemonUnavailableError: the daemon is gone or said goodbye.
            AttributeError, ...: what an env raised (builtin types kept), else our errors.
        """
        header = self.wait(request_id, deadline).header
        values = {int(p): value for p, value in dict(header.get("values") or {}).items()}
        failures = {int(p): SlotFailure.from_wire(f) for p, f in dict(header.get("errors") or {}).items()}
        return values, failures

    def outcome(self, request_id: int, deadline: float | None, step: bool) -> Outcome:
        """Wait for the reset/step ``request_id`` and decode it.

        Raises:
            StepTimeoutError: ``deadline`` passed; the request stays outstanding.
            DaemonUnavailableError: the daemon is gone or said goodbye.
            ProtocolError: a reply with the wrong number or size of array frames.
        """
        reply = self.wait(request_id, deadline)
        header = reply.header
        outcome = Outcome(
            infos={int(p): info for p, info in dict(header.get("infos") or {}).items()},
            errors={int(p): SlotFailure.from_wire(f) for p, f in dict(header.get("errors") or {}).items()},
            restarts={int(p): int(n) for p, n in dict(header.get("restarts") or {}).items()},
            obs=[],
        )
        fixed = [leaf for leaf in self._obs_leaves if not leaf.by_message]
        if self.buffers is not None:
            rows = self._rows  # views: RemoteVectorEnv copies them into its batch
            arrays = [source[rows] for leaf, source in zip(self._obs_leaves, self.buffers.obs, strict=True)
                      if not leaf.by_message]  # fmt: skip
            if step:
                buffers = self.buffers
                outcome.reward, outcome.terminated, outcome.truncated = (
                    buffers.reward[rows], buffers.terminated[rows], buffers.truncated[rows]
                )  # fmt: skip
        else:
            frames: list[Any] = [frame.buffer for frame in reply.frames]
            count = len(fixed)
            if len(frames) != count + (3 if step else 0):
                raise errors.ProtocolError(
                    f"daemon at {self.endpoint}: a {'step' if step else 'reset'} reply needs "
                    f"{count + (3 if step else 0)} array frames, got {len(frames)}"
                )
            arrays = wire.arrays_from_frames(frames[:count], fixed, self.num_envs, "observations")
            if step:
                flags = wire.arrays_from_frames(frames[count:], _FLAG_LEAVES, self.num_envs, "flags")
                outcome.reward, outcome.terminated, outcome.truncated = flags
        outcome.obs = self._with_message_obs(arrays, header.get("obs"))
        return outcome

    def _with_message_obs(self, arrays: list[np.ndarray], sent: Any) -> list[Any]:
        """The observation leaves in order: ``arrays`` for those of fixed shape, the reply's ``obs``
        lists (one value per position) for the others.

        Raises:
            ProtocolError: the reply lacks a leaf's values or has not one per position.
        """
        parts = iter(arrays)
        obs: list[Any] = []
        for i, leaf in enumerate(self._obs_leaves):
            if not leaf.by_message:
                obs.append(next(parts))
                continue
            values = sent.get(i) if isinstance(sent, dict) else None
            if not isinstance(values, list) or len(values) != self.num_envs:
                raise errors.ProtocolError(
                    f"daemon at {self.endpoint}: a reply needs {self.num_envs} values of observation leaf {i} in 'obs'"
                )
            obs.append(values)
        return obs

    def status(self) -> dict[str, Any]:
        """The daemon's status document (see :mod:`pool_env.daemon.status`)."""
        return wire.reply_document(self.request(ClientOp.STATUS, {}).header)

    def _reset_socket(self) -> None:
        self._socket.close(linger=0)
        self._socket = self.new_socket()
        self._poller = self._new_poller()

    def _check_not_gone(self) -> None:
        if self.gone is not None:
            raise errors.DaemonUnavailableError(f"{self.gone}: connect again once it serves (pool_env.connect)")

    def close(self, release_timeout: float = 1.0) -> None:
        """Release the lease (best effort, bounded), stop heartbeats, close sockets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _OPEN_SESSIONS.discard(self)
        if self._heartbeat is not None:
            self._heartbeat.stop_event.set()
            self._heartbeat.join(timeout=2)
            self._heartbeat = None
        if self.lease_id is not None and not self._socket.closed and self.gone is None:
            with contextlib.suppress(errors.PoolEnvError, zmq.ZMQError):
                self.wait(self.send(ClientOp.RELEASE, {"lease": self.lease_id}), None, liveness=release_timeout,
                          handshake=True)  # fmt: skip
            self.lease_id = None
        if self.lane is not None:
            self.lane.close()
            self.lane = None
        if self.buffers is not None:
            self.buffers.close()
            self.buffers = None
        if not self._socket.closed:
            self._socket.close(linger=0)
        self._context.term()
