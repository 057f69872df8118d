"""Run the reference server in this process: :func:`bind_socket` and :func:`serve`.

``python -m pool_env.refserver --host 127.0.0.1 --port 8001 --p-http-500 0.1`` runs it standalone
(the flags are ``pool-env ref-server``'s, :mod:`pool_env.cli.ref_server`);
``--exit-with-parent`` (passed by :class:`pool_env.refserver.process.RefServer`) makes it exit when
its parent process dies, so a test run that is killed leaves no server behind.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from pool_env.refserver.faults import FaultConfig
from pool_env.refserver.limits import ServerLimits

__all__ = ["bind_socket", "serve"]

logger = logging.getLogger(__name__)

PARENT_POLL_S = 0.5


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``SO_REUSEADDR``, as uvicorn binds), for :func:`serve`.

    Raises:
        OSError: The address is in use, cannot be assigned, or ``host`` does not resolve.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    host: str,
    port: int,
    faults: FaultConfig,
    exit_with_parent: bool = False,
    limits: ServerLimits | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve the reference API on ``host:port`` until SIGINT/SIGTERM (blocks).

    Uses uvicorn with one worker, no access log and room for many concurrent keep-alive clients.
    ``limits`` are the start-up limits (default :class:`ServerLimits`); ``sock`` is a socket
    already bound to ``host:port`` (:func:`bind_socket`), else uvicorn binds it.
    """
    import uvicorn

    from pool_env.refserver.app import create_app

    if exit_with_parent:
        _watch_parent(os.getppid())
    config = uvicorn.Config(
        create_app(faults, limits),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        workers=1,
        limit_concurrency=4096,
        backlog=2048,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=1,
        proxy_headers=False,
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=None if sock is None else [sock])


def _watch_parent(parent_pid: int) -> None:
    """Start a daemon thread that terminates this process when its parent changes (parent died)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        logger.warning("parent process %d is gone; reference server exits", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5.0)
        os._exit(1)

    threading.Thread(target=watch, name="refserver-parent-watch", daemon=True).start()
