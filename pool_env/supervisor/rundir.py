"""The pool's private run directory: the control socket, the heartbeat board, worker stderr.

``<TMPDIR>/pool_env_<owner pid>_<random>``, mode 0700 (only the owner can connect to the
socket). Two machine limits are handled here:

* an ipc socket path is at most :data:`IPC_PATH_MAX` bytes (``sun_path``): with a long
  ``TMPDIR`` the directory goes to ``/tmp`` instead, and if that does not fit or cannot be
  written either, a :class:`~pool_env.errors.PoolEnvError` names ``TMPDIR`` and the limit;
* a trainer killed with ``kill -9`` (and its workers with it) cannot remove its directory, so
  every new pool sweeps the stale ones. Stale is *proven*, not guessed from a pid (which may
  belong to another PID namespace sharing ``/tmp``): the owner holds an ``flock`` on the
  directory for its whole life (:mod:`pool_env.ownership`, as for shared-memory segments; the
  directory is made under a staging name and renamed once locked, so a sweeper never sees it
  unlocked), and it is removed only when that lock can be taken **and** the owner pid is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile

import psutil

from pool_env import ownership
from pool_env.errors import PoolEnvError

__all__ = ["FALLBACK_DIR", "IPC_PATH_MAX", "RUN_DIR_PREFIX", "RunDir", "make_locked", "sweep_stale_run_dirs"]

RUN_DIR_PREFIX = "pool_env_"
#: The longest ipc socket path (``sizeof(sockaddr_un.sun_path) - 1`` on Linux).
IPC_PATH_MAX = 107
#: Where the run directory goes when ``TMPDIR`` is too long for a socket path.
FALLBACK_DIR = "/tmp"
SOCKET_NAME = "control"
_RANDOM_CHARS = 8  # what tempfile.mkdtemp adds
_NAME_RE = re.compile(rf"^{RUN_DIR_PREFIX}(\d+)_[A-Za-z0-9_]{{{_RANDOM_CHARS}}}$")


class RunDir:
    """A fresh private directory, locked by this process until :meth:`close`.

    Args:
        bases: where to try, in order (default: ``tempfile.gettempdir()``, then :data:`FALLBACK_DIR`).

    Raises:
        PoolEnvError: no base gives a socket path within :data:`IPC_PATH_MAX` bytes, or none is writable.
    """

    path: str
    endpoint: str
    _lock_fd: int | None

    def __init__(self, bases: list[str] | None = None) -> None:
        bases = bases if bases is not None else _default_bases()
        sweep_stale_run_dirs(bases)
        prefix = f"{RUN_DIR_PREFIX}{os.getpid()}_"
        errors = []
        for base in bases:
            socket_path = os.path.join(base, prefix + "x" * _RANDOM_CHARS, SOCKET_NAME)
            if len(os.fsencode(socket_path)) > IPC_PATH_MAX:
                errors.append(f"{base!r} gives a {len(os.fsencode(socket_path))}-byte socket path")
                continue
            try:
                self.path, self._lock_fd = make_locked(base, prefix)
            except OSError as exc:
                errors.append(f"{base!r}: {exc}")
                continue
            self.endpoint = f"ipc://{os.path.join(self.path, SOCKET_NAME)}"
            return
        raise PoolEnvError(
            f"no directory for the pool's ipc socket: {'; '.join(errors)}; ipc socket paths are limited to "
            f"{IPC_PATH_MAX} bytes: set TMPDIR to a short, writable directory (for example /tmp)"
        )

    def close(self) -> None:
        """Remove the directory, then drop the lock. Idempotent."""
        shutil.rmtree(self.path, ignore_errors=True)
        ownership.release(self._lock_fd)
        self._lock_fd = None


def _default_bases() -> list[str]:
    base = tempfile.gettempdir()
    return [base] if os.path.realpath(base) == os.path.realpath(FALLBACK_DIR) else [base, FALLBACK_DIR]


def make_locked(base: str, prefix: str) -> tuple[str, int]:
    """A new 0700 directory ``base/prefix<8 hex digits>``, already locked when it gets that name;
    its path and the lock's descriptor (release it with :func:`pool_env.ownership.release`)."""
    staging = tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}new_", dir=base)  # never matches a sweep
    fd = ownership.hold(staging)
    for _ in range(100):
        path = os.path.join(base, prefix + secrets.token_hex(_RANDOM_CHARS // 2))
        if os.path.lexists(path):
            continue
        try:
            os.rename(staging, path)
        except OSError:
            continue
        return path, fd
    ownership.release(fd)  # pragma: no cover - 100 name collisions
    shutil.rmtree(staging, ignore_errors=True)
    raise FileExistsError(f"no free directory name in {base}")


def is_stale(path: str, pattern: re.Pattern[str] = _NAME_RE) -> int | None:
    """A locked descriptor of run directory ``path`` if it is proven abandoned (owner pid gone
    and its lock free), else ``None``; the caller removes it, then releases the descriptor.
    ``pattern`` matches the directory's name, its group 1 the owner's pid."""
    match = pattern.match(os.path.basename(path))
    if match is None or psutil.pid_exists(int(match.group(1))):
        return None
    fd = ownership.claim(path)
    if fd is not None and not ownership.still_at(fd, path):
        ownership.release(fd)
        return None
    return fd


def sweep_stale_run_dirs(bases: list[str] | None = None, pattern: re.Pattern[str] = _NAME_RE) -> list[str]:
    """Remove the run directories (names matching ``pattern``, this user's) of dead owners in
    ``bases``; return their paths."""
    removed = []
    uid = os.getuid()
    for base in bases if bases is not None else _default_bases():
        with contextlib.suppress(OSError):
            for entry in os.scandir(base):
                if not entry.name.startswith(RUN_DIR_PREFIX) or not entry.is_dir(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    fd = is_stale(entry.path, pattern)
                    if fd is not None:
                        try:
                            shutil.rmtree(entry.path)
                            removed.append(entry.path)
                        finally:
                            ownership.release(fd)
    return removed
