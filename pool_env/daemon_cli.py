"""``pool-env serve``, ``pool-env status`` and ``pool-env keygen``: thin shells over the daemon API.

Every flag can come from ``POOL_ENV_SERVE_<FLAG>`` (e.g. ``POOL_ENV_SERVE_TOKEN``) and, for
``serve``, from a TOML file given with ``--config`` (same keys as the flags; flags win).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from types import FrameType
from typing import Any

import click

from pool_env.errors import PoolEnvError, SharedMemoryError

__all__ = ["keygen", "serve", "status"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        from pool_env.daemon.config import load_config_file

        try:
            ctx.default_map = {**(ctx.default_map or {}), **load_config_file(value)}
        except PoolEnvError as exc:
            raise click.BadParameter(str(exc)) from exc
    return value


@click.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="TOML file with the same keys as these flags",
)
@click.option("--spec", required=True, help="gym:ENV_ID, gym:module:factory, or http(s)://HOST:PORT")
@click.option("--token", default=None, help="user token for an http:// spec")
@click.option("--step-size", default=10, show_default=True, help="flights per step (http:// spec)")
@click.option("--envs", "num_envs", default=16, show_default=True, help="env slots in the pool")
@click.option("--workers", "num_workers", default=2, show_default=True, help="worker processes")
@click.option("--bind", default=None, help="ipc://PATH or tcp://HOST:PORT (default: a private ipc socket)")
@click.option("--lease-timeout", default=10.0, show_default=True, help="seconds without heartbeat before a lease ends")
@click.option("--step-timeout", default=None, type=float, help="seconds before a hung worker is replaced")
@click.option("--stop-timeout", default=10.0, show_default=True, help="seconds to finish in-flight steps on stop")
@click.option(
    "--curve-secret-key",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="the daemon's secret key file (pool-env keygen); required for tcp://",
)
@click.option(
    "--allow-client-key",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="public key file of a client allowed to connect (repeat)",
)
@click.option("--metrics-port", default=None, type=int, help="serve Prometheus metrics on this port")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="interface of the metrics server")
@click.option("--worker-log-level", "log_level", default="WARNING", show_default=True, help="workers' log level")
def serve(
    spec: str,
    token: str | None,
    step_size: int,
    num_envs: int,
    num_workers: int,
    bind: str | None,
    lease_timeout: float,
    step_timeout: float | None,
    stop_timeout: float,
    curve_secret_key: str | None,
    allow_client_key: tuple[str, ...],
    metrics_port: int | None,
    metrics_host: str,
    log_level: str,
) -> None:
    """Run a pool daemon until SIGTERM/SIGINT; trainers connect with ``pool_env.connect``."""
    from pool_env.config import PoolOptions
    from pool_env.daemon.config import DaemonConfig, parse_spec
    from pool_env.daemon.server import PoolDaemon

    try:
        config = DaemonConfig(
            parse_spec(spec, token, step_size), num_envs, num_workers, bind, lease_timeout, stop_timeout,
            curve_secret_key, tuple(allow_client_key), metrics_port, metrics_host,
            PoolOptions(step_timeout=step_timeout), log_level,
        )  # fmt: skip
        daemon = PoolDaemon(config)
        daemon.start()
    except PoolEnvError as exc:
        click.echo(f"pool-env serve: {exc}", err=True)
        # The machine cannot hold the pool (/dev/shm too small): a configuration error, exit 2.
        sys.exit(EXIT_UNAVAILABLE if isinstance(exc, SharedMemoryError) else EXIT_FAILED)
    originals = _install_signal_handlers(daemon)
    click.echo(f"pool-env daemon serving {daemon.endpoint} (pid {_pid()}, {num_envs} slots, {num_workers} workers)")
    sys.stdout.flush()
    try:
        daemon.serve_forever()
    finally:
        for signum, handler in originals.items():
            signal.signal(signum, handler)
    click.echo("pool-env daemon stopped")
    sys.exit(EXIT_OK)


def _pid() -> int:
    import os

    return os.getpid()


def _install_signal_handlers(daemon: Any) -> dict[int, Any]:
    """SIGTERM/SIGINT request a graceful stop; a second one stops waiting for in-flight commands.

    Handlers only set flags: raising from a handler could cut the clean-up (workers, shared
    memory, socket file) short, and that clean-up is bounded in time anyway.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        daemon.request_stop()

    originals: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        originals[signum] = signal.getsignal(signum)
        signal.signal(signum, on_signal)
    return originals


@click.command()
@click.argument("endpoint")
@click.option("--json", "as_json", is_flag=True, help="print the status document as JSON")
@click.option("--timeout", default=5.0, show_default=True, help="seconds to wait for the daemon")
@click.option("--server-key", default=None, type=click.Path(exists=True, dir_okay=False), help="daemon public key")
@click.option("--client-secret-key", default=None, type=click.Path(exists=True, dir_okay=False), help="CURVE key")
def status(endpoint: str, as_json: bool, timeout: float, server_key: str | None, client_secret_key: str | None) -> None:
    """Show a daemon's workers, leases, uptime and faults recovered."""
    from pool_env.daemon.session import fetch_status
    from pool_env.daemon.status import format_status

    try:
        document = fetch_status(endpoint, timeout, server_key, client_secret_key)
    except PoolEnvError as exc:
        click.echo(f"pool-env status: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    click.echo(json.dumps(document, indent=2, sort_keys=True) if as_json else format_status(document))


@click.command()
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, help="where to write the key files")
def keygen(name: str, directory: str) -> None:
    """Write a CURVE key pair NAME.key (public, share it) and NAME.key_secret (keep it private)."""
    from pool_env.daemon.security import keygen as make_keys

    public, secret = make_keys(directory, name)
    click.echo(f"public key: {public}\nsecret key: {secret}")
