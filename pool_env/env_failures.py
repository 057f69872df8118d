"""Judging the failures of users' envs: which ones the trainer must see raised (README failure table).

A worker reports each failed slot as a :class:`~pool_env.errors.SlotFailure`; most are reported to
the trainer as a truncated slot with the failure in ``errors``. Some must raise instead, because
retrying cannot help: an env that returns something its contract forbids (a bug, never transient),
an exception raised by the env with ``on_env_error="raise"``, or a slot whose env raised
``env_failure_limit`` times in a row without one successful step. The coordinator calls
:func:`judge_env_failures` for every ``done`` reply (the workers' and the trainer's own slots').
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pool_env.commands import CommandResult
from pool_env.config import PoolOptions
from pool_env.envs import EnvSpec
from pool_env.errors import (
    EnvFailingError,
    EnvRaisedError,
    ErrorKind,
    InvalidEnvReturnError,
    PoolEnvError,
    SlotFailure,
)

__all__ = ["env_name", "judge_env_failures"]


def env_name(spec: EnvSpec) -> str:
    """How error messages name the env of ``spec``."""
    name = getattr(spec, "env_id", None) or getattr(spec, "server_url", None)
    return repr(name) if name else type(spec).__name__


def judge_env_failures(
    result: CommandResult,
    message: dict[str, Any],
    failures: dict[int, SlotFailure],
    options: PoolOptions,
    counters: Counter[str],
    name: str,
) -> None:
    """Decide which failures of users' envs the trainer must see raised (README failure table).

    An invalid return always raises (a bug, never transient); an exception raised in the env
    raises with ``on_env_error="raise"`` or once a slot reached ``env_failure_limit`` raises in
    a row; otherwise the slot is reported truncated. The first error (by slot) wins: it is set as
    ``result.fatal`` unless that is set already.

    Args:
        result: the command's result (its ``fatal`` may be set).
        message: the ``done`` reply (its ``in_a_row``: slot -> env exceptions in a row).
        failures: global slot -> its failure, from that reply.
        options: the pool's ``on_env_error`` and ``env_failure_limit``.
        counters: the coordinator's counters (``invalid_env_returns``, ``env_exceptions``).
        name: the env's name for messages (:func:`env_name`).
    """
    in_a_row = {int(k): int(v) for k, v in message.get("in_a_row", {}).items()}
    for slot, failure in sorted(failures.items()):
        kind, text = failure.kind, failure.message
        error: PoolEnvError | None = None
        if kind is ErrorKind.INVALID_ENV_RETURN:
            counters["invalid_env_returns"] += 1
            error = InvalidEnvReturnError(text, slot)
        elif kind is ErrorKind.ENV_RAISED:
            counters["env_exceptions"] += 1
            count = in_a_row.get(slot, 1)
            if options.on_env_error == "raise":
                error = EnvRaisedError(f"the env raised (on_env_error='raise'): {text}", slot)
            elif count >= options.env_failure_limit:
                error = EnvFailingError(
                    f"slot {slot}: env {name} raised {count} times in a row without one "
                    f"successful step (env_failure_limit={options.env_failure_limit}): a bug in the "
                    f"env, not bad luck. Last cause: {text}",
                    slot,
                )
        if error is not None and result.fatal is None:
            result.fatal = error
