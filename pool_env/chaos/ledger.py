"""What a trainer saw, step by step, to compare with the env server's per-token step accounting.

Every failed slot carries the fate of its step (``infos["step_fate"]``, a
:class:`~pool_env.errors.StepFate`) and its kind (``infos["error_kind"]``, an
:class:`~pool_env.errors.ErrorKind`); the ledger reads those, never the text:

* :attr:`StepFate.APPLIED`: the server applied the step exactly once and the answer never arrived;
* :attr:`StepFate.UNKNOWN`: the request may or may not have reached the server (a worker that
  died or hung mid-command, a server that stopped answering before the step could be checked);
* :attr:`StepFate.NOT_APPLIED`: nothing was applied.

:class:`StepLedger` adds these up; :meth:`StepLedger.problems` compares them with the server's
``steps_applied``: ``seen <= applied <= seen + uncertain`` (nothing lost, nothing doubled, the
uncertain ones being the only slack) and ``steps_on_ended == 0``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pool_env.errors import ErrorKind, StepFate

__all__ = ["ServerTally", "StepLedger"]


@dataclass
class StepLedger:
    """Steps the trainer saw, by what the server must have done with them.

    Attributes:
        applied: results of real steps (not autoresets, not errors).
        lost: errors saying the step was applied but its answer lost.
        uncertain: errors after which the step may or may not have been applied.
        not_applied: errors for steps the server never applied.
        kinds: every error seen, by kind (:class:`~pool_env.errors.ErrorKind` values).
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
            self.kinds[ErrorKind(infos["error_kind"][slot]).value] += 1
            if len(self.errors) < self.keep_errors:
                self.errors.append(str(infos["error"][slot]))
            if not was_step[slot]:
                continue  # the autoreset failed: no step was attempted
            fate = StepFate(infos["step_fate"][slot])
            if fate is StepFate.APPLIED:
                self.lost += 1
            elif fate is StepFate.UNKNOWN:
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
