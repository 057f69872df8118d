"""The pool daemon: a long-running pool served to trainers over ZeroMQ (``pool-env serve``).

* :mod:`~pool_env.daemon.server` — :class:`PoolDaemon`, the event loop.
* :mod:`~pool_env.daemon.handlers` — one function per client op.
* :mod:`~pool_env.daemon.view` — the small interfaces handlers and status see of the daemon.
* :mod:`~pool_env.daemon.leases` — the lease table (pure logic).
* :mod:`~pool_env.daemon.peers` — the trainers' sockets a stopping daemon says goodbye to.
* :mod:`~pool_env.daemon.wire` — the trainer ↔ daemon protocol.
* :mod:`~pool_env.daemon.session` — the client side of one daemon connection.
* :mod:`~pool_env.daemon.heartbeat` — the client's heartbeat thread.
* :mod:`~pool_env.daemon.security` — ipc permissions, CURVE keys and the allow-list.
* :mod:`~pool_env.daemon.status` — the status document, its table, Prometheus.
* :mod:`~pool_env.daemon.config` — :class:`DaemonConfig`, spec strings, config files.
* :mod:`~pool_env.daemon.child` — ``pool-env serve`` as a child process (``--ready-json``).

Trainers use :func:`pool_env.connect`.
"""

from __future__ import annotations

from pool_env.daemon.config import DaemonConfig
from pool_env.daemon.wire import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "DaemonConfig"]
