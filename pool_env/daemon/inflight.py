"""The daemon's clients' commands in flight in the coordinator, and the slots of ended leases that
wait for them.

Each lease has at most one command (reset, step or call) in flight. A reset whose slots failed is
tried once more for those slots before its reply (a reset is safe to repeat), so the reply merges
both tries. A lease that ends (released or expired) while its command runs leaves its slots
*draining*: they return to the free pool only once that command — retry included — is done, so
the next lease never shares a worker command with the old one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pool_env.commands import CommandResult, PendingCommand
from pool_env.coordinator import Coordinator
from pool_env.daemon.leases import Lease, LeaseTable, describe_slots
from pool_env.daemon.wire import Request
from pool_env.protocol import Op

__all__ = ["Command", "Drain", "InFlight"]

log = logging.getLogger(__name__)


@dataclass
class Command:
    """A client's reset, step or call, in flight in the coordinator."""

    identity: bytes
    request: Request
    lease: Lease
    pending: PendingCommand
    seeds: dict[int, int | None] = field(default_factory=dict)
    options: dict[str, Any] | None = None
    first: CommandResult | None = None  # a reset's first try, when failed slots are retried


@dataclass
class Drain:
    """Slots of an ended lease that wait for its in-flight command before they are free."""

    slots: list[int]
    wait_for: PendingCommand | None


class InFlight:
    """The commands in flight and the draining slots of one daemon.

    Attributes:
        commands: the commands in flight, oldest first.
        drains: the ended leases' slots not free yet.
    """

    commands: list[Command]
    drains: list[Drain]
    _leases: LeaseTable

    def __init__(self, leases: LeaseTable) -> None:
        self.commands = []
        self.drains = []
        self._leases = leases

    def submit(
        self,
        coordinator: Coordinator,
        identity: bytes,
        request: Request,
        lease: Lease,
        op: Op,
        *,
        slots: list[int] | None = None,
        seeds: dict[int, int | None] | None = None,
        options: dict[str, Any] | None = None,
        invocation: dict[str, Any] | None = None,
        actions: dict[int, list[Any]] | None = None,
    ) -> None:
        """Start ``op`` for ``lease`` (its ``slots``, all by default); the lease is busy until it is done.
        ``actions``: the step's action parts without a fixed shape (see :meth:`Coordinator.submit`)."""
        chosen = lease.slots if slots is None else slots
        seeds = seeds or {}
        # A lease of every slot (ascending, as leases are) asks for the whole pool: the pool may
        # then take its steady path (pool_env.fastpath.steady) as it does for an embedded trainer.
        whole = slots is None and len(chosen) == coordinator.num_envs
        pending = coordinator.submit(
            op, None if whole else chosen, [seeds.get(s) for s in chosen] if seeds else None, options,
            lease.autoreset, invocation=invocation, actions=actions,
        )  # fmt: skip
        lease.busy = True
        self.commands.append(Command(identity, request, lease, pending, seeds, options))

    def finished(self, coordinator: Coordinator) -> Iterator[tuple[Command, CommandResult]]:
        """The commands that completed, each with its result (its lease idle again); a reset with
        failed slots is first tried once more for them and comes back later."""
        for command in [c for c in self.commands if c.pending.complete]:
            result = command.pending.result
            if command.pending.op is Op.RESET and result.errors and command.first is None and result.fatal is None:
                failed = sorted(result.errors)  # a reset is safe to repeat: one more try for failed slots
                command.first = result
                command.pending = coordinator.submit(
                    Op.RESET, failed, [command.seeds.get(s) for s in failed], command.options, command.lease.autoreset
                )
                continue
            if command.first is not None:
                merged = command.first
                for slot in result.errors.keys() | merged.errors.keys():
                    merged.infos.pop(slot, None)
                merged.errors = dict(result.errors)
                merged.infos.update(result.infos)
                merged.fatal = result.fatal
                result = merged
            self.commands.remove(command)
            command.lease.busy = False
            yield command, result

    def abandon(self) -> list[Command]:
        """Forget every command still in flight (the daemon stops); they are returned for a last reply."""
        left, self.commands = self.commands, []
        return left

    def drain(self, lease: Lease) -> None:
        """``lease`` ended: its slots are free once its command in flight (if any) is done."""
        wait_for = next((c.pending for c in self.commands if c.lease is lease), None)
        self.drains.append(Drain(list(lease.slots), wait_for))

    def advance(self) -> None:
        """Free the draining slots whose command is done."""
        for drain in list(self.drains):
            if drain.wait_for is not None and any(c.pending is drain.wait_for for c in self.commands):
                continue  # the (possibly retried) command is still running
            self.drains.remove(drain)
            self._leases.drained(drain.slots)
            log.info("slots %s are free (the next lease resets them before its first step)",
                     describe_slots(drain.slots))  # fmt: skip
