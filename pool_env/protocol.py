"""The coordinator ↔ worker wire: one :class:`Op` enum, msgpack messages, explicit size limits.

Every message is a msgpack map with an ``op`` field.  Coordinator → worker:

* ``init``  ``{op, spec, slots, shm_name, layout, seeds, restarts}``: take over ``slots``.
* ``reset`` ``{op, seq, slots, seeds, options}``: reset ``slots`` (global ids) with ``seeds``.
* ``step``  ``{op, seq, slots}``: step ``slots``; actions are in shared memory. A slot that
  ended on its previous step is reset instead (gymnasium's NEXT_STEP autoreset).
* ``close`` ``{op}``: close the envs and exit.

Worker → coordinator:

* ``hello`` ``{op, worker, gen, pid}``: the worker process is up and wants its ``init``.
* ``ready`` ``{op, gen}``: envs created, observation layout checked.
* ``done``  ``{op, gen, seq, infos, errors}``: the command ``seq`` is finished and its results
  are in shared memory; ``infos`` maps slot → info dict (only non-empty ones), ``errors`` maps
  slot → error text (those slots are reported truncated). Only when a slot's own env failed:
  ``kinds`` maps slot → ``ErrorKind.ENV_RAISED`` or ``INVALID_ENV_RETURN``, ``in_a_row`` maps a slot
  whose env raised → how often it raised since its last successful step.
* ``fatal`` ``{op, gen, seq, kind, message, detail, status}``: the worker cannot go on (env
  creation failed, the server said 4xx); the coordinator raises it to the trainer.

Arrays inside infos travel as a msgpack ext type (dtype, shape, raw bytes); never pickle.
Replies carry ``gen`` (the worker's generation) and ``seq`` so a late reply of a replaced
worker or of an abandoned command is recognised and dropped.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack
import numpy as np

from pool_env.errors import ProtocolError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Op",
    "decode",
    "encode",
    "to_plain",
]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest control message accepted; arrays go through shared memory, so this is generous."""

_NDARRAY_EXT = 1


class Op(enum.StrEnum):
    """Message kinds on the coordinator ↔ worker wire."""

    INIT = "init"
    RESET = "reset"
    STEP = "step"
    CLOSE = "close"
    HELLO = "hello"
    READY = "ready"
    DONE = "done"
    FATAL = "fatal"


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            return [_default(x) if isinstance(x, np.generic | np.ndarray) else x for x in obj.tolist()]
        header = msgpack.packb([obj.dtype.str, list(obj.shape)])
        return msgpack.ExtType(_NDARRAY_EXT, header + np.ascontiguousarray(obj).tobytes())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    return repr(obj)


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _NDARRAY_EXT:
        raise ProtocolError(f"unknown msgpack ext type {code}")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data))
    unpacker.feed(data)
    dtype_str, shape = unpacker.unpack()
    offset = unpacker.tell()
    dtype = np.dtype(dtype_str)
    if dtype.hasobject:
        raise ProtocolError("object arrays are not allowed on the wire")
    array = np.frombuffer(data, dtype=dtype, offset=offset)
    return array.reshape(shape).copy()


def encode(message: dict[str, Any]) -> bytes:
    """Pack ``message`` (numpy scalars and arrays allowed) into msgpack bytes.

    Raises:
        ProtocolError: the packed message is larger than :data:`MAX_MESSAGE_BYTES`.
    """
    data: bytes = msgpack.packb(message, default=_default, use_bin_type=True)
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    return data


def decode(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Unpack one message, checking its size and that it is a map with an ``op``.

    Raises:
        ProtocolError: oversized, not msgpack, not a map, or no ``op``.
    """
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        message = msgpack.unpackb(
            data, raw=False, strict_map_key=False, ext_hook=_ext_hook
        )
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"undecodable message ({type(exc).__name__}: {exc})") from exc
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError(f"a message must be a map with a string 'op', got {type(message).__name__}")
    return message


def to_plain(value: Any) -> Any:
    """Round-trip ``value`` through the wire encoding (what the other side will see)."""
    return msgpack.unpackb(
        msgpack.packb(value, default=_default, use_bin_type=True),
        raw=False,
        strict_map_key=False,
        ext_hook=_ext_hook,
    )
