"""Spaces and the values of spaces without a fixed shape on the daemon's msgpack-only wire.

A daemon describes its spaces in its ``hello`` reply; the client rebuilds them
(:func:`space_to_wire` / :func:`space_from_wire`). Every gymnasium space crosses: Box, Discrete,
MultiDiscrete, MultiBinary, Dict, Tuple, and the spaces without a fixed shape — Text (its length
bounds and its characters, in their sampling order), Sequence (``stack`` kept), Graph and OneOf —
nested in any way, each with the state of its random generator when it was seeded (so
``env.action_space.sample()`` on the trainer's side draws what ``SyncVectorEnv``'s would). A
custom ``Space`` subclass crosses by its import path plus its attributes (:mod:`pool_env.codec`,
msgpack; its nested spaces described as above), when its class can be imported on both sides and
its samples can be encoded; otherwise the daemon refuses to start with one line naming the class
and the fix (serve it embedded: ``PoolVectorEnv``). Never pickle: the client imports a custom
space's module by name, the trust it already gives its daemon for infos (see ``DESIGN.md``).

Values of the spaces without a fixed shape travel in the message headers (the observations in the
daemon's replies, the actions in ``step`` requests, one list per such leaf), as
``AsyncVectorEnv(shared_memory=False)`` sends them. The daemon rebuilds no object of a class from
a network peer, so :func:`to_plain` turns an action's ``GraphInstance`` (a namedtuple) into a
plain list that :func:`from_plain` turns back, guided by the space.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.spaces.graph import GraphInstance

from pool_env import codec
from pool_env.codec import render_path, resolve_path
from pool_env.errors import CodecError, ProtocolError, SpecError
from pool_env.shm import leaf_value
from pool_env.spaces import leaves_of

__all__ = ["MAX_SPACE_DEPTH", "check_crosses", "from_plain", "space_from_wire", "space_to_wire", "to_plain"]

MAX_SPACE_DEPTH = 32
"""Nesting deeper than this in a space description is refused (a malformed or hostile peer)."""

_MAX_STATE_BYTES = 1024 * 1024
"""The largest encoded attribute state of a custom space."""


def space_to_wire(space: spaces.Space[Any]) -> dict[str, Any]:
    """A msgpack-able description of ``space`` (see the module docstring).

    Raises:
        SpecError: a custom space whose class has no import path or whose attributes cannot be
            encoded (the message names the class and says to use the env embedded).
    """
    data = _describe(space)
    rng = getattr(space, "_np_random", None)  # set only once seeded (or sampled): keep unseeded unseeded
    if isinstance(rng, np.random.Generator):
        data["rng"] = copy.deepcopy(rng)  # codec: the bit generator's name and state
    return data


def _describe(space: spaces.Space[Any]) -> dict[str, Any]:
    dtype = None if space.dtype is None else np.dtype(space.dtype).str
    if isinstance(space, spaces.Box):
        return {"type": "Box", "low": space.low, "high": space.high, "dtype": dtype}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start), "dtype": dtype}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec, "start": space.start, "dtype": dtype}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": [[key, space_to_wire(sub)] for key, sub in space.spaces.items()]}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_wire(sub) for sub in space.spaces]}
    if type(space) is spaces.Text:
        # Characters in their sampling order (Text keeps the order of a str charset).
        chars = "".join(space._char_list)  # gymnasium exposes only the unordered set
        return {"type": "Text", "min_length": space.min_length, "max_length": space.max_length, "charset": chars}
    if type(space) is spaces.Sequence:
        return {"type": "Sequence", "space": space_to_wire(space.feature_space), "stack": bool(space.stack)}
    if type(space) is spaces.Graph:
        edge = None if space.edge_space is None else space_to_wire(space.edge_space)
        return {"type": "Graph", "node_space": space_to_wire(space.node_space), "edge_space": edge}
    if type(space) is spaces.OneOf:
        return {"type": "OneOf", "spaces": [space_to_wire(sub) for sub in space.spaces]}
    return _describe_custom(space)


def _describe_custom(space: spaces.Space[Any]) -> dict[str, Any]:
    """A custom space: its class by import path, its nested spaces described, the rest of its
    attributes encoded by :mod:`pool_env.codec` (its generator travels as ``rng``)."""
    cls = type(space)
    name = f"{cls.__module__}.{cls.__qualname__}"
    fix = "serve it embedded instead (pool_env.PoolVectorEnv), or use gymnasium's own spaces"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise SpecError(f"space {name} cannot cross the daemon wire: its class cannot be imported by path; {fix}")
    nested = {key: space_to_wire(value) for key, value in vars(space).items() if isinstance(value, spaces.Space)}
    state = {k: v for k, v in vars(space).items() if k not in nested and k not in ("_np_random", "dtype")}
    try:
        packed = codec.pack(state, f"space {name} attribute")
    except CodecError as exc:
        raise SpecError(f"space {name} cannot cross the daemon wire: {exc}; {fix}") from None
    if len(packed) > _MAX_STATE_BYTES:
        raise SpecError(f"space {name} cannot cross the daemon wire: its attributes take {len(packed)} bytes; {fix}")
    dtype = None if space.dtype is None else np.dtype(space.dtype).str
    return {"type": "Custom", "class": f"{cls.__module__}:{cls.__qualname__}", "state": packed,
            "spaces": [[key, value] for key, value in nested.items()], "dtype": dtype}  # fmt: skip


def check_crosses(space: spaces.Space[Any], what: str, from_network: bool = False) -> None:
    """Fail at a daemon's start if a sample of a part of ``space`` without a fixed shape cannot
    travel in a message: a custom space whose values are objects the codec cannot encode, or (for
    the actions, ``from_network``) objects of a class, which a daemon rebuilds for no network peer.

    Raises:
        SpecError: names the part's space class and the fix.
    """
    for leaf in leaves_of(space):
        if not leaf.by_message:
            continue
        part = leaf_value(space, leaf.path)
        sample = to_plain(part, copy.deepcopy(part).sample())  # a copy: the served space's generator stays
        cls, where = type(part), f"the {what} space{render_path(leaf.path)}"
        try:
            data = codec.pack(sample, f"a sample of {where}")
        except CodecError as exc:
            why = str(exc)
        else:
            if not from_network or _plain(data):
                continue
            why = (
                f"its samples are objects of a class ({type(sample).__module__}.{type(sample).__qualname__}), "
                "which a daemon does not rebuild from a network peer"
            )
        raise SpecError(
            f"space {cls.__module__}.{cls.__qualname__} ({where}) cannot cross the daemon wire: {why}; serve it "
            "embedded instead (pool_env.PoolVectorEnv)"
        )


def _plain(data: bytes) -> bool:
    """Whether encoded ``data`` holds no object of a class (what a daemon accepts from the network)."""
    try:
        codec.unpack(data, len(data), classes=False)
    except CodecError:
        return False
    return True


def space_from_wire(data: Any, depth: int = 0) -> spaces.Space[Any]:
    """Inverse of :func:`space_to_wire`.

    Raises:
        ProtocolError: not a space description (or nested deeper than :data:`MAX_SPACE_DEPTH`).
        SpecError: a custom space whose class cannot be imported here (names it and the fix).
    """
    if depth > MAX_SPACE_DEPTH:
        raise ProtocolError(f"bad space description: nested deeper than {MAX_SPACE_DEPTH}")
    if not isinstance(data, dict):
        raise ProtocolError(f"bad space description: expected a map, got {type(data).__name__}")
    try:
        space = _build(data, depth + 1)
        rng = data.get("rng")
        if rng is not None:
            if not isinstance(rng, np.random.Generator):
                raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
            space._np_random = rng  # what Space(seed=Generator) sets
    except SpecError:
        raise
    except (KeyError, TypeError, ValueError, AssertionError, AttributeError) as exc:
        raise ProtocolError(f"bad space description of type {data.get('type')!r}: {exc!r}") from exc
    return space


def _build(data: dict[str, Any], depth: int) -> spaces.Space[Any]:
    kind = data["type"]
    if kind == "Box":
        return spaces.Box(data["low"], data["high"], dtype=np.dtype(data["dtype"]))
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data["start"]), dtype=np.dtype(data["dtype"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(data["nvec"], dtype=np.dtype(data["dtype"]), start=data["start"])
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return spaces.Dict({key: space_from_wire(sub, depth) for key, sub in data["spaces"]})
    if kind == "Tuple":
        return spaces.Tuple([space_from_wire(sub, depth) for sub in data["spaces"]])
    if kind == "Text":
        if not isinstance(data["charset"], str):
            raise TypeError("charset must be a str")
        return spaces.Text(int(data["max_length"]), min_length=int(data["min_length"]), charset=data["charset"])
    if kind == "Sequence":
        return spaces.Sequence(space_from_wire(data["space"], depth), stack=bool(data["stack"]))
    if kind == "Graph":
        edge = data["edge_space"]
        node_space = space_from_wire(data["node_space"], depth)
        edge_space = None if edge is None else space_from_wire(edge, depth)
        return spaces.Graph(node_space, edge_space)  # gymnasium checks the kinds
    if kind == "OneOf":
        return spaces.OneOf([space_from_wire(sub, depth) for sub in data["spaces"]])
    if kind == "Custom":
        return _build_custom(data, depth)
    raise ProtocolError(f"unknown space type {kind!r}")


def _build_custom(data: dict[str, Any], depth: int) -> spaces.Space[Any]:
    """A custom space from its import path and attributes, without calling its ``__init__``."""
    path = data["class"]
    if not isinstance(path, str) or not isinstance(data["state"], bytes):
        raise TypeError("class must be a str and state bytes")
    fix = "make its module importable in the trainer's environment, or use the env embedded (pool_env.PoolVectorEnv)"
    try:
        cls = resolve_path(path)
        state = codec.unpack(data["state"], _MAX_STATE_BYTES)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise SpecError(f"the daemon's space {path} cannot be rebuilt here ({why}); {fix}") from None
    if not isinstance(cls, type) or not issubclass(cls, spaces.Space) or not isinstance(state, dict):
        raise TypeError(f"{path} is not a gymnasium Space class")
    space: Any = object.__new__(cls)
    space.__dict__.update(state)
    space.__dict__.update({key: space_from_wire(sub, depth) for key, sub in data["spaces"]})
    space.dtype = None if data["dtype"] is None else np.dtype(data["dtype"])
    space._np_random = None  # unseeded until "rng" (space_from_wire) says otherwise
    return space


def to_plain(space: spaces.Space[Any], value: Any) -> Any:
    """``value`` of ``space`` with every ``GraphInstance`` as a plain ``[nodes, edges, edge_links]``
    list (the daemon rebuilds no objects of a class from a network peer)."""
    if isinstance(space, spaces.Graph) and isinstance(value, GraphInstance):
        return [value.nodes, value.edges, value.edge_links]
    if isinstance(space, spaces.Sequence) and not space.stack and isinstance(value, tuple):
        return tuple(to_plain(space.feature_space, item) for item in value)
    if isinstance(space, spaces.OneOf) and isinstance(value, tuple) and len(value) == 2:
        index = int(value[0])
        return (value[0], to_plain(space.spaces[index], value[1])) if 0 <= index < len(space.spaces) else value
    if isinstance(space, spaces.Dict) and isinstance(value, dict):
        subs = space.spaces
        return {key: to_plain(subs[key], item) if key in subs else item for key, item in value.items()}
    if isinstance(space, spaces.Tuple) and isinstance(value, tuple) and len(value) == len(space.spaces):
        return tuple(to_plain(sub, item) for sub, item in zip(space.spaces, value, strict=True))
    return value


def from_plain(space: spaces.Space[Any], value: Any) -> Any:
    """Inverse of :func:`to_plain`.

    Raises:
        ProtocolError: a Graph value that is not a ``[nodes, edges, edge_links]`` list.
    """
    if isinstance(space, spaces.Graph):
        if not isinstance(value, list | tuple) or len(value) != 3:
            raise ProtocolError(f"a Graph value must be [nodes, edges, edge_links], got {type(value).__name__}")
        return GraphInstance(*value)
    if isinstance(space, spaces.Sequence) and not space.stack and isinstance(value, tuple):
        return tuple(from_plain(space.feature_space, item) for item in value)
    if isinstance(space, spaces.OneOf) and isinstance(value, tuple) and len(value) == 2:
        index = value[0]
        if isinstance(index, int | np.integer) and 0 <= int(index) < len(space.spaces):
            return (index, from_plain(space.spaces[int(index)], value[1]))
        return value
    if isinstance(space, spaces.Dict) and isinstance(value, dict):
        subs = space.spaces
        return {key: from_plain(subs[key], item) if key in subs else item for key, item in value.items()}
    if isinstance(space, spaces.Tuple) and isinstance(value, tuple) and len(value) == len(space.spaces):
        return tuple(from_plain(sub, item) for sub, item in zip(space.spaces, value, strict=True))
    return value
