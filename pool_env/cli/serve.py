"""``pool-env serve``: a pool daemon until SIGTERM/SIGINT, a thin shell over :class:`PoolDaemon`.

Every flag can come from ``POOL_ENV_SERVE_<FLAG>`` (e.g. ``POOL_ENV_SERVE_TOKEN``) and from a
TOML file given with ``--config``, whose keys are the flags' names (``envs``, ``workers``,
``lease-timeout`` or ``lease_timeout``, ...); flags win over the file. ``--ready-json`` prints
one JSON line for programs once the daemon serves (:mod:`pool_env.daemon.child` reads it)
instead of the banner for people.
"""

from __future__ import annotations

import json
import os
import signal
from types import FrameType
from typing import Any

import click

from pool_env.cli.exits import CliError, ExitCode
from pool_env.cli.options import LOG_LEVEL
from pool_env.errors import PoolEnvError

__all__ = ["serve"]


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        from pool_env.daemon.config import load_config_file

        keys = {p.name for p in ctx.command.params if p.name is not None and p.name not in ("config", "ready_json")}
        try:
            ctx.default_map = {**(ctx.default_map or {}), **load_config_file(value, keys)}
        except PoolEnvError as exc:
            raise CliError("serve", str(exc)) from exc
    return value


@click.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="TOML file whose keys are these flags' names (envs = 4, lease-timeout = 5.0, ...)",
)
@click.option("--spec", required=True, help="gym:ENV_ID, gym:module:factory, or http(s)://HOST:PORT")
@click.option("--token", default=None, help="user token for an http:// spec")
@click.option("--step-size", type=click.IntRange(min=1), default=10, show_default=True,
              help="flights per step (http:// spec)")  # fmt: skip
@click.option("--envs", type=click.IntRange(min=1), default=16, show_default=True, help="env slots in the pool")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="worker processes (at most --envs)")  # fmt: skip
@click.option("--bind", default=None, help="ipc://PATH or tcp://HOST:PORT (default: a private ipc socket)")
@click.option("--lease-timeout", type=click.FloatRange(min=0.0, min_open=True), default=10.0, show_default=True,
              help="seconds without heartbeat before a lease ends")  # fmt: skip
@click.option("--step-timeout", default=None, type=click.FloatRange(min=0.0, min_open=True),
              help="seconds before a hung worker is replaced")  # fmt: skip
@click.option("--max-episodes-per-worker", default=None, type=click.IntRange(min=1),
              help="recycle a worker process after this many episodes, none cut (PoolOptions)")  # fmt: skip
@click.option("--max-worker-rss-mb", default=None, type=click.FloatRange(min=0.0, min_open=True),
              help="recycle a worker process above this RSS in MiB, no episode cut (PoolOptions)")  # fmt: skip
@click.option("--stop-timeout", type=click.FloatRange(min=0.0), default=10.0, show_default=True,
              help="seconds to finish in-flight steps on stop")  # fmt: skip
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
@click.option("--metrics-port", default=None, type=click.IntRange(0, 65535), help="serve Prometheus metrics here")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="interface of the metrics server")
@click.option("--worker-log-level", type=LOG_LEVEL, default="WARNING", show_default=True, help="workers' log level")
@click.option("--ready-json", is_flag=True, help='print one JSON line {"event": "ready", "endpoint": ...} when serving')
def serve(
    spec: str,
    token: str | None,
    step_size: int,
    envs: int,
    workers: int,
    bind: str | None,
    lease_timeout: float,
    step_timeout: float | None,
    max_episodes_per_worker: int | None,
    max_worker_rss_mb: float | None,
    stop_timeout: float,
    curve_secret_key: str | None,
    allow_client_key: tuple[str, ...],
    metrics_port: int | None,
    metrics_host: str,
    worker_log_level: str,
    ready_json: bool,
) -> None:
    """Run a pool daemon until SIGTERM/SIGINT; trainers connect with ``pool_env.connect``."""
    from pool_env.config import PoolOptions
    from pool_env.daemon.config import DaemonConfig, parse_spec
    from pool_env.daemon.server import PoolDaemon
    from pool_env.daemon.status import plural

    try:
        config = DaemonConfig(
            parse_spec(spec, token, step_size), envs, workers, bind, lease_timeout, stop_timeout,
            curve_secret_key, tuple(allow_client_key), metrics_port, metrics_host,
            PoolOptions(step_timeout=step_timeout, max_episodes_per_worker=max_episodes_per_worker,
                        max_worker_rss_mb=max_worker_rss_mb),
            worker_log_level.upper(),
        )  # fmt: skip
        daemon = PoolDaemon(config)
        daemon.start()
    except PoolEnvError as exc:
        raise CliError("serve", str(exc)) from exc
    originals = _install_signal_handlers(daemon)
    if ready_json:
        ready = {"event": "ready", "endpoint": daemon.endpoint, "pid": os.getpid(), "num_envs": envs,
                 "num_workers": workers}  # fmt: skip
        click.echo(json.dumps(ready))
    else:
        slots, processes = plural(envs, "slot"), plural(workers, "worker")
        click.echo(f"pool-env daemon serving {daemon.endpoint} (pid {os.getpid()}, {slots}, {processes})")
    try:
        daemon.serve_forever()
    finally:
        for signum, handler in originals.items():
            signal.signal(signum, handler)
    click.echo(json.dumps({"event": "stopped"}) if ready_json else "pool-env daemon stopped")
    raise SystemExit(ExitCode.OK)


def _install_signal_handlers(daemon: Any) -> dict[int, Any]:
    """SIGTERM/SIGINT request a graceful stop; a second one stops waiting for in-flight commands.

    Handlers only set flags (uvicorn's pattern): raising from a handler could cut the clean-up
    (workers, shared memory, socket file) short, and that clean-up is bounded in time anyway.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        daemon.request_stop()

    originals: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        originals[signum] = signal.getsignal(signum)
        signal.signal(signum, on_signal)
    return originals
