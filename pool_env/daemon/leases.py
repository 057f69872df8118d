"""The lease table: which trainer holds which slots, heartbeats, expiry. Pure logic, no I/O.

A slot is in exactly one of three states::

    free ──grant──> leased ──release / expire──> draining ──(in-flight work done)──> free

*Draining* slots belong to no lease but are not free yet: the daemon first lets a command that
was in flight finish. A new lease starts with ``was_reset=False``: its first reset (with the
new trainer's seeds) gives it fresh episodes, and steps before it are refused. The lease id
is a random capability (the heartbeat thread of a client uses its own socket, so a lease is not
tied to a zmq identity). The clock is injectable, so unit tests never sleep.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from pool_env.errors import LeaseError

if TYPE_CHECKING:
    from pool_env.daemon.lane import LaneEnd

__all__ = ["EXPIRED_KEPT", "Lease", "LeaseTable", "describe_slots"]

EXPIRED_KEPT = 1024
"""Expired leases remembered so that a starved trainer that comes back gets its lease again."""


def describe_slots(slots: Iterable[int]) -> str:
    """Compact slot list: ``[0-3, 7, 9-10]``."""
    ordered = sorted(slots)
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return "[" + ", ".join(parts) + "]"


@dataclass
class Lease:
    """Slots held by one trainer.

    Attributes:
        lease_id: the random capability the client sends with every request.
        slots: pool slots, in the client's order (client position ``i`` is ``slots[i]``).
        granted_at, last_seen: clock readings.
        was_reset: a reset went through since the grant (steps are refused before).
        busy: a command of this lease is in flight (at most one).
        shared_memory: the client reads and writes its rows of the pool's segment (same host).
        autoreset: the client's ``gymnasium.vector.AutoresetMode`` value; its commands follow it.
        identity: the zmq identity of the client's socket that last sent a lease, reset, step or
            call of it (where replies of its lane's steps go when they do not fit the lane).
        lane: its step lane, if the client opened one (:mod:`pool_env.daemon.lane`).
    """

    lease_id: str
    slots: list[int]
    granted_at: float
    last_seen: float
    was_reset: bool = False
    busy: bool = False
    shared_memory: bool = False
    autoreset: str = "NextStep"
    identity: bytes = b""
    lane: LaneEnd | None = None

    @cached_property
    def rows(self) -> slice | list[int]:
        """Index of its rows in the pool's arrays: a slice (a view, no index array) when its slots
        follow each other, else :attr:`slots`."""
        first = self.slots[0]
        if self.slots == list(range(first, first + len(self.slots))):
            return slice(first, first + len(self.slots))
        return self.slots

    @cached_property
    def positions(self) -> dict[int, int]:
        """Client position of each of its slots."""
        return {slot: i for i, slot in enumerate(self.slots)}

    @property
    def short_id(self) -> str:
        """A prefix safe to show in logs and status (the full id is a capability)."""
        return self.lease_id[:8]


class LeaseTable:
    """Grants, heartbeats and expiry of leases over ``num_envs`` slots.

    Args:
        num_envs: slots in the pool.
        timeout: seconds without a heartbeat before a lease expires.
        clock: ``time.monotonic`` or a fake.
        groups: the slots of each worker (``None``: one group, lowest slots first). A lease takes
            whole free workers first, as many as it fills exactly, then the rest of its slots one
            at a time from the workers with the most free slots (4 of 16 slots on 2 workers: 2
            on each, stepping in parallel), see :meth:`grant`.
    """

    num_envs: int
    timeout: float
    _clock: Callable[[], float]
    _groups: list[list[int]]
    _leases: dict[str, Lease]
    _draining: set[int]
    _expired: dict[str, Lease]
    """Leases that expired, most recent last (at most ``EXPIRED_KEPT``): revived if they come back."""
    _revived: list[Lease]

    def __init__(
        self,
        num_envs: int,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.num_envs = num_envs
        self.timeout = timeout
        self._clock = clock
        self._groups = [sorted(group) for group in groups] if groups is not None else [list(range(num_envs))]
        self._leases = {}
        self._draining = set()
        self._expired = {}
        self._revived = []

    @property
    def leases(self) -> list[Lease]:
        """Current leases, oldest first."""
        return sorted(self._leases.values(), key=lambda lease: lease.granted_at)

    def free_slots(self) -> list[int]:
        """Slots neither leased nor draining."""
        taken = set(self._draining)
        for lease in self._leases.values():
            taken.update(lease.slots)
        return [slot for slot in range(self.num_envs) if slot not in taken]

    def grant(self, num_envs: int) -> Lease:
        """Lease ``num_envs`` free slots: first every wholly free worker (lowest first) while the
        lease still wants at least all of its slots, then the rest one at a time from the worker
        with the most free slots (ties: the lower worker), its lowest free slot; in ascending order.

        Why whole workers first: a command of every slot of a worker rides the workers' fast path
        (:func:`pool_env.fastpath.route.fast_plan`: shared-memory words and eventfds, no zmq
        message each way), and no other lease's commands queue on that worker. Spreading such a
        lease instead (64 of 128 CartPole slots on 2 workers: 32 on each) sends every step over zmq
        to both workers, and two trainers' steps then wait for each other on both. Measured
        (CartPole, 2 workers of 64 slots, leases of 64, load 3-4.6, 3 interleaved pairs, CPU per
        batch): two trainers stepping, daemon 361-564 us whole vs 831-998 us spread, each worker
        823-1050 vs 1064-1318 us, 8.4-16.2k vs 6.6-8.8k steps/s per trainer; one trainer alone on
        half the slots, daemon 438-579 vs 698-891 us, 14.8-25.4k vs 15.3-21.5k steps/s (one worker
        stepping 64 slots on the fast path keeps up with two stepping 32 each over zmq).

        Raises:
            LeaseError: fewer slots are free; the message names how many and which.
        """
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise LeaseError(f"num_envs must be a positive int, got {num_envs!r}")
        free = self.free_slots()
        if num_envs > len(free):
            raise LeaseError(
                f"asked for {num_envs} slots but only {len(free)} of {self.num_envs} are free "
                f"{describe_slots(free)}"
                + (f" ({len(self._draining)} finishing a command of an ended lease)" if self._draining else "")
            )
        free_set = set(free)
        available = [[slot for slot in group if slot in free_set] for group in self._groups]
        chosen: list[int] = []
        for group, left in zip(self._groups, available, strict=True):
            if len(left) == len(group) <= num_envs - len(chosen):  # wholly free, and wholly wanted
                chosen += left
                left.clear()
        for _ in range(num_envs - len(chosen)):
            group = max(available, key=len)  # max() keeps the first of equals: the lower worker
            chosen.append(group.pop(0))
        now = self._clock()
        lease = Lease(secrets.token_hex(16), sorted(chosen), now, now)
        self._leases[lease.lease_id] = lease
        return lease

    def get(self, lease_id: object) -> Lease:
        """The lease ``lease_id``; counts as a heartbeat.

        A lease that expired comes back to life here if none of its slots was leased again or is
        still draining: its trainer was alive but starved of CPU (or stopped) past the timeout, and
        its episodes are untouched (the next lease would have reset them).

        Raises:
            LeaseError: no such lease (released, expired and its slots taken, or another daemon run).
        """
        lease = self._leases.get(lease_id) if isinstance(lease_id, str) else None
        if lease is None and isinstance(lease_id, str) and lease_id in self._expired:
            lease = self._revive(self._expired[lease_id])
        if lease is None:
            raise LeaseError(
                "unknown lease (it expired after missed heartbeats, was released, or the daemon restarted)"
            )
        lease.last_seen = self._clock()
        return lease

    def _revive(self, lease: Lease) -> Lease | None:
        if not set(lease.slots) <= set(self.free_slots()):
            return None
        del self._expired[lease.lease_id]
        self._leases[lease.lease_id] = lease
        self._revived.append(lease)
        return lease

    def pop_revived(self) -> list[Lease]:
        """Leases revived since the last call (for the daemon's log and counters)."""
        revived, self._revived = self._revived, []
        return revived

    def pause(self, seconds: float) -> None:
        """Credit every lease ``seconds`` of silence: the daemon itself could not run (starved of
        CPU or stopped), so it could not read their heartbeats either."""
        for lease in self._leases.values():
            lease.last_seen += seconds

    def release(self, lease_id: str) -> Lease:
        """End a lease; its slots go to *draining*.

        Raises:
            LeaseError: no such lease.
        """
        lease = self.get(lease_id)
        del self._leases[lease_id]
        self._draining.update(lease.slots)
        return lease

    def expire(self) -> list[Lease]:
        """End every lease not seen for ``timeout`` seconds; their slots go to *draining*."""
        now = self._clock()
        gone = [lease for lease in self._leases.values() if now - lease.last_seen > self.timeout]
        for lease in gone:
            del self._leases[lease.lease_id]
            self._draining.update(lease.slots)
            self._expired[lease.lease_id] = lease
        while len(self._expired) > EXPIRED_KEPT:
            del self._expired[next(iter(self._expired))]
        return gone

    def drained(self, slots: Iterable[int]) -> None:
        """Draining ``slots`` are reset: they are free again."""
        self._draining.difference_update(slots)

    @property
    def draining(self) -> set[int]:
        """Slots waiting for in-flight work of an ended lease before they are free."""
        return set(self._draining)
