"""Double-buffered observations: the previous observation of a slot stays intact without a copy.

A slot that fails (its env raised, its worker died or hung mid-command) is returned with the
observation it was returned with last. A worker that dies mid-command may already have written
some of its rows, so that observation must survive somewhere other than the row being written.
With one bank, the trainer keeps a private copy of every observation it hands out: a third copy
of every observation (the worker's write and the copy handed out are the other two), which costs
as much as the other two together for large observations (84x84x4 frames).

With two banks (``BatchLayout.obs_banks == 2``) the segment holds every observation array twice
and a byte per slot naming its *current* bank. A worker writes a slot's new observation into the
other bank and makes it current when the row is complete (:class:`BankWriter`); the trainer
(:class:`ObservationBanks`) remembers which bank it took each slot from last. For a failed slot it
points the slot back at that bank, whose row no command has written since: the previous
observation, without any copy. It is the page-flipping of double-buffered frame buffers, and the
same role as EnvPool's state buffers: the trainer reads what workers finished, never what they
are writing.

Who writes the current-bank bytes: a worker for its rows of a command it is executing (only after
the row is complete, so a worker killed at any instant leaves either the old or a complete new
row current), the trainer for rows of commands that finished (pointing failed slots back, and
re-aligning slots out of step with the others after a full batch). Never both at once: the
trainer touches a slot's byte only while no command for it is in flight.

With one bank (a layout without the second, or ``/dev/shm`` too small for it: :func:`pool_env.shm.create`
falls back) :class:`ObservationBanks` keeps the private copy as before, and :class:`BankWriter`
always writes bank 0; callers see no difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pool_env.shm import BatchBuffers

__all__ = ["BankWriter", "EarlyRows", "ObservationBanks"]

Rows = slice | np.ndarray


class _SameBank:
    """The bank all of ``n`` slots are current in, when they agree (``None`` otherwise): one bytes
    compare of their bank bytes, cheaper than numpy reductions on the hot path."""

    def __init__(self, n: int) -> None:
        self._first, self._second = bytes(n), b"\x01" * n

    def of(self, banks: np.ndarray) -> int | None:
        raw = banks.tobytes()
        return 0 if raw == self._first else 1 if raw == self._second else None


class EarlyRows:
    """Observation rows of workers that finished a full batch first, copied while the others still
    step: the trainer waits for its slowest worker anyway, and for large observations the copy is
    most of its time in a step (84x84x4 frames: ≈ 70 µs of ≈ 100 µs at 64 slots).

    Made by :meth:`ObservationBanks.early_rows` for one command; called with a finished worker's
    slots (rows of a clean call that published its result: final until the next command);
    :meth:`ObservationBanks.take` of that command's full, clean batch then copies only the rest.
    It is used only if every slot ends in the bank the early rows were copied from; else it is
    dropped and take copies everything, as without it.
    """

    leaves: list[np.ndarray] | None
    """The arrays handed out by the take (``None`` until the first early rows)."""
    bank: int
    spans: list[tuple[int, int]]
    """The rows copied so far, as ``(start, stop)``."""

    def __init__(self, banks: ObservationBanks) -> None:
        self._banks = banks
        self.leaves = None
        self.bank = -1
        self.spans = []

    def __call__(self, slots: Sequence[int]) -> None:
        """Copy ``slots``' rows (a worker's contiguous slots, its call published) now."""
        self._banks.copy_early(self, slots)

    def finish(self, source: list[np.ndarray]) -> list[np.ndarray]:
        """Copy the rows not copied early from ``source`` (the bank every slot is in); the leaves."""
        assert self.leaves is not None
        n = len(self.leaves[0])
        at = 0
        for start, stop in [*sorted(self.spans), (n, n)]:
            if at < start:
                for target, leaf in zip(self.leaves, source, strict=True):
                    target[at:start] = leaf[at:start]
            at = max(at, stop)
        return self.leaves


class ObservationBanks:
    """The trainer's side: the observations out of the segment (copies, or views of a bank).

    Args:
        buffers: the pool's batch segment (one or two observation banks).

    Used by the full-batch reader (:class:`pool_env.vector_env.PoolVectorEnv`) and the partial
    one (:class:`pool_env.partial.PartialBatcher`) alike: both take rows of commands that
    finished, and a failed slot comes back with what either handed out for it last.
    """

    def __init__(self, buffers: BatchBuffers) -> None:
        self._banks = buffers.obs_banks
        self._current = buffers.obs_bank  # shared: each slot's current bank (None with one bank)
        n = buffers.layout.num_envs
        self.double = self._current is not None
        """Whether the segment has two banks (no private copy here)."""
        self._taken = None if self._current is None else self._current.copy()  # the bank each slot was taken from last
        # A clean full batch taken from one bank records only that bank here; _taken_rows() writes it
        # into _taken when a row is asked for (the hot path saves a numpy assignment per step).
        self._taken_all: int | None = None
        # One bank: the observations handed out last, kept privately (the trainer may change the
        # returned arrays in place). Zeros before the first: what a slot failed before any reset shows.
        self._kept = None if self.double else [np.zeros_like(array) for array in buffers.obs]
        self._every = slice(0, n)
        self._same = _SameBank(n)
        self._same_of_size: dict[int, _SameBank] = {}  # for early rows (a worker's slots)

    def keep_previous(self, failed: Sequence[int]) -> None:
        """Point ``failed`` slots back at the observation they were taken with last.

        Call it for the failed slots of a finished command before the next command for them is
        sent: their worker may have written (and even made current) a new observation before it
        died. :meth:`take` does it for the slots it is given as failed.
        """
        if self._current is not None and failed:
            chosen = list(failed)
            self._current[chosen] = self._taken_rows()[chosen]

    def previous(self, slot: int) -> list[np.ndarray]:
        """Copies of the leaves of ``slot``'s observation taken last (after :meth:`keep_previous`
        for it, if it failed)."""
        if self._taken is None:
            assert self._kept is not None
            return [leaf[slot].copy() for leaf in self._kept]
        return [leaf[slot].copy() for leaf in self._banks[int(self._taken_rows()[slot])]]

    def early_rows(self) -> EarlyRows | None:
        """A holder for the rows of one command's early workers (:class:`EarlyRows`); ``None``
        with one bank (the private copy is made by take)."""
        return None if self._current is None else EarlyRows(self)

    def copy_early(self, early: EarlyRows, slots: Sequence[int]) -> None:
        """Copy the rows of ``slots`` (contiguous, of a call that finished clean) into ``early``, if
        they are all in one bank, the bank of the rows copied before (else :meth:`take` copies them)."""
        if self._current is None or not slots:
            return
        start, stop = slots[0], slots[-1] + 1
        if stop - start != len(slots):
            return
        same = self._same_of_size.get(stop - start)
        if same is None:
            same = self._same_of_size[stop - start] = _SameBank(stop - start)
        bank = same.of(self._current[start:stop])
        if bank is None or (early.leaves is not None and bank != early.bank):
            return
        if early.leaves is None:
            early.leaves = [np.empty_like(leaf) for leaf in self._banks[bank]]
            early.bank = bank
        for target, leaf in zip(early.leaves, self._banks[bank], strict=True):
            target[start:stop] = leaf[start:stop]
        early.spans.append((start, stop))

    def take(
        self,
        rows: np.ndarray | None = None,
        failed: Sequence[int] = (),
        copy: bool = True,
        early: EarlyRows | None = None,
    ) -> list[np.ndarray]:
        """Copies of the current observation leaves: ``[len(rows), *shape]`` each, or
        ``[num_envs, *shape]`` for every slot (``rows=None``).

        ``failed`` slots (a subset of ``rows``) come back with the observation taken last for them.
        Every slot of ``rows`` must belong to a finished command. ``copy=False``: every slot's
        (two banks, every slot in the same bank) come back as views of the segment, untouched by
        the next command (whose rows go to the other bank) and overwritten by the one after it.
        ``early``: rows of this command copied already (:class:`EarlyRows`; a full, clean batch only).
        """
        current = self._current
        if current is None:
            return self._take_kept(rows, failed)
        if rows is None and not failed:  # the hot path: a clean full batch, as a rule from one bank
            uniform = self._same.of(current)
            if uniform is not None:
                self._taken_all = uniform
                source = self._banks[uniform]
                if not copy:
                    return [leaf[self._every] for leaf in source]
                if early is not None and early.leaves is not None and early.bank == uniform:
                    return early.finish(source)
                return [leaf.copy() for leaf in source]
        self.keep_previous(failed)
        taken = self._taken_rows()
        every = rows is None
        chosen: Rows = self._every if rows is None else rows
        banks = current[chosen]
        uniform = (self._same if every else _SameBank(banks.size)).of(banks)
        if uniform is not None:
            source = self._banks[uniform]
            leaves = (
                [leaf[chosen] for leaf in source]
                if every and not copy
                else [_copy_rows(leaf, chosen) for leaf in source]
            )
        else:  # slots out of step with each other (one failed, or partial batches): row by row
            in_second = banks.astype(bool)
            leaves = [_copy_rows(leaf, chosen) for leaf in self._banks[0]]
            for leaf, second in zip(leaves, self._banks[1], strict=True):
                leaf[in_second] = second[chosen][in_second]
            if every:
                self._align(banks)
                banks = current[chosen]
        taken[chosen] = banks
        return leaves

    def _taken_rows(self) -> np.ndarray:
        """The bank each slot was taken from last, one byte per slot (two banks only)."""
        taken = self._taken
        assert taken is not None
        if self._taken_all is not None:
            taken.fill(self._taken_all)
            self._taken_all = None
        return taken

    def _align(self, banks: np.ndarray) -> None:
        """Bring the slots whose current bank differs from most slots' into step with them.

        After a failed slot kept its bank while the others moved on, every later batch would be
        read row by row from both banks; copying those few rows across once restores the single
        contiguous copy. Only for a full batch, when no command is in flight for any slot.
        """
        assert self._current is not None
        majority = int(np.count_nonzero(banks) * 2 > banks.size)
        odd = np.flatnonzero(banks != majority)
        for source, target in zip(self._banks[1 - majority], self._banks[majority], strict=True):
            target[odd] = source[odd]
        self._current[odd] = majority

    def _take_kept(self, rows: np.ndarray | None, failed: Sequence[int]) -> list[np.ndarray]:
        assert self._kept is not None
        chosen: Rows = self._every if rows is None else rows
        leaves = [_copy_rows(leaf, chosen) for leaf in self._banks[0]]
        if failed:
            slots = list(failed)
            if rows is None:
                positions = slots
            else:
                position = {int(slot): i for i, slot in enumerate(rows)}
                positions = [position[slot] for slot in slots]
            for leaf, kept in zip(leaves, self._kept, strict=True):
                leaf[positions] = kept[slots]
        for kept, leaf in zip(self._kept, leaves, strict=True):
            kept[chosen] = leaf
        return leaves


class BankWriter:
    """A worker's side: which bank each of its rows is written into during one command.

    Args:
        buffers: the pool's batch segment, attached.
        rows: the worker's global slot ids (its rows); local slot ``i`` is ``rows[i]``.

    :meth:`begin` at the start of every command takes, for each row, the bank that is *not*
    current; writes go there (:attr:`leaves` when every row agrees, else :meth:`leaves_of`), and
    :meth:`commit` makes the written rows current once they are complete. A row written twice in
    one command goes to the same bank both times.
    """

    leaves: list[np.ndarray] | None
    """Where this command writes every row, when all rows share a bank (``None`` otherwise)."""

    def __init__(self, buffers: BatchBuffers, rows: list[int]) -> None:
        self._banks = buffers.obs_banks
        self._current = buffers.obs_bank
        self.double = self._current is not None
        first = rows[0] if rows else 0
        contiguous = rows == list(range(first, first + len(rows)))
        self._rows: Rows = slice(first, first + len(rows)) if contiguous else np.asarray(rows, dtype=np.intp)
        self._same = _SameBank(len(rows))
        # Our rows' current-bank bytes as a view of the segment when they are contiguous: no
        # indexing per command (a fancy index would copy, so scattered rows are indexed each time).
        self._view = None if self._current is None or not contiguous else self._current[self._rows]
        self._target = 0
        self._targets: np.ndarray | None = None  # per local slot, when the rows disagree
        self.leaves = self._banks[0]

    def begin(self) -> None:
        """Take this command's target bank of every row (the one not current)."""
        if self._current is None:
            return
        mine = self._view if self._view is not None else self._current[self._rows]
        common = self._same.of(mine)
        if common is not None:
            self._target = 1 - common
            self._targets = None
            self.leaves = self._banks[self._target]
        else:
            self._targets = 1 - mine
            self.leaves = None

    def leaves_of(self, slot: int) -> list[np.ndarray]:
        """The arrays local ``slot``'s row is written into in this command."""
        if self._targets is None:
            return self._banks[self._target]
        return self._banks[int(self._targets[slot])]

    def commit(self, slots: Sequence[int], rows: Any) -> None:
        """Make the rows written in this command current: local ``slots``, global ``rows`` (a
        slice or a list of the same slots). Only rows written completely (never a failed one)."""
        if self._current is None or not len(slots):
            return
        if self._targets is None:
            if self._view is not None and type(rows) is slice and rows == self._rows:
                self._view.fill(self._target)  # every row of ours: ≈ 0.3 µs less than a slice assignment
            else:
                self._current[rows] = self._target
        else:
            self._current[rows] = self._targets[list(slots)]

    def copy_current(self, slot: int, row: int) -> None:
        """Write ``row``'s current observation into its target (a successful outcome without one
        keeps its observation; committing the row must not expose a stale one)."""
        if self._current is None:
            return
        source = self._banks[int(self._current[row])]
        for target, array in zip(self.leaves_of(slot), source, strict=True):
            target[row] = array[row]


def _copy_rows(array: np.ndarray, rows: Rows) -> np.ndarray:
    """A copy of ``array``'s ``rows`` (a fancy index copies already, a slice is a view)."""
    taken = array[rows]
    return taken.copy() if isinstance(rows, slice) else taken
