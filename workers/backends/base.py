"""The backend seam: what a worker needs from an env kind.

A backend owns the envs of one worker's slots, numbered ``0..num_slots-1`` locally. It never
autoresets: the worker decides which slots to reset and which to step (gymnasium's NEXT_STEP
rule). Per-slot failures are returned as :class:`Outcome` with ``error`` and its
:class:`~pool_env.errors.ErrorKind` and :class:`~pool_env.errors.StepFate` set, never raised;
only failures that no retry can fix (a 4xx from the server, an env that cannot be created)
raise :class:`pool_env.errors.PoolEnvError` subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pool_env.errors import ErrorKind, StepFate

__all__ = ["Backend", "Outcome"]


@dataclass
class Outcome:
    """The result of resetting or stepping one slot.

    ``obs`` is ``None`` when there is no observation (an error); the worker then leaves the
    slot's previous observation in place. A slot with ``error`` is reported truncated, with
    ``kind`` (why) and ``fate`` (whether the env applied the step); make one with :meth:`failed`.
    A local env's reward and flags are passed as the env returned them: the worker checks them
    against the contract (:mod:`workers.contract`) before writing them.
    ``restarted``: the slot ended and was reset within the same command (SAME_STEP autoreset).

    Raises:
        TypeError: ``error`` without ``kind``, or ``kind`` without ``error``.
    """

    obs: Any = None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    kind: ErrorKind | None = None
    restarted: bool = False
    fate: StepFate = StepFate.NOT_APPLIED

    def __post_init__(self) -> None:
        if (self.error is None) != (self.kind is None):
            raise TypeError(f"an Outcome has an error and its kind, or neither: error={self.error!r}, kind={self.kind}")

    @classmethod
    def failed(cls, kind: ErrorKind, fate: StepFate, error: str) -> Outcome:
        """A failed slot: truncated, no observation, ``error`` for people, ``kind`` and ``fate`` for code."""
        return cls(truncated=True, error=error, kind=kind, fate=fate)


class Backend(Protocol):
    """The envs of one worker."""

    def reset(self, slots: Sequence[int], seeds: Sequence[int | None], options: dict[str, Any] | None) -> list[Outcome]:
        """Start a new episode in each of ``slots`` (local ids), one outcome per slot."""
        ...

    def step(self, slots: Sequence[int], actions: Sequence[Any]) -> list[Outcome]:
        """Apply ``actions[i]`` to ``slots[i]``, one outcome per slot."""
        ...

    def call(self, slot: int, name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """The env attribute ``name`` of ``slot``, called with ``args``/``kwargs`` if callable."""
        ...

    def set_attr(self, slot: int, name: str, value: Any) -> None:
        """Set the env attribute ``name`` of ``slot``."""
        ...

    def close(self) -> None:
        """Release the envs (close HTTP sessions, env.close())."""
        ...
