"""Command records: what a coordinator command is, per worker, and what came back.

A :class:`PendingCommand` is split into one :class:`WorkerCall` per worker that owns some of
its slots; each worker executes its calls in order. Results accumulate in the command's
:class:`CommandResult` as calls finish (or fail when their worker is replaced).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pool_env.errors import SlotFailure
from pool_env.protocol import Op

if TYPE_CHECKING:  # only an annotation: the supervisor imports merge_counters from here
    from pool_env.supervisor import WorkerHandle

__all__ = [
    "GAUGE_COUNTERS",
    "CommandResult",
    "PendingCommand",
    "WorkerCall",
    "merge_counters",
    "split_slots",
]


def split_slots(num_envs: int, num_workers: int) -> list[list[int]]:
    """Contiguous, as-even-as-possible groups: 17 slots on 6 workers → 3,3,3,3,3,2."""
    base, extra = divmod(num_envs, num_workers)
    groups, start = [], 0
    for w in range(num_workers):
        size = base + (1 if w < extra else 0)
        groups.append(list(range(start, start + size)))
        start += size
    return groups


@dataclass
class CommandResult:
    """What came back: per-slot infos (non-empty only), per-slot failures, ``call`` results, and an
    error to raise."""

    infos: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: dict[int, SlotFailure] = field(default_factory=dict)
    fatal: BaseException | None = None
    values: dict[int, Any] = field(default_factory=dict)


@dataclass
class WorkerCall:
    """One worker's share of a command (``gen``: the worker generation it was meant for)."""

    pending: PendingCommand
    handle: WorkerHandle
    gen: int
    message: dict[str, Any]
    slots: list[int]
    sent_at: float | None = None
    done: bool = False
    harvested: bool = False  # for partial batches: its slots were handed out
    fast: tuple[int, int | None, int] | None = None  # (fast op, seed base, mode) when the fast path can carry it


@dataclass
class PendingCommand:
    """A command sent (or queued) to some workers and not yet collected."""

    op: Op
    seq: int
    calls: list[WorkerCall] = field(default_factory=list)
    result: CommandResult = field(default_factory=CommandResult)
    local: dict[str, Any] | None = None  # the message for the trainer's own slots, until they ran

    @property
    def complete(self) -> bool:
        """Whether every worker answered (or was replaced)."""
        return all(call.done for call in self.calls)


GAUGE_COUNTERS = frozenset({"server_steps_reported", "server_steps_limit"})
"""Backend counters that are values the server reported, merged by maximum (never summed)."""


def merge_counters(total: Counter[str], add: Mapping[str, int]) -> Counter[str]:
    """Add ``add`` to ``total`` in place (sums, but :data:`GAUGE_COUNTERS` take the maximum); return it."""
    for name, value in add.items():
        total[name] = max(total[name], value) if name in GAUGE_COUNTERS else total[name] + value
    return total
