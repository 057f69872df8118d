"""``pool-env``: the command line, a thin shell over the Python API; one module per command.

* :mod:`~pool_env.cli.demo` — ``pool-env demo``: the bundled reference server, a pool, light faults.
* :mod:`~pool_env.cli.serve` — ``pool-env serve``: a pool daemon (config file, ``--ready-json``).
* :mod:`~pool_env.cli.status` — ``pool-env status``: a daemon's workers, leases and counters.
* :mod:`~pool_env.cli.keygen` — ``pool-env keygen``: CURVE key pairs for ``tcp://`` daemons.
* :mod:`~pool_env.cli.ref_server` — ``pool-env ref-server``: the reference DegradationEnv server.
* :mod:`~pool_env.cli.bench` — ``pool-env bench``: :mod:`pool_env.bench` against gymnasium.
* :mod:`~pool_env.cli.soak` — ``pool-env soak``: the chaos fault mix for N minutes.
* :mod:`~pool_env.cli.exits` — the exit codes all of them share.

Every option can also come from an environment variable ``POOL_ENV_<COMMAND>_<OPTION>``
(e.g. ``POOL_ENV_DEMO_ENVS=32``), as uvicorn's CLI does. Every error is one line on stderr
with exit code 2 (:class:`~pool_env.cli.exits.ExitCode`), never a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import click

from pool_env.cli.bench import bench
from pool_env.cli.demo import demo
from pool_env.cli.exits import CliError, ExitCode
from pool_env.cli.keygen import keygen
from pool_env.cli.options import LOG_LEVEL
from pool_env.cli.ref_server import ref_server
from pool_env.cli.serve import serve
from pool_env.cli.soak import soak
from pool_env.cli.status import status

__all__ = ["main"]


_NO_ARGS_IS_HELP: type[click.ClickException] | None = getattr(click.exceptions, "NoArgsIsHelpError", None)
"""Click >= 8.2 raises it for a group called without a command (older versions print the help)."""


class _Group(click.Group):
    """A click group whose errors are one line (click's own usage errors print three)."""

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Run the command line; exits with an :class:`ExitCode`."""
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except CliError as exc:
            click.echo(exc.format_message(), err=True)
            sys.exit(ExitCode.ERROR)
        except click.ClickException as exc:  # a usage error found by click: name the command and --help
            if _NO_ARGS_IS_HELP is not None and isinstance(exc, _NO_ARGS_IS_HELP):
                exc.show()  # ``pool-env`` alone: the help, as click shows it
                sys.exit(ExitCode.ERROR)
            path = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else "pool-env"
            message = " ".join(exc.format_message().split())
            click.echo(f"{path}: {message} (see {path} --help)", err=True)
            sys.exit(ExitCode.ERROR)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(ExitCode.FAILED)
        sys.exit(code if isinstance(code, int) else ExitCode.OK)


@click.group(cls=_Group, context_settings={"auto_envvar_prefix": "POOL_ENV", "help_option_names": ["-h", "--help"]})
@click.option("--log-level", type=LOG_LEVEL, default="WARNING", show_default=True, help="logging level")
def main(log_level: str) -> None:
    """pool_env: many RL env episodes in parallel behind one self-healing vector env."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _command in (demo, serve, status, keygen, ref_server, bench, soak):
    main.add_command(_command)
