"""What a trainer saw, step by step, to compare with the env server's per-token step accounting.

A step error says what became of the step (the HTTP backend words its errors for this):

* ``"... response was lost (step counter a -> b)"``: the server applied the step exactly once
  and the answer never arrived → :attr:`Fate.APPLIED`.
* ``"... may have been applied ..."``, ``"... counter is unknown"``, and a worker that died or
  hung mid-command (``"exited with code"``, ``"did not answer within"``, ``"gave up on worker"``):
  the request may or may not have reached the server → :attr:`Fate.UNCERTAIN`.
* anything else (``"not applied"``, a server episode error, an episode that is gone, an episode
  lost with an earlier worker): nothing was applied → :attr:`Fate.NOT_APPLIED`.

:class:`StepLedger` adds these up; :meth:`StepLedger.problems` compares them with the server's
``steps_applied``: ``seen <= applied <= seen + uncertain`` (nothing lost, nothing doubled, the
uncertain ones being the only slack) and ``steps_on_ended == 0``.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Fate", "ServerTally", "StepLedger", "fault_kind", "step_fate"]


class Fate(enum.Enum):
    """What the server did with a step that came back with an error."""

    APPLIED = "applied"
    UNCERTAIN = "uncertain"
    NOT_APPLIED = "not applied"


_FAULT_KINDS = (
    ("episode lost", "episode lost with its worker"),
    ("gave up on worker", "worker given up"),
    ("exited with code", "worker killed"),
    ("did not answer", "worker hung"),
    ("was restarted", "worker restarted"),
    ("response was lost", "lost response"),
    ("counter is unknown", "lost response"),
    ("astype", "episode error"),
    ("nonetype", "episode error"),
    ("is gone", "episode gone"),
    ("not found", "episode gone"),
    ("call_timeout", "call timeout"),
    ("500", "http 500"),
    ("503", "http 503"),
    ("connection", "connection error"),
    ("timed out", "request timeout"),
)


def fault_kind(error: str) -> str:
    """A short name for the kind of failure an ``infos["error"]`` text reports (``"other"`` if unknown)."""
    text = error.lower()
    for needle, kind in _FAULT_KINDS:
        if needle in text:
            return kind
    return "other"


def step_fate(error: str) -> Fate:
    """What the server did with a step that came back with ``error`` (see the module docstring)."""
    text = error.lower()
    if "episode lost" in text:  # its worker died before this command: never sent
        return Fate.NOT_APPLIED
    if "response was lost (step counter" in text:
        return Fate.APPLIED
    if any(
        needle in text
        for needle in (
            "may have been applied",
            "counter is unknown",
            "exited with code",
            "did not answer within",
            "gave up on worker",
            "was restarted",
            "worker unreachable",
        )
    ):
        return Fate.UNCERTAIN
    return Fate.NOT_APPLIED


@dataclass
class StepLedger:
    """Steps the trainer saw, by what the server must have done with them.

    Attributes:
        applied: results of real steps (not autoresets, not errors).
        lost: errors saying the step was applied but its answer lost.
        uncertain: errors after which the step may or may not have been applied.
        not_applied: errors for steps the server never applied.
        kinds: every error seen, by :func:`fault_kind`.
        ended: per slot, whether its episode ended on the last step (it autoresets next).
    """

    num_envs: int
    applied: int = 0
    lost: int = 0
    uncertain: int = 0
    not_applied: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    keep_errors: int = 200
    ended: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.ended = np.zeros(self.num_envs, dtype=bool)

    def record(self, terminated: np.ndarray, truncated: np.ndarray, infos: dict[str, Any]) -> None:
        """Account one batch returned by ``step``."""
        error_mask = np.asarray(infos.get("_error", np.zeros(self.num_envs, dtype=bool)), dtype=bool)
        was_step = ~self.ended  # slots that ended last step were autoreset this step
        self.applied += int((was_step & ~error_mask).sum())
        for slot in np.flatnonzero(error_mask):
            message = str(infos["error"][slot])
            self.kinds[fault_kind(message)] += 1
            if len(self.errors) < self.keep_errors:
                self.errors.append(message)
            if not was_step[slot]:
                continue  # the autoreset failed: no step was attempted
            fate = step_fate(message)
            if fate is Fate.APPLIED:
                self.lost += 1
            elif fate is Fate.UNCERTAIN:
                self.uncertain += 1
            else:
                self.not_applied += 1
        self.ended = np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)

    def reset(self) -> None:
        """The trainer reset every slot: no slot autoresets on the next step."""
        self.ended[:] = False

    @property
    def seen(self) -> int:
        """Steps known to be applied exactly once."""
        return self.applied + self.lost

    def problems(self, steps_applied: int, steps_on_ended: int) -> list[str]:
        """Differences from the server's accounting (empty when it agrees)."""
        found = []
        if steps_applied < self.seen:
            found.append(f"steps lost: the server applied {steps_applied} < {self.seen} the trainer saw applied")
        if steps_applied > self.seen + self.uncertain:
            found.append(
                f"steps applied twice: the server applied {steps_applied} > {self.seen} seen + "
                f"{self.uncertain} uncertain"
            )
        if steps_on_ended:
            found.append(f"{steps_on_ended} steps sent to episodes that had ended")
        return found

    def summary(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        return {
            "applied": self.applied,
            "lost_responses": self.lost,
            "uncertain": self.uncertain,
            "not_applied": self.not_applied,
            "errors_by_kind": dict(self.kinds),
        }


@dataclass
class ServerTally:
    """One token's step accounting summed over server lifetimes (a restart zeroes the server's).

    Call :meth:`bank` just before a planned restart, while no request is in flight.
    """

    token: str
    banked: Counter[str] = field(default_factory=Counter)

    def bank(self, stats: dict[str, Any]) -> None:
        """Add the token's counters from ``stats`` (``RefServer.stats()``) before they are lost."""
        self.banked.update(stats.get("tokens", {}).get(self.token, {}))

    def total(self, stats: dict[str, Any]) -> Counter[str]:
        """The banked counters plus the current server's."""
        return self.banked + Counter(stats.get("tokens", {}).get(self.token, {}))
