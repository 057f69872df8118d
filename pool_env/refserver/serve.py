"""Run the reference server in this process: :func:`bind_socket` and :func:`serve`.

``python -m pool_env.refserver --host 127.0.0.1 --port 8001 --p-http-500 0.1`` runs it standalone
(the flags are ``pool-env ref-server``'s, :mod:`pool_env.cli.ref_server`);
``--exit-with-parent`` (passed by :class:`pool_env.refserver.process.RefServer`) makes it exit when
its parent process dies, so a test run that is killed leaves no server behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pool_env.refserver.faults import FaultConfig
from pool_env.refserver.limits import ServerLimits

if TYPE_CHECKING:
    import uvicorn

__all__ = ["bind_socket", "serve"]

logger = logging.getLogger(__name__)

PARENT_POLL_S = 0.5


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``SO_REUSEADDR``, as uvicorn binds), for :func:`serve`.

    Raises:
        OSError: The address is in use, cannot be assigned, or ``host`` does not resolve.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections whose socket says TCP
    # (base_events._set_nodelay), and accepted sockets inherit the listening socket's proto. With
    # 0, Nagle's algorithm held back every small reply for the client's delayed ACK (≈ 40 ms per
    # request: the demo took 25 s instead of 9).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
    server = uvicorn.Server(config)
    with _stop_signals_handled_by(server):
        server.run(sockets=None if sock is None else [sock])


@contextlib.contextmanager
def _stop_signals_handled_by(server: uvicorn.Server) -> Iterator[None]:
    """SIGTERM/SIGINT go to uvicorn's ``handle_exit`` before, during and after ``server.run``.

    uvicorn (``Server.capture_signals``, 0.29+) installs ``handle_exit`` while it serves, then
    restores the handlers it found and raises the signal it stopped on again; with Python's defaults
    the process would die by SIGTERM (exit 143) or KeyboardInterrupt after its graceful shutdown.
    With ``handle_exit`` found there, the re-raised signal only repeats the stop request, so the
    process exits 0 like ``pool-env serve``; a signal during start-up stops it gracefully too.
    The original handlers are restored on the way out (as uvicorn does).
    """
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    originals = {signum: signal.signal(signum, server.handle_exit) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in originals.items():
            signal.signal(signum, handler)


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
