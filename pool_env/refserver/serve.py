"""Run the reference server in this process: :func:`serve`, the command-line flags and ``main``.

``python -m pool_env.refserver --host 127.0.0.1 --port 8001 --p-http-500 0.1`` runs it standalone;
``--exit-with-parent`` (passed by :class:`pool_env.refserver.process.RefServer`) makes it exit when
its parent process dies, so a test run that is killed leaves no server behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence

from pool_env.refserver.faults import FaultConfig, fault_config_from_options
from pool_env.refserver.limits import ServerLimits, server_limits_from_options

__all__ = ["add_server_arguments", "main", "serve"]

logger = logging.getLogger(__name__)

PARENT_POLL_S = 0.5


def serve(
    host: str, port: int, faults: FaultConfig, exit_with_parent: bool = False, limits: ServerLimits | None = None
) -> None:
    """Serve the reference API on ``host:port`` until SIGINT/SIGTERM (blocks).

    Uses uvicorn with one worker, no access log and room for many concurrent keep-alive clients.
    ``limits`` are the start-up limits (default :class:`ServerLimits`).
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
    uvicorn.Server(config).run()


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


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--host --port --exit-with-parent`` and one flag per :class:`FaultConfig` field."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="TCP port (default 8001)")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process dies")
    probability = "probability in [0, 1] of "
    parser.add_argument("--p-episode-error", type=float, help=probability + "a per-env error payload")
    parser.add_argument("--p-http-500", type=float, help=probability + "answering 500 (nothing applied)")
    parser.add_argument("--p-http-503", type=float, help=probability + "answering 503 (nothing applied)")
    parser.add_argument("--latency-ms", type=float, help="latency added to every episode request")
    parser.add_argument("--per-env-ms", type=float, help="latency added per env of a vectorized request")
    parser.add_argument("--p-hang", type=float, help=probability + "hanging --hang-s after applying")
    parser.add_argument("--hang-s", type=float, help="length of a hang in seconds (default 40)")
    parser.add_argument("--p-drop", type=float, help=probability + "resetting the connection after applying")
    parser.add_argument("--fault-seed", type=int, help="seed of the fault RNG")
    parser.add_argument(
        "--max-steps-quota", type=int, help="episode-steps per user token before steps answer 429 (default 100000)"
    )
    parser.add_argument(
        "--max-num-envs", type=int, help="largest num_envs of a create and entries of a vectorized call (default 64)"
    )
    limits = parser.add_argument_group("start-up limits (fixed while the server runs)")
    limits.add_argument("--max-body-bytes", type=int, help="largest request body; 413 beyond (default 1048576)")
    limits.add_argument(
        "--num-envs-limit", type=int, help="highest max_num_envs, also via /control/faults (default 1024)"
    )
    limits.add_argument(
        "--idle-timeout-s",
        type=float,
        help="evict episodes (with all their ids) and sessions unused this long; their ids answer 404 (default 3600)",
    )
    limits.add_argument(
        "--max-live-episodes",
        type=int,
        help="live episodes one token may hold; a create beyond answers 409 (default 4096)",
    )
    limits.add_argument(
        "--no-control", dest="control", action="store_false", default=None, help="disable /control (404)"
    )
    limits.add_argument(
        "--control-token",
        default=os.environ.get("POOL_ENV_CONTROL_TOKEN") or None,
        help="require header X-Control-Token with this value on /control (403 otherwise); "
        "default $POOL_ENV_CONTROL_TOKEN",
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m pool_env.refserver``."""
    parser = argparse.ArgumentParser(
        prog="python -m pool_env.refserver",
        description="Run the challenge's reference env server (PROTOCOL.md) with optional fault injection.",
    )
    add_server_arguments(parser)
    args = vars(parser.parse_args(argv))
    try:
        faults = fault_config_from_options(**args)
        limits = server_limits_from_options(**args)
        if faults.max_num_envs > limits.num_envs_limit:
            raise ValueError(f"--max-num-envs {faults.max_num_envs} is above --num-envs-limit {limits.num_envs_limit}")
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(args["host"], args["port"], faults, exit_with_parent=args["exit_with_parent"], limits=limits)
