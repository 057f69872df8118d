"""What every env kind provides: the :class:`EnvSpec` protocol, and :class:`Probe`, its spaces.

An *env kind* is one way of running an env slot (a remote DegradationEnv episode, a local
gymnasium env, a user's callable). Each kind lives in one module of :mod:`pool_env.envs` whose
spec class satisfies :class:`EnvSpec`: it knows its wire form, its spaces, its default worker
count, its start-up check and the worker backend that runs it. The pool, the daemon and the
worker only talk to that protocol, so adding a kind means one new module and one line in
:mod:`pool_env.envs.registry` (EnvPool and PufferLib put their backends behind one small
interface the same way).

This module and the kind modules import neither gymnasium nor requests at import time: a worker
imports them all through the registry, and an HTTP worker must not pay for gymnasium.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from pool_env.errors import SpecError, UsageError

if TYPE_CHECKING:
    from gymnasium import spaces

    from workers.backends.base import Backend

__all__ = ["WORKER_PID_VARIABLE", "EnvSpec", "Probe", "refuse_inside_worker", "require"]


def require(condition: bool, field_name: str, message: str) -> None:
    """Raise :class:`SpecError` ``"<field_name>: <message>"`` unless ``condition`` holds."""
    if not condition:
        raise SpecError(f"{field_name}: {message}")


class Probe(NamedTuple):
    """What the pool needs to know about one env of a spec before its workers start."""

    observation_space: spaces.Space[Any]
    action_space: spaces.Space[Any]
    metadata: dict[str, Any]
    render_mode: str | None


@runtime_checkable
class EnvSpec(Protocol):
    """One env kind's description of a slot (frozen, validated at construction).

    Attributes:
        kind: the kind's name on the coordinator → worker wire (``"http"``, ``"gym"``, ...).
        carries_code: the wire form holds pickled code; only workers of an embedded pool,
            started with ``--accept-pickle``, may receive it (never a daemon's).
    """

    kind: ClassVar[str]
    carries_code: ClassVar[bool]

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> EnvSpec:
        """Rebuild the spec from :meth:`to_wire` output (without its ``kind``).

        Raises:
            SpecError: missing or bad fields.
        """
        ...

    def to_wire(self, slots: Sequence[int] | None = None) -> dict[str, Any]:
        """A msgpack-able dict, with ``kind``, for the workers serving ``slots`` (global ids; ``None``: all)."""
        ...

    def label(self) -> str:
        """A short description for people (logs, status documents); never a secret."""
        ...

    def worst_case_step_seconds(self) -> float:
        """An upper bound on one worker command in seconds (``math.inf`` when there is none)."""
        ...

    def default_num_workers(self, num_envs: int, trainer_slots: int = 0) -> int:
        """Worker processes for ``num_envs`` worker slots when the user gives none (``trainer_slots``:
        how many more slots the trainer steps itself, busy meanwhile)."""
        ...

    def check(self) -> None:
        """Fail fast, in the trainer and before any worker starts, when the spec cannot work.

        Raises:
            PoolEnvError: a subclass naming the cause and the fix.
        """
        ...

    def probe(self) -> Probe:
        """Spaces, metadata and render mode of one env (may make one env in this process).

        Raises:
            EnvCreationError: the env cannot be made.
        """
        ...

    def make_backend(self, slots: Sequence[int]) -> Backend:
        """The worker-side backend running ``slots`` (global ids, in the worker's order).

        Runs in the worker; imports only what this kind needs there.
        """
        ...


WORKER_PID_VARIABLE = "POOL_ENV_WORKER_PID"
"""Set by every worker process to its own pid (children of a worker see another pid)."""


def refuse_inside_worker() -> None:
    """Refuse to start a pool inside a pool_env worker process: never workers starting workers.

    It happens when a worker imports the training script (for ``"train:MyEnv"``, or an id the
    script registered) and the script builds its pool at the top level.

    Raises:
        UsageError: this process is a worker; the message names the missing guard.
    """
    if os.environ.get(WORKER_PID_VARIABLE) != str(os.getpid()):
        return
    # The innermost frame outside pool_env, gymnasium and importlib: the user's line.
    ours = (os.path.dirname(os.path.dirname(__file__)) + os.sep, "<frozen ", os.path.join("gymnasium", ""))
    frames = [f for f in traceback.extract_stack()[:-1] if not any(part in f.filename for part in ours)]
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "a module imported by the worker"
    raise UsageError(
        f"a pool was started inside a pool_env worker process (pid {os.getpid()}), from {where}: the "
        "training script builds its pool when imported. Put that code under "
        '`if __name__ == "__main__":` (as with multiprocessing), or move the env into its own module'
    )
