"""One small function per client op: validate every field, then answer or start a command.

Handlers see the daemon through :class:`~pool_env.daemon.view.DaemonView` only. Each either
replies at once or hands a coordinator command to the daemon, whose loop calls
:func:`reply_to_command` when it completes. Handlers raise our errors for bad requests; the
daemon turns them into error replies (the request id included) and goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from pool_env.commands import CommandResult
from pool_env.daemon import wire
from pool_env.daemon.leases import Lease, describe_slots
from pool_env.daemon.view import DaemonView
from pool_env.daemon.wire import ClientOp, Request, RequestError, field
from pool_env.errors import LeaseError, ProtocolError, UsageError
from pool_env.protocol import AUTORESET_MODES, Op
from pool_env.shm import Leaf

__all__ = ["handle", "reply_to_command"]

log = logging.getLogger(__name__)

MAX_SEED = 2**64 - 1


def handle(daemon: DaemonView, identity: bytes, request: Request) -> None:
    """Dispatch ``request`` to its handler."""
    _HANDLERS[request.op](daemon, identity, request)


def _hello(daemon: DaemonView, identity: bytes, request: Request) -> None:
    field(request.header, "client", str, optional=True)
    daemon.reply(identity, request.request_id, {"version": wire.PROTOCOL_VERSION, **daemon.hello})


def _lease(daemon: DaemonView, identity: bytes, request: Request) -> None:
    num_envs = field(request.header, "num_envs", int)
    wants_shm = bool(field(request.header, "shm", bool, optional=True))
    autoreset = field(request.header, "autoreset", str, optional=True) or "NextStep"
    if autoreset not in AUTORESET_MODES:
        raise RequestError(f"autoreset must be one of {list(AUTORESET_MODES)}, got {autoreset!r}", request.request_id)
    try:
        lease = daemon.leases.grant(num_envs)
    except LeaseError as exc:
        daemon.counters["clients_refused"] += 1
        log.warning("client refused a lease of %d slots: %s", num_envs, exc)
        raise
    daemon.counters["leases_granted"] += 1
    coordinator = daemon.coordinator
    lease.shared_memory = wants_shm and daemon.endpoint.startswith("ipc://") and coordinator.buffers is not None
    lease.autoreset = autoreset
    lease.identity = identity
    log.info(
        "lease %s granted: %d slots %s (%s)",
        lease.short_id, num_envs, describe_slots(lease.slots), "shared memory" if lease.shared_memory else "frames",
    )  # fmt: skip
    body: dict[str, Any] = {"lease": lease.lease_id, "slots": lease.slots, "heartbeat": daemon.leases.timeout}
    if lease.shared_memory:
        assert coordinator.buffers is not None
        body["shm"] = {"name": coordinator.buffers.name, "layout": coordinator.buffers.layout.to_wire()}
        if daemon.lane_name is not None:  # its steps may come on a lane of their own (daemon.lane)
            body["lane"] = daemon.lane_name
    else:
        body["shm"] = None
    daemon.reply(identity, request.request_id, body)


def _idle_lease(daemon: DaemonView, identity: bytes, request: Request) -> Lease:
    lease = daemon.leases.get(field(request.header, "lease", str))
    lease.identity = identity  # a client that recreated its socket has a new one
    if lease.busy:
        raise UsageError("a command of this lease is still in flight; wait for its reply first")
    return lease


def _reset(daemon: DaemonView, identity: bytes, request: Request) -> None:
    lease = _idle_lease(daemon, identity, request)
    header = request.header
    positions = _positions(header, lease)
    seeds = field(header, "seeds", list, optional=True) or [None] * len(positions)
    if len(seeds) != len(positions) or any(
        s is not None and (not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= MAX_SEED) for s in seeds
    ):
        raise UsageError(f"seeds must be {len(positions)} ints in 0..2**64-1 or nil")
    options = field(header, "options", dict, optional=True)
    slots = [lease.slots[p] for p in positions]
    daemon.submit(identity, request, lease, Op.RESET, slots=slots, seeds=dict(zip(slots, seeds, strict=True)),
                  options=options)  # fmt: skip


def _positions(header: dict[str, Any], lease: Lease) -> list[int]:
    """The ``positions`` field (a subset of the lease's rows), or all of them.

    Raises:
        UsageError: not distinct ints in range, or empty.
    """
    positions = field(header, "positions", list, optional=True)
    if positions is None:
        return list(range(len(lease.slots)))
    if (
        not positions
        or any(not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < len(lease.slots) for p in positions)
        or len(set(positions)) != len(positions)
    ):
        raise UsageError(f"positions must be distinct ints in 0..{len(lease.slots) - 1}")
    return positions


def _step(daemon: DaemonView, identity: bytes, request: Request) -> None:
    lease = _idle_lease(daemon, identity, request)
    if not lease.was_reset:
        raise UsageError("call reset() before step(): this lease's slots have no episodes of yours yet")
    buffers = daemon.coordinator.buffers
    assert buffers is not None
    rows = len(lease.slots)
    leaves = daemon.act_leaves
    fixed = [i for i, leaf in enumerate(leaves) if not leaf.by_message]
    in_shm = lease.shared_memory and not request.arrays
    if in_shm:  # views: validated where they are (the workers read them there)
        fixed_arrays = [buffers.act[i][lease.rows] for i in fixed]
    else:
        fixed_arrays = wire.arrays_from_frames(request.arrays, [leaves[i] for i in fixed], rows, "actions")
    sent = _message_actions(request.header, leaves, rows)
    parts = iter(fixed_arrays)
    arrays = [sent[i] if leaf.by_message else next(parts) for i, leaf in enumerate(leaves)]
    actions: dict[int, list[Any]] = {}
    for i, value in enumerate(daemon.check_actions(arrays, rows)):
        if leaves[i].by_message:  # no fixed shape: to the workers in the step command
            actions[i] = [None] * daemon.config.num_envs
            for slot, item in zip(lease.slots, value, strict=True):
                actions[i][slot] = item
        elif not in_shm:
            buffers.act[i][lease.rows] = value
    daemon.submit(identity, request, lease, Op.STEP, actions=actions or None)


def _message_actions(header: dict[str, Any], leaves: list[Leaf], rows: int) -> dict[int, list[Any]]:
    """The ``actions`` header field: one list of ``rows`` values per action leaf without a fixed shape.

    Raises:
        ProtocolError: other leaves than those, or not one value per slot.
    """
    wanted = {i for i, leaf in enumerate(leaves) if leaf.by_message}
    sent = field(header, "actions", dict, optional=True) or {}
    if set(sent) != wanted:
        raise ProtocolError(
            f"header field 'actions' must hold the action leaves without a fixed shape {sorted(wanted)}, "
            f"got {sorted(map(repr, sent))}"
        )
    for i, values in sent.items():
        if not isinstance(values, list) or len(values) != rows:
            raise ProtocolError(f"header field 'actions' [{i}] must be a list of {rows} values (one per slot)")
    return sent


def _call(daemon: DaemonView, identity: bytes, request: Request) -> None:
    lease = _idle_lease(daemon, identity, request)
    header = request.header
    name = field(header, "name", str)
    slots = [lease.slots[p] for p in _positions(header, lease)]
    values = field(header, "values", list, optional=True)
    if values is not None:
        if len(values) != len(slots):
            raise UsageError(f"values must be one per chosen slot of the lease ({len(slots)}), got {len(values)}")
        invocation: dict[str, Any] = {"name": name, "values": dict(zip(slots, values, strict=True))}
    else:
        args = field(header, "args", list, optional=True) or []
        kwargs = field(header, "kwargs", dict, optional=True) or {}
        if any(not isinstance(key, str) for key in kwargs):
            raise UsageError("kwargs keys must be str")
        invocation = {"name": name, "args": args, "kwargs": kwargs}
    daemon.submit(identity, request, lease, Op.CALL, slots=slots, invocation=invocation)


def _heartbeat(daemon: DaemonView, identity: bytes, request: Request) -> None:
    daemon.leases.get(field(request.header, "lease", str))
    daemon.reply(identity, request.request_id, {})


def _release(daemon: DaemonView, identity: bytes, request: Request) -> None:
    lease = daemon.leases.release(field(request.header, "lease", str))
    daemon.counters["leases_released"] += 1
    daemon.end_lease(lease, "released")
    daemon.reply(identity, request.request_id, {})


def _status(daemon: DaemonView, identity: bytes, request: Request) -> None:
    daemon.reply(identity, request.request_id, daemon.status())


_HANDLERS = {
    ClientOp.HELLO: _hello,
    ClientOp.LEASE: _lease,
    ClientOp.RESET: _reset,
    ClientOp.STEP: _step,
    ClientOp.CALL: _call,
    ClientOp.HEARTBEAT: _heartbeat,
    ClientOp.RELEASE: _release,
    ClientOp.STATUS: _status,
}


def reply_to_command(
    daemon: DaemonView, identity: bytes, request: Request, lease: Lease, result: CommandResult
) -> None:
    """Answer a finished reset/step/call: infos (or call results) and errors by the client's
    positions, arrays as frames unless the client reads its rows from shared memory."""
    is_call = request.op is ClientOp.CALL
    if result.fatal is not None:  # what an env raised in a call keeps its builtin type
        daemon.send(identity, wire.error_header(request.request_id, result.fatal, builtin=is_call))
        return
    coordinator = daemon.coordinator
    position = lease.positions
    errors = {position[s]: failure.to_wire() for s, failure in result.errors.items() if s in position}
    if is_call:
        values = {position[s]: value for s, value in result.values.items() if s in position}
        restarts = {p: coordinator.restarts_of(lease.slots[p]) for p in errors}
        daemon.reply(identity, request.request_id, {"values": values, "errors": errors, "restarts": restarts})
        return
    # A slot whose worker was replaced while serving another lease gets its "episode lost" error
    # (and truncation) from the coordinator on its next step.
    is_step = request.op is ClientOp.STEP
    if not is_step:
        lease.was_reset = True
    body = {
        "infos": {position[s]: info for s, info in result.infos.items() if s in position},
        "errors": errors,
        "restarts": {p: coordinator.restarts_of(lease.slots[p]) for p in errors},
    }
    if coordinator.message_obs:  # observation parts without a fixed shape: one value per position
        body["obs"] = {i: [values[s] for s in lease.slots] for i, values in coordinator.message_obs.items()}
    elif request.lane and lease.lane is not None and not body["infos"] and not errors:
        lease.lane.answer(request.request_id)  # nothing but the arrays in shared memory to tell
        return
    arrays: list[Any] = []
    if not lease.shared_memory:
        buffers = coordinator.buffers
        assert buffers is not None
        leaves = buffers.layout.obs
        arrays = [array[lease.slots] for leaf, array in zip(leaves, buffers.obs, strict=True) if not leaf.by_message]
        if is_step:
            arrays += [buffers.reward[lease.slots], buffers.terminated[lease.slots], buffers.truncated[lease.slots]]
    daemon.reply(identity, request.request_id, body, arrays)
