"""The trainer ↔ daemon wire: a versioned msgpack header frame plus optional raw array frames.

Every message is a zmq multipart message ``[header, *arrays]`` (the daemon's ROUTER adds the
client identity in front). The header is a msgpack map; arrays are raw C-contiguous buffers
whose dtype and shape both sides derive from the spaces (nothing about them is trusted from the
peer but the byte count, which is checked). Never pickle.

Requests (client → daemon), every header ``{v, id, op, ...}``:

=============  =====================================================  =========================
op             header fields                                          array frames
=============  =====================================================  =========================
``hello``      ``client`` (free text)                                 —
``lease``      ``num_envs``, ``shm`` (bool: the client can attach),    —
               ``autoreset`` (an AutoresetMode value; default NextStep)
``reset``      ``lease``, ``seeds`` (list, one per slot, int|nil),     —
               ``options`` (map|nil), ``positions`` (list|nil: subset)
``step``       ``lease``, ``actions`` (map: action leaf index → one       one per action leaf of
               value per slot, for the leaves without a fixed shape)   fixed shape (frames mode)
``call``       ``lease``, ``name``, ``args`` (list), ``kwargs`` (map)  —
               or ``lease``, ``name``, ``values`` (one per slot:
               ``set_attr``); plain data only (no classes);
               ``positions`` (list|nil: a subset, ``call_slots``)
``heartbeat``  ``lease``                                              —
``release``    ``lease``                                              —
``status``     —                                                      —
=============  =====================================================  =========================

Replies (daemon → client): ``{v, id, ok: true, ...}`` or ``{v, id, ok: false, error}`` where
``error`` is :func:`pool_env.errors.to_wire` of the error (the client raises
:func:`pool_env.errors.from_wire` of it: the same class with the same fields). ``hello`` answers
``{version, server, observation_space, action_space, metadata, render_mode, num_envs, env_spec}``;
``lease`` answers ``{lease, slots, heartbeat, shm: {name, layout}|nil}``; ``reset``/``step``
answer ``{infos, errors, restarts}`` keyed by the client's positions (``errors``: ``[kind, fate,
message]``, :meth:`pool_env.errors.SlotFailure.to_wire`), plus — in frames mode — one frame per
observation leaf of fixed shape and, for ``step``, ``reward``, ``terminated``, ``truncated``. In shm
mode (same host) the client reads its rows of the daemon's shared-memory segment instead and writes
its action rows there before ``step``. Leaves without a fixed shape (Text, Sequence, Graph, OneOf,
custom spaces: :mod:`pool_env.daemon.space_wire`) travel in the headers in both modes: ``obs``
(map: observation leaf index → one value per position) in the replies, ``actions`` in ``step``.
``call`` answers ``{values, errors, restarts}`` (``values``: position → result, types kept by
:mod:`pool_env.codec`), or — when an env raised — an error reply
whose builtin exception type is kept (``to_wire(..., builtin=True)``).

A stopping daemon sends each trainer's sockets one unsolicited ``{v, id: nil, op: goodbye,
reason}``; the client raises :class:`~pool_env.errors.DaemonUnavailableError` on its next call.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pool_env import errors, protocol
from pool_env.daemon.space_wire import space_from_wire, space_to_wire
from pool_env.errors import PoolEnvError, ProtocolError, VersionMismatchError
from pool_env.shm import Leaf

__all__ = [
    "GOODBYE",
    "MAX_ARRAY_FRAMES",
    "MAX_HEADER_BYTES",
    "PROTOCOL_VERSION",
    "ZERO_COPY_BYTES",
    "ClientOp",
    "Request",
    "RequestError",
    "arrays_from_frames",
    "encode_header",
    "env_spec_from_wire",
    "env_spec_to_wire",
    "error_header",
    "field",
    "goodbye_header",
    "parse_request",
    "raise_reply_error",
    "reply_document",
    "space_from_wire",
    "space_to_wire",
]

PROTOCOL_VERSION = 2
"""Bumped on every incompatible change of this wire."""

GOODBYE = "goodbye"
"""The ``op`` of the message a stopping daemon sends every trainer (no request id)."""

MAX_HEADER_BYTES = 1024 * 1024
"""The largest header frame the daemon unpacks (arrays travel in their own frames)."""

MAX_ARRAY_FRAMES = 256
"""More frames than this in one request is refused before anything is looked at."""

ZERO_COPY_BYTES = 64 * 1024
"""Frames at least this large are sent with ``copy=False``."""


class ClientOp(enum.StrEnum):
    """Requests a client may send."""

    HELLO = "hello"
    LEASE = "lease"
    RESET = "reset"
    STEP = "step"
    CALL = "call"
    HEARTBEAT = "heartbeat"
    RELEASE = "release"
    STATUS = "status"


@dataclass
class Request:
    """One parsed request: its op, id, header and raw array frames; ``lane``: a step that came on
    the lease's step lane (:mod:`pool_env.daemon.lane`), answered there when its reply fits."""

    op: ClientOp
    request_id: int
    header: dict[str, Any]
    arrays: list[bytes]
    lane: bool = False


