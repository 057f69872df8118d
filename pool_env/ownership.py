"""Proof that a leftover resource is stale: its owner holds an ``flock`` on it for its whole life.

A pid in a name proves nothing across PID namespaces: two containers sharing ``/dev/shm``
(``--ipc=host``, pods) see different processes under the same pid. An ``flock`` belongs to an
open file description, which the kernel releases when its owner dies (also by ``kill -9``) and
which every process sees alike, whatever its namespace. So:

* the owner takes :func:`hold` on the resource (a file, or a directory) as it creates it, and
  keeps the returned descriptor open until it removes the resource itself;
* a sweeper calls :func:`claim`: it gets a descriptor only when nobody holds the lock, and
  removes the resource while it holds it (checking with :func:`still_at` that the path still
  names the file it locked).

Used for shared-memory segments (:mod:`pool_env.shm`) and for private socket directories.
Linux ``flock(2)`` semantics; descriptors are opened close-on-exec, so worker processes never
inherit (and never prolong) a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

__all__ = ["claim", "hold", "lock", "release", "still_at"]


def hold(path: str) -> int:
    """Lock ``path`` (a file or a directory) as its owner; the descriptor keeps the lock.

    Raises:
        OSError: ``path`` cannot be opened, or someone else holds its lock.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        lock(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock(fd: int) -> None:
    """Take the owner's lock on an open descriptor (one just created with ``O_EXCL``, say).

    Raises:
        BlockingIOError: someone else holds it.
    """
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def claim(path: str) -> int | None:
    """A locked descriptor of ``path`` if nobody holds its lock (it is stale), else ``None``.

    ``None`` too when ``path`` is gone or cannot be opened (another user's): never remove what
    cannot be proven stale. The caller removes the resource, then :func:`release` s the descriptor.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: its owner is alive
        os.close(fd)
        return None
    return fd


def still_at(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file ``fd`` refers to (not replaced since it was opened)."""
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def release(fd: int | None) -> None:
    """Close ``fd`` (dropping its lock). ``None`` and closed descriptors are ignored."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
