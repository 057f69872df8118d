"""Shared-memory batch buffers: one segment per pool, numpy views per array.

The coordinator *creates* the segment (and alone unlinks it); workers *attach* to it by name.
A segment holds, for ``num_envs`` slots::

    obs/<leaf>      [num_envs, *leaf.shape]    one array per leaf of the observation space
    act/<leaf>      [num_envs, *leaf.shape]    one array per leaf of the action space
    reward          [num_envs] float64
    terminated      [num_envs] bool
    truncated       [num_envs] bool

A *leaf* is one Box-like part of a (possibly nested Dict/Tuple) space, named by its *path*
(dict keys and tuple indices). This module imports no gymnasium, so HTTP workers stay light;
:mod:`pool_env.spaces` turns gymnasium spaces into leaves.

Segment names are ``pool_env_<owner pid>_<random>``; :func:`sweep_orphans` unlinks segments
whose owner is dead (after a ``kill -9`` of a trainer whose resource tracker also died).

On Python < 3.13, attaching a ``SharedMemory`` registers it with the attaching process's
resource tracker, which would unlink it when that process exits (bpo-39959); :func:`attach`
avoids that registration, so a worker exiting never destroys the pool's buffers.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np
import psutil

__all__ = [
    "SEGMENT_PREFIX",
    "BatchBuffers",
    "BatchLayout",
    "Leaf",
    "attach",
    "build_structure",
    "create",
    "list_segments",
    "sweep_orphans",
]

SEGMENT_PREFIX = "pool_env_"
_ALIGN = 64
_SEGMENT_RE = re.compile(rf"^{SEGMENT_PREFIX}(\d+)_[0-9a-f]+$")

PathKey = str | int


@dataclass(frozen=True)
class Leaf:
    """One array-shaped part of a space: where it sits in the structure, its dtype and shape."""

    path: tuple[PathKey, ...]
    dtype: str
    shape: tuple[int, ...]

    def to_wire(self) -> list[Any]:
        """``[path, dtype, shape]`` for msgpack."""
        return [list(self.path), self.dtype, list(self.shape)]

    @classmethod
    def from_wire(cls, data: Sequence[Any]) -> Leaf:
        """Inverse of :meth:`to_wire`."""
        path, dtype, shape = data
        return cls(tuple(path), str(dtype), tuple(int(n) for n in shape))


@dataclass(frozen=True)
class BatchLayout:
    """Which arrays a pool's segment holds, and where."""

    num_envs: int
    obs: tuple[Leaf, ...]
    act: tuple[Leaf, ...]

    def arrays(self) -> Iterator[tuple[str, np.dtype[Any], tuple[int, ...]]]:
        """``(name, dtype, full shape)`` of every array, in segment order."""
        n = self.num_envs
        for i, leaf in enumerate(self.obs):
            yield f"obs/{i}", np.dtype(leaf.dtype), (n, *leaf.shape)
        for i, leaf in enumerate(self.act):
            yield f"act/{i}", np.dtype(leaf.dtype), (n, *leaf.shape)
        yield "reward", np.dtype(np.float64), (n,)
        yield "terminated", np.dtype(np.bool_), (n,)
        yield "truncated", np.dtype(np.bool_), (n,)

    def offsets(self) -> tuple[dict[str, int], int]:
        """Byte offset of each array and the total size."""
        offsets: dict[str, int] = {}
        position = 0
        for name, dtype, shape in self.arrays():
            offsets[name] = position
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            position += -(-max(size, 1) // _ALIGN) * _ALIGN
        return offsets, max(position, _ALIGN)

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-able dict."""
        return {
            "num_envs": self.num_envs,
            "obs": [leaf.to_wire() for leaf in self.obs],
            "act": [leaf.to_wire() for leaf in self.act],
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> BatchLayout:
        """Inverse of :meth:`to_wire`."""
        return cls(
            int(data["num_envs"]),
            tuple(Leaf.from_wire(x) for x in data["obs"]),
            tuple(Leaf.from_wire(x) for x in data["act"]),
        )


class BatchBuffers:
    """Numpy views over one pool segment.

    Attributes:
        layout: what the segment holds.
        obs: one ``[num_envs, *shape]`` array per observation leaf.
        act: one ``[num_envs, *shape]`` array per action leaf.
        reward, terminated, truncated: ``[num_envs]`` arrays.
    """

    layout: BatchLayout
    obs: list[np.ndarray]
    act: list[np.ndarray]
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def __init__(self, segment: shared_memory.SharedMemory, layout: BatchLayout, owner: bool) -> None:
        self._segment: shared_memory.SharedMemory | None = segment
        self._owner = owner
        self.layout = layout
        offsets, _ = layout.offsets()
        views: dict[str, np.ndarray] = {}
        for name, dtype, shape in layout.arrays():
            views[name] = np.ndarray(shape, dtype=dtype, buffer=segment.buf, offset=offsets[name])
        self.obs = [views[f"obs/{i}"] for i in range(len(layout.obs))]
        self.act = [views[f"act/{i}"] for i in range(len(layout.act))]
        self.reward = views["reward"]
        self.terminated = views["terminated"]
        self.truncated = views["truncated"]

    @property
    def name(self) -> str:
        """The segment name (what workers attach to)."""
        if self._segment is None:
            raise ValueError("buffers are closed")
        return self._segment.name

    def close(self) -> None:
        """Drop the views and the mapping; the owner also unlinks the segment. Idempotent."""
        segment, self._segment = self._segment, None
        if segment is None:
            return
        self.obs, self.act = [], []
        del self.reward, self.terminated, self.truncated
        with contextlib.suppress(BufferError):
            segment.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                segment.unlink()

    def __enter__(self) -> BatchBuffers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def create(layout: BatchLayout) -> BatchBuffers:
    """Create a zeroed segment for ``layout``, owned (and later unlinked) by this process.

    Raises:
        OSError: with the size needed, when ``/dev/shm`` is too small or unavailable.
    """
    _, size = layout.offsets()
    name = f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
    try:
        segment = shared_memory.SharedMemory(name=name, create=True, size=size)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create a shared-memory segment of {size} bytes: {exc}") from exc
    try:
        # Reserve the pages now: a too-small /dev/shm (64 MB in default containers) fails here
        # with ENOSPC naming the size, instead of a SIGBUS in whichever process writes first.
        os.posix_fallocate(segment._fd, 0, size)  # type: ignore[attr-defined]
    except OSError as exc:
        segment.close()
        segment.unlink()
        raise OSError(
            exc.errno, f"/dev/shm has no room for a shared-memory segment of {size} bytes ({exc.strerror})"
        ) from exc
    return BatchBuffers(segment, layout, owner=True)


def attach(name: str, layout: BatchLayout) -> BatchBuffers:
    """Attach to an existing segment without registering it for destruction at our exit."""
    if sys.version_info >= (3, 13):  # pragma: no cover - not the CI interpreter
        segment = shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg,unused-ignore]
    else:
        original = resource_tracker.register
        resource_tracker.register = lambda *args, **kwargs: None
        try:
            segment = shared_memory.SharedMemory(name=name)
        finally:
            resource_tracker.register = original
    return BatchBuffers(segment, layout, owner=False)


def list_segments(directory: str = "/dev/shm") -> list[str]:
    """Names of the pool_env segments that exist now."""
    try:
        return sorted(name for name in os.listdir(directory) if name.startswith(SEGMENT_PREFIX))
    except FileNotFoundError:
        return []


def sweep_orphans(directory: str = "/dev/shm") -> list[str]:
    """Unlink pool_env segments whose owner process is gone; return their names."""
    removed = []
    for name in list_segments(directory):
        match = _SEGMENT_RE.match(name)
        if match is None or psutil.pid_exists(int(match.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def build_structure(leaves: Sequence[Leaf], values: Sequence[Any]) -> Any:
    """Nest ``values`` (one per leaf) back into the dict/tuple structure the leaf paths describe.

    A single leaf with an empty path is returned as is.
    """
    if len(leaves) == 1 and not leaves[0].path:
        return values[0]
    root: dict[PathKey, Any] = {}
    for leaf, value in zip(leaves, values, strict=True):
        node = root
        for key in leaf.path[:-1]:
            node = node.setdefault(key, {})
        node[leaf.path[-1]] = value
    return _freeze(root)


def _freeze(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    frozen = {key: _freeze(value) for key, value in node.items()}
    if frozen and all(isinstance(key, int) for key in frozen):
        return tuple(frozen[i] for i in range(len(frozen)))
    return frozen


def leaf_value(value: Any, path: tuple[PathKey, ...]) -> Any:
    """The part of a nested observation/action that ``path`` names."""
    for key in path:
        value = value[key]
    return value
