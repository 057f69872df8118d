"""``pool-env status``: a daemon's workers, leases, uptime and faults recovered."""

from __future__ import annotations

import json

import click

from pool_env.cli.exits import CliError
from pool_env.errors import PoolEnvError

__all__ = ["status"]


@click.command()
@click.argument("endpoint")
@click.option("--json", "as_json", is_flag=True, help="print the status document as JSON")
@click.option("--timeout", type=click.FloatRange(min=0.0, min_open=True), default=5.0, show_default=True,
              help="seconds to wait for the daemon")  # fmt: skip
@click.option("--server-key", default=None, type=click.Path(exists=True, dir_okay=False), help="daemon public key")
@click.option("--client-secret-key", default=None, type=click.Path(exists=True, dir_okay=False), help="CURVE key")
def status(endpoint: str, as_json: bool, timeout: float, server_key: str | None, client_secret_key: str | None) -> None:
    """Show a daemon's workers, leases, uptime and faults recovered (ENDPOINT: ipc://PATH or tcp://HOST:PORT)."""
    from pool_env.daemon.status import fetch_status, format_status

    if endpoint.startswith("tcp://") and (server_key is None or client_secret_key is None):
        raise CliError(
            "status",
            f"{endpoint} needs CURVE keys: pass --server-key DAEMON.key and --client-secret-key CLIENT.key_secret "
            "(make them with `pool-env keygen`)",
        )
    try:
        document = fetch_status(endpoint, timeout, server_key, client_secret_key)
    except PoolEnvError as exc:
        raise CliError("status", str(exc)) from exc
    click.echo(json.dumps(document, indent=2, sort_keys=True) if as_json else format_status(document))
