"""The exit codes of every ``pool-env`` command, and the one-line error they print.

=====  ===========================================================================================
code   meaning
=====  ===========================================================================================
0      done
1      the command ran and found a problem (leaks after ``demo``, violations in ``soak``, failed
       ``bench`` cases)
2      the command could not do what was asked: bad arguments or config, a daemon that does not
       answer, a pool that cannot start; one line on stderr names the cause, never a traceback
       (2 is also what click uses for a usage error)
=====  ===========================================================================================

Named exit codes as uvicorn's CLI has them (see ``../shared/STYLE.md``).
"""

from __future__ import annotations

import enum

import click

__all__ = ["CliError", "ExitCode"]


class ExitCode(enum.IntEnum):
    """How a ``pool-env`` command ended."""

    OK = 0
    FAILED = 1
    ERROR = 2


class CliError(click.ClickException):
    """A command cannot do what was asked: printed as one line ``pool-env COMMAND: MESSAGE``, exit 2.

    Args:
        command: the command's name (``serve``, ``status``, ...).
        message: the cause and, where there is one, the fix.
    """

    exit_code = ExitCode.ERROR

    def __init__(self, command: str, message: str) -> None:
        super().__init__(message)
        self.command = command

    def format_message(self) -> str:
        """``pool-env COMMAND: MESSAGE`` on one line."""
        return f"pool-env {self.command}: {' '.join(self.message.split())}"