def request_id_of(header: object) -> int | None:
    """The request id of a header, if it has a usable one (so even a bad request gets a reply)."""
    if isinstance(header, dict):
        value = header.get("id")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
            return value
    return None


class RequestError(ProtocolError):
    """A request the daemon refuses; carries what the error reply needs.

    Attributes:
        request_id: the request's id when it could be read (``None`` otherwise).
        reply: the error the client is to raise (sent with :func:`~pool_env.errors.to_wire`);
            ``None``: a :class:`ProtocolError` with this message.
    """

    request_id: int | None
    reply: PoolEnvError | None

    def __init__(self, message: str, request_id: int | None = None, reply: PoolEnvError | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.reply = reply

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.request_id, self.reply))

    def reply_error(self) -> PoolEnvError:
        """The error the client is to raise: :attr:`reply`, or a :class:`ProtocolError` with this message."""
        return self.reply if self.reply is not None else ProtocolError(str(self))


def parse_request(frames: Sequence[bytes]) -> Request:
    """Check the framing, the header, the protocol version and the op of one request.

    Raises:
        RequestError: with a message for the client (and the request id when known).
    """
    if not frames:
        raise RequestError("empty message")
    if len(frames) - 1 > MAX_ARRAY_FRAMES:
        raise RequestError(f"{len(frames) - 1} array frames exceed the limit of {MAX_ARRAY_FRAMES}")
    try:
        header = protocol.decode(bytes(frames[0]), max_bytes=MAX_HEADER_BYTES, classes=False)  # a network peer
    except ProtocolError as exc:
        raise RequestError(str(exc)) from exc
    request_id = request_id_of(header)
    if request_id is None:
        raise RequestError("header field 'id' must be an int in 0..2**63-1")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise RequestError(
            f"protocol version mismatch: the client speaks version {version!r}, "
            f"this daemon speaks version {PROTOCOL_VERSION}",
            request_id,
            VersionMismatchError(version if isinstance(version, int) else -1, PROTOCOL_VERSION),
        )
    try:
        op = ClientOp(header["op"])
    except ValueError:
        raise RequestError(f"unknown op {header['op']!r}; known: {[op.value for op in ClientOp]}", request_id) from None
    return Request(op, request_id, header, [bytes(frame) for frame in frames[1:]])


