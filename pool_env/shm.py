"""Shared-memory batch buffers: one segment per pool, numpy views per array.

The coordinator *creates* the segment (and alone unlinks it); workers *attach* to it by name.
A segment holds, for ``num_envs`` slots::

    obs/<leaf>      [num_envs, *leaf.shape]    one array per leaf of the observation space
    obs1/<leaf>     [num_envs, *leaf.shape]    a second bank of them, with ``obs_banks=2``
    obs_bank        [num_envs] uint8           each slot's current bank, with ``obs_banks=2``
    act/<leaf>      [num_envs, *leaf.shape]    one array per leaf of the action space
    reward          [num_envs] float64
    terminated      [num_envs] bool
    truncated       [num_envs] bool
    control         [control_words] int64   the fast path's sequence words (pool_env.fastpath), if any

A *leaf* is one Box-like part of a (possibly nested Dict/Tuple) space, named by its *path*
(dict keys and tuple indices). With two observation banks a worker writes a slot's new
observation into the bank that is not its current one, so the previous observation stays intact
until the trainer took the new one (:mod:`pool_env.banks`). This module imports no gymnasium,
so HTTP workers stay light; :mod:`pool_env.spaces` turns gymnasium spaces into leaves.

Segment names are ``pool_env_<owner pid>_<random>``; :func:`sweep_orphans` unlinks segments
whose owner is dead (after a ``kill -9`` of a trainer whose resource tracker also died). A pid
proves nothing across PID namespaces (containers sharing ``/dev/shm``), so the owner holds an
``flock`` on its segment for its whole life (:mod:`pool_env.ownership`) and the sweep removes
only segments it can lock: the segment is made under a staging name, locked, sized, and only
then linked under its final name, so no sweeper ever sees an unlocked live segment.

The pages are reserved at creation (``posix_fallocate``): a ``/dev/shm`` too small (64 MB in
default containers) fails there with :class:`~pool_env.errors.SharedMemoryError` naming the size
needed and the fix (``--shm-size``), never with a SIGBUS in whichever process writes first.

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
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np
import psutil

from pool_env import ownership
from pool_env.errors import SharedMemoryError

__all__ = [
    "MESSAGE_DTYPE",
    "SEGMENT_PREFIX",
    "SHM_DIR",
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
SHM_DIR = "/dev/shm"
"""Where POSIX shared memory lives on Linux (``shm_open`` names are files here)."""
_ALIGN = 64
_STAGING = ".staging"
_STAGING_GRACE = 60.0  # seconds: a staging file younger than this may be a segment being made
_SEGMENT_RE = re.compile(rf"^{SEGMENT_PREFIX}(\d+)_[0-9a-f]+({re.escape(_STAGING)})?$")
_MIB = 1 << 20

PathKey = str | int

MESSAGE_DTYPE = "|O"
"""The dtype of a leaf without a fixed-size array form (Text, Sequence, Graph, custom spaces): its
values travel in the worker's messages, not in shared memory (``AsyncVectorEnv(shared_memory=False)``
sends everything so); the segment keeps one unused byte per slot in its place."""


@dataclass(frozen=True)
class Leaf:
    """One array-shaped part of a space: where it sits in the structure, its dtype and shape."""

    path: tuple[PathKey, ...]
    dtype: str
    shape: tuple[int, ...]

    @property
    def by_message(self) -> bool:
        """Whether this leaf's values travel in messages (:data:`MESSAGE_DTYPE`)."""
        return self.dtype == MESSAGE_DTYPE

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
    """Which arrays a pool's segment holds, and where.

    ``obs_tree``/``act_tree`` (see :func:`build_structure`) keep the exact nesting of the spaces
    (int keys of a Dict, empty Dicts), which leaf paths alone cannot tell; ``None`` derives the
    nesting from the paths.
    """

    num_envs: int
    obs: tuple[Leaf, ...]
    act: tuple[Leaf, ...]
    obs_tree: Any = field(default=None, compare=False)
    act_tree: Any = field(default=None, compare=False)
    control_words: int = 0
    obs_banks: int = 1
    """1, or 2 for double-buffered observations (:mod:`pool_env.banks`)."""

    def arrays(self) -> Iterator[tuple[str, np.dtype[Any], tuple[int, ...]]]:
        """``(name, dtype, full shape)`` of every array, in segment order."""
        n = self.num_envs
        for i, leaf in enumerate(self.obs):
            yield f"obs/{i}", *_array_of(leaf, n)
        if self.obs_banks == 2:
            for i, leaf in enumerate(self.obs):
                yield f"obs1/{i}", *_array_of(leaf, n)
            yield "obs_bank", np.dtype(np.uint8), (n,)
        for i, leaf in enumerate(self.act):
            yield f"act/{i}", *_array_of(leaf, n)
        yield "reward", np.dtype(np.float64), (n,)
        yield "terminated", np.dtype(np.bool_), (n,)
        yield "truncated", np.dtype(np.bool_), (n,)
        if self.control_words:
            yield "control", np.dtype(np.int64), (self.control_words,)

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
            "obs_tree": self.obs_tree,
            "act_tree": self.act_tree,
            "control_words": self.control_words,
            "obs_banks": self.obs_banks,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> BatchLayout:
        """Inverse of :meth:`to_wire`."""
        return cls(
            int(data["num_envs"]),
            tuple(Leaf.from_wire(x) for x in data["obs"]),
            tuple(Leaf.from_wire(x) for x in data["act"]),
            data.get("obs_tree"),
            data.get("act_tree"),
            control_words=int(data.get("control_words", 0)),
            obs_banks=int(data.get("obs_banks", 1)),
        )


