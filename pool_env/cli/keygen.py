"""``pool-env keygen``: a CURVE key pair for ``tcp://`` daemons and their clients."""

from __future__ import annotations

import os

import click

from pool_env.cli.exits import CliError

__all__ = ["keygen"]


@click.command()
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, help="where to write the key files")
@click.option("--force", is_flag=True, help="overwrite existing key files of this name")
def keygen(name: str, directory: str, force: bool) -> None:
    """Write a CURVE key pair NAME.key (public, share it) and NAME.key_secret (keep it private)."""
    from pool_env.daemon.security import keygen as make_keys

    existing = [path for path in (os.path.join(directory, f"{name}.key"), os.path.join(directory, f"{name}.key_secret"))
                if os.path.lexists(path)]  # fmt: skip
    if existing and not force:
        raise CliError(
            "keygen", f"{' and '.join(existing)} already exist(s): pass --force to overwrite, or another NAME"
        )
    public, secret = make_keys(directory, name)
    click.echo(f"public key: {public}\nsecret key: {secret}")