def field(header: dict[str, Any], name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    """``header[name]`` checked against ``kind`` (``bool`` is never an ``int`` here).

    Raises:
        ProtocolError: missing or of the wrong type; the message names the field.
    """
    if name not in header or header[name] is None:
        if optional:
            return None
        raise ProtocolError(f"header field {name!r} is missing")
    value = header[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(f"header field {name!r} must be {_names(kinds)}, got bool")
    if not isinstance(value, kinds):
        raise ProtocolError(f"header field {name!r} must be {_names(kinds)}, got {type(value).__name__}")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kinds)


def encode_header(request_id: int | None, body: dict[str, Any]) -> bytes:
    """A success reply header."""
    return protocol.encode({"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "op": "reply", **body})


def raise_reply_error(header: dict[str, Any], endpoint: str) -> None:
    """Raise the error an error reply describes (:func:`pool_env.errors.from_wire`: its own class and
    fields), its message prefixed with ``daemon at <endpoint>: ``."""
    error = errors.from_wire(header.get("error"))
    error.args = (f"daemon at {endpoint}: {error}",)
    raise error


def reply_document(header: dict[str, Any]) -> dict[str, Any]:
    """A reply header without the envelope fields: the document it carries."""
    return {k: v for k, v in header.items() if k not in ("v", "id", "ok", "op")}


def goodbye_header(reason: str) -> bytes:
    """The unsolicited message a stopping daemon sends each trainer: ``{v, id: nil, op: goodbye, reason}``."""
    return protocol.encode({"v": PROTOCOL_VERSION, "id": None, "op": GOODBYE, "reason": reason})


def error_header(request_id: int | None, error: BaseException, builtin: bool = False) -> bytes:
    """An error reply header: ``{ok: false, error: errors.to_wire(error, builtin=builtin)}``."""
    wired = errors.to_wire(error, builtin=builtin)
    body = {"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "op": "reply", "error": wired}
    return protocol.encode(body)


def arrays_from_frames(frames: Sequence[bytes], leaves: Sequence[Leaf], rows: int, what: str) -> list[np.ndarray]:
    """One ``(rows, *leaf.shape)`` array per leaf from raw frames, sizes checked.

    Raises:
        ProtocolError: wrong frame count or byte size (named).
    """
    if len(frames) != len(leaves):
        raise ProtocolError(f"{what}: expected {len(leaves)} array frame(s), got {len(frames)}")
    arrays = []
    for i, (frame, leaf) in enumerate(zip(frames, leaves, strict=True)):
        dtype = np.dtype(leaf.dtype)
        shape = (rows, *leaf.shape)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(frame) != expected:
            raise ProtocolError(
                f"{what}: frame {i} has {len(frame)} bytes, expected {expected} ({dtype} of shape {shape})"
            )
        arrays.append(np.frombuffer(frame, dtype=dtype).reshape(shape))
    return arrays


def env_spec_to_wire(spec: Any) -> str | None:
    """The gymnasium registry entry of a daemon's env, as gymnasium's own JSON
    (``EnvSpec.to_json``), for ``env.spec`` on the trainer's side: ``None`` unless the daemon serves
    a registered gym id (an import string, an HTTP env or an entry gymnasium cannot write as JSON)."""
    if getattr(spec, "kind", None) != "gym":
        return None
    from gymnasium.envs.registration import spec as registered

    try:
        return registered(spec.env_id).to_json()
    except Exception:  # not registered, or a callable entry point / kwargs JSON cannot hold
        return None


def env_spec_from_wire(text: Any, num_envs: int) -> Any:
    """``env.spec`` of a :class:`~pool_env.RemoteVectorEnv` of ``num_envs`` slots, from
    :func:`env_spec_to_wire`: what ``gymnasium.make_vec(id, num_envs, vectorization_mode="async")``
    sets (the registry entry, its kwargs plus ``num_envs`` and ``vectorization_mode``), else ``None``.
    Parsed by ``EnvSpec.from_json`` (JSON only: nothing is imported)."""
    if not isinstance(text, str):
        return None
    from gymnasium.envs.registration import EnvSpec

    try:
        env_spec = EnvSpec.from_json(text)
    except Exception:  # a daemon of another gymnasium version: no spec rather than no env
        return None
    env_spec.kwargs = {**env_spec.kwargs, "num_envs": num_envs, "vectorization_mode": "async"}
    return env_spec