def _array_of(leaf: Leaf, n: int) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The dtype and shape of ``leaf``'s batch array (a one-byte placeholder for a message leaf)."""
    if leaf.by_message:
        return np.dtype(np.uint8), (n,)
    return np.dtype(leaf.dtype), (n, *leaf.shape)


class BatchBuffers:
    """Numpy views over one pool segment.

    Attributes:
        layout: what the segment holds.
        obs: one ``[num_envs, *shape]`` array per observation leaf (bank 0).
        obs_banks: ``[obs]``, or ``[obs, bank 1's arrays]`` with ``layout.obs_banks == 2``.
        obs_bank: ``[num_envs]`` uint8, each slot's current bank (``None`` with one bank).
        act: one ``[num_envs, *shape]`` array per action leaf.
        reward, terminated, truncated: ``[num_envs]`` arrays.
        control: ``[control_words]`` int64 (``None`` without control words).
    """

    layout: BatchLayout
    obs: list[np.ndarray]
    obs_banks: list[list[np.ndarray]]
    obs_bank: np.ndarray | None
    act: list[np.ndarray]
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    control: np.ndarray | None

    def __init__(
        self, segment: shared_memory.SharedMemory, layout: BatchLayout, owner: bool, lock_fd: int | None = None
    ) -> None:
        self._segment: shared_memory.SharedMemory | None = segment
        self._owner = owner
        self._lock_fd = lock_fd  # the owner's flock on the segment: proof it is alive
        self.layout = layout
        offsets, _ = layout.offsets()
        views: dict[str, np.ndarray] = {}
        for name, dtype, shape in layout.arrays():
            views[name] = np.ndarray(shape, dtype=dtype, buffer=segment.buf, offset=offsets[name])
        self.obs = [views[f"obs/{i}"] for i in range(len(layout.obs))]
        self.obs_banks = [self.obs]
        if layout.obs_banks == 2:
            self.obs_banks.append([views[f"obs1/{i}"] for i in range(len(layout.obs))])
        self.obs_bank = views.get("obs_bank")
        self.act = [views[f"act/{i}"] for i in range(len(layout.act))]
        self.reward = views["reward"]
        self.terminated = views["terminated"]
        self.truncated = views["truncated"]
        self.control = views.get("control")

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
        self.obs, self.act, self.obs_banks, self.obs_bank = [], [], [], None
        del self.reward, self.terminated, self.truncated
        self.control = None
        with contextlib.suppress(BufferError):
            segment.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                segment.unlink()
        ownership.release(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> BatchBuffers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def create(layout: BatchLayout) -> BatchBuffers:
    """Create a zeroed segment for ``layout``, owned (and later unlinked) by this process.

    On Linux the segment is locked by its owner before it appears under its final name (see
    the module docstring), and its pages are reserved at once.

    Raises:
        SharedMemoryError: ``/dev/shm`` has no room for the segment (names the size and the fix).
        OSError: shared memory is unavailable for another reason.
    """
    if layout.obs_banks == 2 and not _has_room(layout.offsets()[1]):
        layout = replace(layout, obs_banks=1)  # a second bank is a speed-up, never a reason to fail
    _, size = layout.offsets()
    name = f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
    if not os.path.isdir(SHM_DIR):  # pragma: no cover - not Linux: no file to lock
        segment = shared_memory.SharedMemory(name=name, create=True, size=size)
        return BatchBuffers(segment, layout, owner=True)
    _check_room(size, layout)
    path = os.path.join(SHM_DIR, name)
    staging = path + _STAGING
    fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        ownership.lock(fd)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            raise _no_room(size, layout, f"reserving it failed: {exc.strerror}") from exc
        os.link(staging, path)  # appears locked: a sweeper can never take it for stale
    except BaseException:
        ownership.release(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
    try:
        segment = shared_memory.SharedMemory(name=name)
    except BaseException:
        ownership.release(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return BatchBuffers(segment, layout, owner=True, lock_fd=fd)


def _has_room(size: int) -> bool:
    """Whether ``/dev/shm`` shows ``size`` free bytes (``True`` when it cannot tell)."""
    try:
        stats = os.statvfs(SHM_DIR)
    except OSError:  # pragma: no cover - not Linux
        return True
    return bool(stats.f_bavail * stats.f_frsize >= size)


def _check_room(size: int, layout: BatchLayout) -> None:
    """Fail before creating anything when ``/dev/shm`` visibly lacks ``size`` free bytes."""
    if not _has_room(size):
        raise _no_room(size, layout, None)


def _no_room(size: int, layout: BatchLayout, cause: str | None) -> SharedMemoryError:
    """The one-line error for a ``/dev/shm`` too small: the size needed and how to get it."""
    try:
        stats = os.statvfs(SHM_DIR)
        total, free = stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize
    except OSError:  # pragma: no cover
        total, free = 0, -1
    used = max(0, total - free)
    want_mib = -(-(used + size) * 5 // 4 // _MIB)  # what is used already + this pool, 25 % spare
    return SharedMemoryError(
        f"{SHM_DIR} has {_mib(free)} free of {_mib(total)}, but this pool's shared-memory buffers need "
        f"{_mib(size)} ({size} bytes for {layout.num_envs} envs){f'; {cause}' if cause else ''}. "
        f"Give the container more shared memory (docker run --shm-size={max(want_mib, 64)}m, or in Kubernetes "
        f"an emptyDir with medium: Memory mounted at {SHM_DIR}), free some, or use fewer envs",
        size,
        free,
    )


def _mib(size: int) -> str:
    return "? MiB" if size < 0 else f"{size / _MIB:.1f} MiB"


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


def sweep_orphans(directory: str = SHM_DIR) -> list[str]:
    """Unlink pool_env segments proven stale; return their names.

    Stale means both: nobody holds the segment's lock (its owner, in whatever PID namespace, is
    gone) and no process of ours has the pid in its name (a pool of an older pool_env that
    holds no lock). Staging files are left alone while they may still be in the making.
    """
    removed = []
    now = time.time()
    for name in list_segments(directory):
        match = _SEGMENT_RE.match(name)
        if match is None or psutil.pid_exists(int(match.group(1))):
            continue
        path = os.path.join(directory, name)
        if match.group(2):
            with contextlib.suppress(OSError):
                if now - os.stat(path).st_mtime < _STAGING_GRACE:
                    continue
        fd = ownership.claim(path)
        if fd is None:  # its owner holds the lock: alive, maybe in another PID namespace
            continue
        try:
            if ownership.still_at(fd, path):
                os.unlink(path)
                removed.append(name)
        except FileNotFoundError:
            pass
        finally:
            ownership.release(fd)
    return removed


def build_structure(leaves: Sequence[Leaf], values: Sequence[Any], tree: Any = None) -> Any:
    """Nest ``values`` (one per leaf) back into the dict/tuple structure of the space.

    ``tree`` describes the structure exactly: a leaf index, ``{"dict": [[key, tree], ...]}`` or
    ``{"tuple": [tree, ...]}`` (:func:`pool_env.spaces.tree_of` makes it). Without it, the
    structure is derived from the leaf paths (int-keyed dicts then come back as tuples and empty
    dicts are lost). A single leaf with an empty path is returned as is.
    """
    if tree is not None:
        return _from_tree(tree, values)
    if len(leaves) == 1 and not leaves[0].path:
        return values[0]
    root: dict[PathKey, Any] = {}
    for leaf, value in zip(leaves, values, strict=True):
        node = root
        for key in leaf.path[:-1]:
            node = node.setdefault(key, {})
        node[leaf.path[-1]] = value
    return _freeze(root)


def _from_tree(tree: Any, values: Sequence[Any]) -> Any:
    if isinstance(tree, int):
        return values[tree]
    if "dict" in tree:
        return {key: _from_tree(sub, values) for key, sub in tree["dict"]}
    return tuple(_from_tree(sub, values) for sub in tree["tuple"])


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
