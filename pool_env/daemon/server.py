"""PoolDaemon: one event loop serving many trainers from one self-healing pool.

The loop polls two sockets — the client ROUTER and the coordinator's worker ROUTER — and never
blocks on one client: a request is parsed, validated and either answered at once (``hello``,
``lease``, ``heartbeat``, ``status``, any error) or turned into a coordinator command whose
reply is sent when the command completes. Each lease has at most one command in flight.
Leases that miss heartbeats expire; their slots finish any in-flight work and return to the
free pool. The next lease must reset them (with its own seeds) before its first step — the
daemon refuses a step before that — so every trainer starts on fresh episodes of its own.

Stopping (:meth:`PoolDaemon.request_stop`, called from a signal handler, only sets a flag):
stop accepting requests, say ``goodbye`` to every trainer holding a lease (so its next call
raises :class:`~pool_env.errors.DaemonUnavailableError` at once instead of after its timeout),
let in-flight commands finish (or fail them after ``stop_timeout``), stop the workers, unlink
shared memory, remove the socket file and its directory.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import zmq
from gymnasium.vector.utils import batch_space

from pool_env import __version__, protocol
from pool_env.batch import validate_actions
from pool_env.codec import render_path
from pool_env.commands import split_slots
from pool_env.coordinator import Coordinator
from pool_env.daemon import security, space_wire, wire
from pool_env.daemon.config import DaemonConfig, default_runtime_dir
from pool_env.daemon.handlers import handle, reply_to_command
from pool_env.daemon.inflight import InFlight
from pool_env.daemon.lane import LaneEnd, LaneServer
from pool_env.daemon.leases import Lease, LeaseTable, describe_slots
from pool_env.daemon.peers import Peers
from pool_env.daemon.status import RateMeter, start_metrics_server, status_document
from pool_env.daemon.wire import ClientOp
from pool_env.errors import (
    DaemonUnavailableError,
    LeaseError,
    PoolEnvError,
    ProtocolError,
    SpecError,
    TransportError,
    UsageError,
)
from pool_env.protocol import Op
from pool_env.shm import BatchLayout, Leaf, build_structure, leaf_value
from pool_env.space_check import describe_pool
from pool_env.spaces import leaves_of, tree_of

__all__ = ["PoolDaemon"]

log = logging.getLogger(__name__)

POLL_MS = 50
MAX_MESSAGES_PER_TICK = 256
MAX_INBOUND_BYTES = 64 * 1024 * 1024
"""zmq drops (and disconnects) a peer that sends a bigger frame: the actions of every slot plus
:data:`MIN_INBOUND_BYTES` of headroom, never more than this."""
MIN_INBOUND_BYTES = 1024 * 1024
STALL_SECONDS = 1.0
"""A loop turn longer than this means the daemon itself did not run (starved of CPU, stopped):
the leases are credited that time, as their heartbeats could not be read either."""
GOODBYE_LINGER_MS = 500
"""How long closing the client socket may wait for goodbyes still queued to slow readers."""
MAX_QUEUED_MESSAGES = 16
"""Per client and direction, messages zmq may queue in the daemon (``RCVHWM``/``SNDHWM`` of the
client socket). A trainer has one command, a heartbeat and perhaps a status request in flight; a
client that floods us is throttled by its own transport once its inbound queue is full (zmq stops
reading its connection), and replies to a client that does not read are dropped (``replies_dropped``)
once its outbound queue is full. So one client costs the daemon at most ``MAX_QUEUED_MESSAGES``
frames of at most :meth:`PoolDaemon.max_frame_bytes` inbound and ``MAX_QUEUED_MESSAGES`` replies
outbound, whatever it does (zmq's default is 1000 messages each way)."""


class PoolDaemon:
    """A pool (coordinator + workers) served to trainers over ZeroMQ. Use as a context manager."""

    config: DaemonConfig
    counters: Counter[str]
    """Daemon event counters (requests, bad requests, leases granted/expired/released, ...)."""
    leases: LeaseTable
    endpoint: str
    """Where the daemon serves (known after :meth:`start` for a default private ipc socket)."""
    spaces: tuple[gym.Space[Any], gym.Space[Any]]
    """One slot's observation and action space (after :meth:`start`)."""
    obs_leaves: list[Leaf]
    act_leaves: list[Leaf]
    _hello: dict[str, Any]
    _clock: Callable[[], float]
    _stop_requested: bool
    _force_stop: bool
    _inflight: InFlight
    _rates: RateMeter
    _latest_status: dict[str, Any]
    _status_at: float
    _started_at: float
    _context: zmq.Context[zmq.Socket[bytes]] | None
    _socket: zmq.Socket[bytes] | None
    _coordinator: Coordinator | None
    _ipc: security.IpcSocket | None
    _auth: Any
    _stop_metrics: Callable[[], None] | None
    _peers: Peers
    """Trainers' sockets (zmq identities) and when each last sent a request: who gets a goodbye."""
    _linger_ms: int
    _last_tick: float
    _last_progress: float
    """``time.monotonic()`` of the pool's last :meth:`Coordinator.progress` (see :meth:`_tick`)."""
    _act_tree: Any
    """The action space's tree of leaves (:func:`~pool_env.spaces.tree_of`), for :meth:`check_actions`."""
    _lanes: LaneServer | None
    """Step lanes of same-host leases (:mod:`pool_env.daemon.lane`), while the loop runs."""

    def __init__(self, config: DaemonConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.counters = Counter()
        self.leases = LeaseTable(
            config.num_envs, config.lease_timeout, clock, groups=split_slots(config.num_envs, config.num_workers)
        )
        self._clock = clock
        self._stop_requested = False
        self._force_stop = False
        self._inflight = InFlight(self.leases)
        self._rates = RateMeter()
        self._latest_status = {}
        self._status_at = 0.0
        self._started_at = time.monotonic()
        self._context = None
        self._socket = None
        self._coordinator = None
        self._ipc = None
        self._auth = None
        self._stop_metrics = None
        self._peers = Peers(forget_after=2 * config.lease_timeout)
        self._linger_ms = 0
        self._last_tick = clock()
        self._last_progress = 0.0
        self._lanes = None
        self.endpoint = config.bind or ""

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Probe the env, start the workers, bind the client socket.

        Raises:
            TransportError: the endpoint is taken or cannot be bound.
            SpecError, EnvCreationError, WorkerStartError, HttpStatusError: the pool cannot start.
        """
        config = self.config
        try:
            if config.bind is None or config.bind.startswith("ipc://"):
                self._ipc = security.prepare_ipc(config.bind, default_runtime_dir())
                self.endpoint = self._ipc.endpoint
            spec = config.spec
            spec.check()
            obs_space, act_space, metadata, render_mode = spec.probe()
            self.spaces = (obs_space, act_space)
            for space, what in ((obs_space, "observation"), (act_space, "action")):
                try:  # what gymnasium cannot batch: its own TypeError text, as PoolVectorEnv raises it
                    batch_space(space, 1)
                except TypeError as exc:
                    raise SpecError(f"the env's {what} space: {exc}") from exc
            space_wire.check_crosses(obs_space, "observation")
            space_wire.check_crosses(act_space, "action", from_network=True)
            self._hello = {
                "server": f"pool_env {__version__}",
                "observation_space": wire.space_to_wire(obs_space),
                "action_space": wire.space_to_wire(act_space),
                "metadata": protocol.to_plain({k: v for k, v in metadata.items() if k != "autoreset_mode"}),
                "render_mode": render_mode,
                "env_spec": wire.env_spec_to_wire(spec),
                "num_envs": config.num_envs,
                "lease_timeout": config.lease_timeout,
            }
            self.obs_leaves, self.act_leaves = leaves_of(obs_space), leaves_of(act_space)
            self._act_tree = tree_of(act_space)
            layout = BatchLayout(
                config.num_envs, tuple(self.obs_leaves), tuple(self.act_leaves), tree_of(obs_space), tree_of(act_space)
            )
            self._coordinator = Coordinator(
                spec, layout, config.num_workers, config.options, config.log_level, describe_pool(obs_space, act_space)
            )
            self._coordinator.start()
            self._bind()
            if config.metrics_port is not None:
                self._refresh_status(force=True)
                self._stop_metrics = start_metrics_server(
                    config.metrics_port, config.metrics_host, lambda: self._latest_status
                )
        except BaseException:
            self.close()
            raise
        log.info("serving %s: %d slots on %d workers", self.endpoint, config.num_envs, config.num_workers)

    def _bind(self) -> None:
        self._context = zmq.Context()
        sock = self._socket = self._context.socket(zmq.ROUTER)  # close() closes it, even if a setsockopt fails
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame_bytes())
        sock.setsockopt(zmq.RCVHWM, MAX_QUEUED_MESSAGES)
        sock.setsockopt(zmq.SNDHWM, MAX_QUEUED_MESSAGES)
        if self.config.curve:
            assert self.config.curve_secret_key is not None
            public, secret = security.load_secret_key(self.config.curve_secret_key)
            self._auth = security.start_authenticator(self._context, self.config.allow_client_keys)
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EADDRINUSE:
                raise TransportError(f"{self.endpoint} is already in use (another daemon?)") from exc
            raise TransportError(f"cannot bind {self.endpoint}: {exc}") from exc
        if self._ipc is not None:
            self._ipc.secure()

    def max_frame_bytes(self) -> int:
        """The largest frame a client may send: one action leaf for every slot, plus headroom."""
        actions = max((np.dtype(leaf.dtype).itemsize * math.prod(leaf.shape) for leaf in self.act_leaves), default=0)
        return min(MAX_INBOUND_BYTES, MIN_INBOUND_BYTES + self.config.num_envs * actions)

    def request_stop(self) -> None:
        """Ask the loop to stop gracefully (safe in a signal handler: only sets flags).

        A second request stops waiting for in-flight commands (they get an error reply).
        """
        if self._stop_requested:
            self._force_stop = True
        self._stop_requested = True

    def serve_forever(self) -> None:
        """Run the loop until :meth:`request_stop`, then finish in-flight commands and close."""
        assert self._socket is not None and self._coordinator is not None
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        self._coordinator.register(poller)  # its socket and the fast path's doorbell
        self._last_tick = self._clock()
        try:
            if self._ipc is not None:
                try:
                    self._lanes = LaneServer(poller, self._lane_lease)
                except OSError as exc:  # no abstract sockets here: every step goes over zmq
                    log.warning("no step lanes (%s): same-host trainers step over zmq", exc)
            while not self._stop_requested:
                events = dict(poller.poll(POLL_MS))
                mine = 0
                if self._socket in events:
                    mine = 1
                    self._read_clients()
                lanes = self._lanes
                if lanes is not None and len(events) > mine:
                    for lane, request_id in lanes.requests(events):
                        self._on_lane_step(lane, request_id)
                    mine = sum(1 for key in events if key is self._socket or lanes.owns(key))
                self._tick(pool_woke=len(events) > mine)
            busy = {command.identity for command in self._inflight.commands}
            self._say_goodbye([peer for peer in self._peers if peer not in busy])
            self._finish_in_flight()
            self._say_goodbye([peer for peer in self._peers if peer in busy])
        finally:
            self.close()

    def close(self) -> None:
        """Stop everything this daemon started; idempotent."""
        if self._lanes is not None:
            self._lanes.close()
            self._lanes = None
        if self._stop_metrics is not None:
            with contextlib.suppress(Exception):
                self._stop_metrics()
            self._stop_metrics = None
        if self._coordinator is not None:
            self._coordinator.close()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._socket is not None:
            self._socket.close(linger=self._linger_ms)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None
        if self._ipc is not None:
            self._ipc.remove()
            self._ipc = None

    def __enter__(self) -> PoolDaemon:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the loop ---------------------------------------------------------------------------

    def _tick(self, pool_woke: bool = True) -> None:
        """One turn of the loop after the poll. The pool makes progress when its socket or doorbell
        woke the poll (``pool_woke``) or a poll timeout passed since it last did (its health checks):
        not after every client request, where it would only find nothing to do, at the cost of a
        poll and a health check."""
        coordinator = self._coordinator
        assert coordinator is not None
        wall = time.monotonic()
        if pool_woke or wall - self._last_progress >= POLL_MS / 1000:
            self._last_progress = wall
            coordinator.progress(0)
        self._reply_finished()
        now = self._clock()
        stalled, self._last_tick = now - self._last_tick, now
        if stalled > STALL_SECONDS:
            self.leases.pause(stalled)
            self.counters["daemon_stalls"] += 1
            log.warning("the daemon did not run for %.1f s (starved of CPU?): lease timeouts extended by it", stalled)
        for lease in self.leases.pop_revived():
            self.counters["leases_revived"] += 1
            log.warning("lease %s came back after it expired (its trainer was starved?): slots %s are its again",
                        lease.short_id, describe_slots(lease.slots))  # fmt: skip
        for lease in self.leases.expire():
            self.counters["leases_expired"] += 1
            log.warning(
                "lease %s expired (no heartbeat for %.1f s): slots %s return to the pool",
                lease.short_id,
                self.config.lease_timeout,
                describe_slots(lease.slots),
            )
            self._inflight.drain(lease)
        self._inflight.advance()
        self._refresh_status()

    def _finish_in_flight(self) -> None:
        assert self._coordinator is not None
        deadline = time.monotonic() + self.config.stop_timeout
        log.info("stopping: %d command(s) in flight", len(self._inflight.commands))
        while self._inflight.commands and time.monotonic() < deadline and not self._force_stop:
            self._coordinator.progress(POLL_MS / 1000)
            self._reply_finished()
        for command in self._inflight.abandon():
            self._reply_error(
                command.identity, command.request.request_id, DaemonUnavailableError("the daemon is stopping")
            )

    def _say_goodbye(self, peers: list[bytes]) -> None:
        """Tell trainers' sockets that the daemon stops; a peer that is gone or not reading is skipped."""
        assert self._socket is not None
        header = wire.goodbye_header(f"the daemon at {self.endpoint} is stopping")
        for peer in peers:
            try:
                self._socket.send_multipart([peer, header], zmq.NOBLOCK)
            except zmq.ZMQError:  # EHOSTUNREACH: disconnected; EAGAIN: its queue is full
                continue
            self._linger_ms = GOODBYE_LINGER_MS
        if peers:
            log.info("said goodbye to %d client socket(s)", len(peers))

    def _read_clients(self) -> None:
        assert self._socket is not None
        for _ in range(MAX_MESSAGES_PER_TICK):
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            self._on_request(frames[0], frames[1:])

    def _on_request(self, identity: bytes, frames: list[bytes]) -> None:
        self.counters["requests"] += 1
        request_id: int | None = None
        try:
            request = wire.parse_request(frames)
            request_id = request.request_id
            if request.op is not ClientOp.STATUS and request.op is not ClientOp.HELLO:
                self._peers.heard(identity, time.monotonic())
            handle(self, identity, request)
        except Exception as exc:
            self._refuse(identity, request_id, exc)

    def _on_lane_step(self, lane: LaneEnd, request_id: int) -> None:
        """A step that came on ``lane``: handled as the same step over zmq would be (errors and
        replies that do not fit the lane go to the lease's zmq identity)."""
        self.counters["requests"] += 1
        lease = lane.lease
        header = {"v": wire.PROTOCOL_VERSION, "id": request_id, "op": ClientOp.STEP.value, "lease": lease.lease_id}
        self._peers.heard(lease.identity, time.monotonic())
        try:
            handle(self, lease.identity, wire.Request(ClientOp.STEP, request_id, header, [], lane=True))
        except Exception as exc:
            self._refuse(lease.identity, request_id, exc)

    def _lane_lease(self, lease_id: str) -> Lease | None:
        """The lease that may open a step lane: a current one, in shared memory, without a lane."""
        lease = next((lease for lease in self.leases.leases if lease.lease_id == lease_id), None)
        return lease if lease is not None and lease.shared_memory and lease.lane is None else None

    @property
    def lane_name(self) -> str | None:
        """The abstract socket where a shared-memory lease opens its step lane (``None``: no lanes)."""
        return None if self._lanes is None else self._lanes.name

    def _refuse(self, identity: bytes, request_id: int | None, error: Exception) -> None:
        """The error reply to a request the daemon could not take (bad requests counted)."""
        if isinstance(error, wire.RequestError):
            self.counters["bad_requests"] += 1
            self._reply_error(identity, error.request_id, error.reply_error())
        elif isinstance(error, UsageError | ProtocolError):
            if not isinstance(error, LeaseError):  # a refused lease is counted as clients_refused
                self.counters["bad_requests"] += 1
            self._reply_error(identity, request_id, error)
        elif isinstance(error, PoolEnvError):
            self._reply_error(identity, request_id, error)
        else:  # a bug must not take down the daemon and every trainer with it
            log.error("internal error handling a request", exc_info=error)
            self._reply_error(identity, request_id, PoolEnvError(f"internal daemon error: {error!r}"))

    # -- replies ----------------------------------------------------------------------------

    def send(self, identity: bytes, header: bytes, arrays: list[Any] | None = None) -> None:
        """Send a reply; a client that is gone (or not reading) loses it, nobody else notices."""
        if self._socket is None:
            return
        frames: list[Any] = [identity, header, *(arrays or [])]
        big = any(getattr(frame, "nbytes", 0) >= wire.ZERO_COPY_BYTES for frame in frames)
        try:
            self._socket.send_multipart(frames, zmq.NOBLOCK, copy=not big)
        except zmq.Again:
            self.counters["replies_dropped"] += 1
            log.warning("dropped a reply: the client is not reading")
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.counters["replies_dropped"] += 1
            log.info("dropped a reply: the client disconnected")

    def reply(self, identity: bytes, request_id: int, body: dict[str, Any], arrays: list[Any] | None = None) -> None:
        """A success reply."""
        self.send(identity, wire.encode_header(request_id, body), arrays)

    def _reply_error(self, identity: bytes, request_id: int | None, error: BaseException) -> None:
        self.send(identity, wire.error_header(request_id, error))

    # -- commands ---------------------------------------------------------------------------

    def submit(self, identity: bytes, request: wire.Request, lease: Lease, op: Op, **kwargs: Any) -> None:
        """Start a reset/step/call for ``lease`` and remember where its reply goes (see :class:`InFlight`)."""
        self._inflight.submit(self.coordinator, identity, request, lease, op, **kwargs)

    def _reply_finished(self) -> None:
        for command, result in self._inflight.finished(self.coordinator):
            reply_to_command(self, command.identity, command.request, command.lease, result)

    def end_lease(self, lease: Lease, why: str) -> None:
        """A lease was released: its slots drain, its lane closes."""
        if lease.lane is not None and self._lanes is not None:
            self._lanes.close_lane(lease.lane)
        log.info("lease %s %s: slots %s return to the pool", lease.short_id, why, describe_slots(lease.slots))
        self._inflight.drain(lease)

    # -- views for handlers and status ------------------------------------------------------

    @property
    def coordinator(self) -> Coordinator:
        """The pool's coordinator."""
        assert self._coordinator is not None
        return self._coordinator

    @property
    def hello(self) -> dict[str, Any]:
        """The ``hello`` reply body (spaces, metadata, sizes)."""
        return self._hello

    def check_actions(self, arrays: list[Any], rows: int) -> list[Any]:
        """Validate one lease's actions against the batched action space; the parts without a
        fixed shape (one list of plain values per leaf) rebuilt first (:func:`space_wire.from_plain`).

        Raises:
            InvalidActionError: shape, dtype or values outside the space.
            ProtocolError: a part without a fixed shape that is not a value of its space's plain form.
        """
        action_space = self.spaces[1]
        arrays = list(arrays)
        for i, leaf in enumerate(self.act_leaves):
            if leaf.by_message:
                part = leaf_value(action_space, leaf.path)
                try:
                    arrays[i] = [space_wire.from_plain(part, value) for value in arrays[i]]
                except ProtocolError as exc:
                    raise ProtocolError(f"actions{render_path(leaf.path)}: {exc}") from None
        structure = build_structure(self.act_leaves, arrays, self._act_tree)
        return validate_actions(structure, self.act_leaves, self.spaces[1], rows)

    def status(self) -> dict[str, Any]:
        """The status document (see :mod:`pool_env.daemon.status`)."""
        return status_document(self, self._rates.rates, time.monotonic() - self._started_at, self._clock())

    def _refresh_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < 1.0:
            return
        self._status_at = now
        coordinator = self.coordinator
        self._rates.sample(now, {h.worker_id: h.steps for h in coordinator.workers})
        if self.config.metrics_port is not None:
            self._latest_status = self.status()
