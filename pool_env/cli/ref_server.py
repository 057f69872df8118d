"""``pool-env ref-server``: the reference DegradationEnv server, a thin shell over :func:`serve`.

The flags are :class:`~pool_env.refserver.faults.FaultConfig`'s fields (unset ones keep its
defaults) and :class:`~pool_env.refserver.limits.ServerLimits`' start-up limits. The port is bound
here, before uvicorn starts, so a port out of range or already in use is one line and exit 2
like every ``pool-env`` error (uvicorn would print a traceback or exit 3).
``python -m pool_env.refserver`` runs this same command.
"""

from __future__ import annotations

from typing import Any

import click

from pool_env.cli.exits import CliError
from pool_env.cli.options import PROBABILITY

__all__ = ["ref_server"]

_P = "probability in [0, 1] of "


@click.command("ref-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to bind")
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True, help="TCP port")
@click.option("--exit-with-parent", is_flag=True, help="exit when the parent process dies")
@click.option("--p-episode-error", type=PROBABILITY, help=_P + "a per-env error payload")
@click.option("--p-http-500", type=PROBABILITY, help=_P + "answering 500 (nothing applied)")
@click.option("--p-http-503", type=PROBABILITY, help=_P + "answering 503 (nothing applied)")
@click.option("--latency-ms", type=float, help="latency added to every episode request")
@click.option("--per-env-ms", type=float, help="latency added per env of a vectorized request")
@click.option("--p-hang", type=PROBABILITY, help=_P + "hanging --hang-s after applying")
@click.option("--hang-s", type=float, help="length of a hang in seconds (default 40)")
@click.option("--p-drop", type=PROBABILITY, help=_P + "resetting the connection after applying")
@click.option("--fault-seed", type=int, help="seed of the fault RNG")
@click.option("--max-steps-quota", type=int,
              help="episode-steps per user token before steps answer 429 (default 100000)")  # fmt: skip
@click.option("--max-num-envs", type=int,
              help="largest num_envs of a create and entries of a vectorized call (default 64)")  # fmt: skip
@click.option("--max-body-bytes", type=int, help="start-up limit: largest request body; 413 beyond (default 1048576)")
@click.option("--num-envs-limit", type=int,
              help="start-up limit: highest max_num_envs, also via /control/faults (default 1024)")  # fmt: skip
@click.option("--idle-timeout-s", type=float,
              help="start-up limit: evict episodes (with all their ids) and sessions unused this long; "
              "their ids answer 404 (default 3600)")  # fmt: skip
@click.option("--max-live-episodes", type=int,
              help="start-up limit: live episodes one token may hold; a create beyond answers 409 "
              "(default 4096)")  # fmt: skip
@click.option("--no-control", is_flag=True, help="start-up limit: disable /control (404)")
@click.option("--control-token", envvar="POOL_ENV_CONTROL_TOKEN", default=None,
              help="require header X-Control-Token with this value on /control (403 otherwise); "
              "default $POOL_ENV_CONTROL_TOKEN")  # fmt: skip
def ref_server(host: str, port: int, exit_with_parent: bool, no_control: bool, **options: Any) -> None:
    """Run the challenge's reference env server (PROTOCOL.md) with optional fault injection."""
    from pool_env.refserver.faults import fault_config_from_options
    from pool_env.refserver.limits import server_limits_from_options
    from pool_env.refserver.serve import bind_socket, serve

    options["control"] = False if no_control else None
    try:
        faults = fault_config_from_options(**options)
        limits = server_limits_from_options(**options)
        if faults.max_num_envs > limits.num_envs_limit:
            raise ValueError(f"--max-num-envs {faults.max_num_envs} is above --num-envs-limit {limits.num_envs_limit}")
    except ValueError as exc:
        raise CliError("ref-server", f"{exc} (see pool-env ref-server --help)") from exc
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise CliError(
            "ref-server", f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port or --host"
        ) from exc
    serve(host, port, faults, exit_with_parent=exit_with_parent, limits=limits, sock=sock)
