"""The coordinator ↔ worker wire: one :class:`Op` enum, msgpack messages, explicit size limits.

Every message is a msgpack map with an ``op`` field.  Coordinator → worker:

* ``init``  ``{op, spec, slots, shm_name, layout, seeds, spaces}``: take over ``slots`` (``seeds``: per
  slot, the seed of its first seedless reset, a restarted worker's schedule, or nil); ``spaces``
  (optional) describes the pool's spaces, which every env must declare too.
* ``reset`` ``{op, seq, slots, seeds, options}``: reset ``slots`` (global ids) with ``seeds``.
* ``step``  ``{op, seq, slots}``: step ``slots``; actions are in shared memory. A slot that
  ended on its previous step is reset instead (gymnasium's NEXT_STEP autoreset).
* ``call``  ``{op, seq, slots, name, args, kwargs, values?}``: for each slot, get the env's
  attribute ``name`` (``env.get_wrapper_attr``) and call it with ``args``/``kwargs`` if it is
  callable; with ``values`` (one per slot), set the attribute instead (``set_wrapper_attr``).
  Nothing touches shared memory; the ``done`` reply carries ``values`` (slot → result) or
  ``call_error`` (:func:`pool_env.errors.to_wire` with ``builtin=True``) when an env raised.
* ``close`` ``{op}``: close the envs and exit.

Worker → coordinator:

* ``hello`` ``{op, gen, pid}``: the worker process is up and wants its ``init`` (the ROUTER
  knows the worker by its socket identity ``w<worker>.<gen>``).
* ``ready`` ``{op, gen}``: ``init`` done: shared memory attached, the envs' backend made (an
  HTTP backend opens no connection before its first reset).
* ``done``  ``{op, gen, seq, infos, errors[, in_a_row][, counters]}``: the command ``seq`` is
  finished and its results are in shared memory; ``infos`` maps slot → info dict (only non-empty
  ones), ``errors`` maps slot → ``[kind, fate, message]`` (:meth:`pool_env.errors.SlotFailure.to_wire`;
  those slots are reported truncated); only when a slot's env raised, ``in_a_row`` maps it → how
  often it raised since its last successful step; ``counters``: the backend's counters, when they
  changed.
* ``fatal`` ``{op, gen, seq, error}``: the worker cannot go on (env creation failed, the server
  said 4xx); ``error`` is :func:`pool_env.errors.to_wire` of it, with the worker's traceback; the
  coordinator raises it to the trainer (``seq`` is -1 for a failed ``init``).

Infos, reset options and ``call`` values keep their types through :mod:`pool_env.codec`
(numpy arrays and scalars, tuples, nested dicts, ...); never pickle.
Replies carry ``gen`` (the worker's generation) and ``seq`` so a late reply of a replaced
worker or of an abandoned command is recognised and dropped.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from pool_env import codec
from pool_env.errors import ProtocolError

__all__ = [
    "AUTORESET_MODES",
    "MAX_MESSAGE_BYTES",
    "Op",
    "decode",
    "encode",
    "to_plain",
]

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""The largest message accepted. Observations go through shared memory, but infos may carry
megabytes per step (a depth map per env): 16 envs x 1.2 MB fit many times over."""


AUTORESET_MODES = ("NextStep", "SameStep", "Disabled")
"""The values of ``gymnasium.vector.AutoresetMode`` (a command's ``autoreset``, a daemon lease's mode;
the fast path numbers them in this order), here so a worker needs no gymnasium to know them."""


class Op(enum.StrEnum):
    """Message kinds on the coordinator ↔ worker wire."""

    INIT = "init"
    RESET = "reset"
    STEP = "step"
    CALL = "call"
    CLOSE = "close"
    HELLO = "hello"
    READY = "ready"
    DONE = "done"
    FATAL = "fatal"


def encode(message: dict[str, Any], max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Pack ``message`` with :func:`pool_env.codec.pack` (every value keeps its type).

    Raises:
        CodecError: a value cannot cross (the message names its path and type).
        ProtocolError: the packed message is larger than ``max_bytes``; names the largest parts.
    """
    data = codec.pack(message, "message")
    if len(data) > max_bytes:
        raise ProtocolError(
            f"message of {len(data)} bytes exceeds the limit of {max_bytes} bytes; largest parts: "
            f"{_largest_parts(message)}"
        )
    return data


def _largest_parts(message: dict[str, Any], count: int = 3) -> str:
    """The biggest leaves of ``message`` (path and size), for the oversize error."""
    sizes: list[tuple[int, str]] = []

    def visit(value: Any, path: tuple[Any, ...]) -> None:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                visit(child, (*path, key))
        else:
            size = value.nbytes if isinstance(value, np.ndarray) else len(codec.pack(value))
            sizes.append((size, codec.render_path(path)))

    visit(message, ())
    return ", ".join(f"{path} {size} bytes" for size, path in sorted(sizes, reverse=True)[:count])


def decode(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES, *, classes: bool = True) -> dict[str, Any]:
    """Unpack one message, checking its size and that it is a map with an ``op``.

    ``classes=False``: refuse values naming a class (for messages from a network peer).

    Raises:
        ProtocolError: oversized, not msgpack, not a map, or no ``op``.
    """
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        message = codec.unpack(data, max_bytes, classes=classes)
    except codec.CodecError as exc:
        raise ProtocolError(str(exc)) from exc
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"undecodable message ({type(exc).__name__}: {exc})") from exc
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError(f"a message must be a map with a string 'op', got {type(message).__name__}")
    return message


def to_plain(value: Any) -> Any:
    """Round-trip ``value`` through the wire encoding (what the other side will see)."""
    return codec.unpack(codec.pack(value), MAX_MESSAGE_BYTES)
