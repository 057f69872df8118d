"""``pool-env ref-server``: the reference DegradationEnv server (its own flags, see ``--help``)."""

from __future__ import annotations

import click

__all__ = ["ref_server"]


@click.command(
    "ref-server",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.pass_context
def ref_server(ctx: click.Context) -> None:
    """Run the reference DegradationEnv server (flags: ``pool-env ref-server --help``)."""
    from pool_env.refserver.serve import main as serve_main

    serve_main(ctx.args)
