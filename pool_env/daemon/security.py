"""Who may talk to a daemon: private ipc sockets, CURVE keys, the client allow-list.

* ``ipc://`` sockets live in a directory only the owner can enter (0700) and are chmod 0600:
  the OS user is the trust boundary (same-host clients also share the pool's shared memory).
* A default ``ipc://`` directory is ``<runtime dir>/pool_env_daemon_<pid>_<random>``, locked by
  its daemon for its whole life; a daemon killed with ``kill -9`` leaves it behind, and the next
  daemon to start removes it (only this user's, only once its owner pid is gone and its lock free).
* ``tcp://`` requires CURVE: the daemon has a secret key, clients know its public key, and a
  ZAP handler (:class:`zmq.auth.thread.ThreadAuthenticator`) admits only the public keys on the
  allow-list. A refused client gets no reply at all (that is how CURVE refuses), so the client
  turns a silent handshake into a clear "refused or unreachable" error after its timeout.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from pool_env import ownership
from pool_env.errors import SpecError, TransportError
from pool_env.supervisor.rundir import make_locked, sweep_stale_run_dirs

__all__ = [
    "DAEMON_DIR_PREFIX",
    "DAEMON_DIR_RE",
    "AllowList",
    "CurveClientKeys",
    "IpcSocket",
    "client_keys",
    "keygen",
    "load_public_key",
    "load_secret_key",
    "prepare_ipc",
    "start_authenticator",
]

log = logging.getLogger(__name__)

DAEMON_DIR_PREFIX = "pool_env_daemon_"
"""The name of a daemon's default ipc directory: this, its pid, ``_``, 8 hex digits."""
DAEMON_DIR_RE = re.compile(rf"^{DAEMON_DIR_PREFIX}(\d+)_[0-9a-f]{{8}}$")


def keygen(directory: str, name: str) -> tuple[str, str]:
    """Write a CURVE key pair ``NAME.key`` (public) and ``NAME.key_secret`` (mode 0600).

    Returns:
        The paths of the public and the secret key file.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)
    return str(public), str(secret)


def load_public_key(path: str) -> bytes:
    """The z85 public key in a key file (public or secret).

    Raises:
        SpecError: unreadable or not a key file.
    """
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SpecError(f"curve key: cannot read a public key from {path}: {exc}") from exc
    return public


def load_secret_key(path: str) -> tuple[bytes, bytes]:
    """The z85 ``(public, secret)`` pair in a secret key file.

    Raises:
        SpecError: unreadable, or the file holds no secret key.
    """
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SpecError(f"curve key: cannot read {path}: {exc}") from exc
    if secret is None:
        raise SpecError(f"curve key: {path} holds no secret key (use the .key_secret file)")
    return public, secret


@dataclass(frozen=True)
class CurveClientKeys:
    """CURVE keys of a client: the daemon's public key and this client's key pair (z85)."""

    server_public: bytes
    public: bytes
    secret: bytes

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Configure ``sock`` as a CURVE client."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def client_keys(server_key: str | None, client_secret_key: str | None) -> CurveClientKeys | None:
    """A client's CURVE keys from the daemon's public key file and this client's secret key file
    (``None`` when neither is given).

    Raises:
        SpecError: only one of the two, or a key file that cannot be read.
    """
    if server_key is None and client_secret_key is None:
        return None
    if server_key is None or client_secret_key is None:
        raise SpecError("server_key and client_secret_key go together (CURVE)")
    public, secret = load_secret_key(client_secret_key)
    return CurveClientKeys(load_public_key(server_key), public, secret)


class AllowList:
    """The ZAP credentials callback: admit listed public keys, log one WARNING per refusal."""

    def __init__(self, public_keys: Sequence[bytes]) -> None:
        self.allowed = frozenset(public_keys)

    def callback(self, domain: str, key: bytes) -> bool:
        """Whether the client with public ``key`` may connect."""
        if key in self.allowed:
            return True
        log.warning("client refused: CURVE public key %s is not on the allow-list", key.decode(errors="replace"))
        return False


def start_authenticator(
    context: zmq.Context[zmq.Socket[bytes]], client_key_files: Sequence[str]
) -> ThreadAuthenticator:
    """Start a ZAP handler on ``context`` that admits only the given clients' public keys."""
    allow = AllowList([load_public_key(path) for path in client_key_files])
    auth = ThreadAuthenticator(context, log=logging.getLogger("pool_env.daemon.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=allow)
    return auth


class IpcSocket:
    """An ``ipc://`` path prepared for binding: its directory (0700) and stale-file handling."""

    def __init__(self, path: str, created_dir: str | None, lock_fd: int | None = None) -> None:
        self.path = path
        self.created_dir = created_dir
        self._lock_fd = lock_fd  # held while we live: our directory is never swept as stale

    @property
    def endpoint(self) -> str:
        """``ipc://PATH``."""
        return f"ipc://{self.path}"

    def secure(self) -> None:
        """After binding: only the owner may connect."""
        os.chmod(self.path, 0o600)

    def remove(self) -> None:
        """Remove the socket file, and the directory if we created it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self.created_dir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self.created_dir)
        ownership.release(self._lock_fd)
        self._lock_fd = None


def prepare_ipc(endpoint: str | None, runtime_dir: str) -> IpcSocket:
    """Make sure ``endpoint`` (or a fresh private one) can be bound, without stealing it.

    zmq silently unlinks and re-binds an existing ipc path, which would hijack a running
    daemon's socket; so probe the path first: if something accepts a connection there, refuse.

    Raises:
        TransportError: another daemon is serving on the path, or its directory cannot be created.
        SpecError: the path is too long for a Unix socket.
    """
    if endpoint is None:
        # A daemon killed with kill -9 cannot remove its directory: the next one sweeps those
        # proven abandoned (this user's, owner pid gone and its lock free: supervisor.rundir).
        for stale in sweep_stale_run_dirs([runtime_dir], DAEMON_DIR_RE):
            log.info("removed the directory of a daemon that is gone: %s", stale)
        directory, lock_fd = make_locked(runtime_dir, f"{DAEMON_DIR_PREFIX}{os.getpid()}_")
        return IpcSocket(os.path.join(directory, "pool.sock"), directory, lock_fd)
    path = endpoint[len("ipc://") :]
    if len(path.encode()) > 107:
        raise SpecError(f"bind: the ipc path {path!r} is longer than the 107 bytes a Unix socket allows")
    directory = os.path.dirname(os.path.abspath(path))
    created = None
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, mode=0o700)
        except OSError as exc:
            raise TransportError(
                f"cannot use {endpoint}: cannot create its directory {directory} ({exc.strerror}); "
                "choose an ipc path in a directory you can write to"
            ) from exc
        created = directory
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOTSOCK, errno.ENOENT):
                raise TransportError(f"cannot use {endpoint}: {exc}") from exc
            log.warning("removing the stale socket file %s (nothing listens on it)", path)
            os.unlink(path)
        else:
            raise TransportError(
                f"another daemon is already serving {endpoint}; stop it first or choose another --bind"
            )
        finally:
            probe.close()
    return IpcSocket(path, created)
