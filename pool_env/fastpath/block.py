"""The fast path's control block: one record of sequence words per worker, in shared memory.

The step/reset hot loop needs no socket round trip when nothing special happens. Per worker,
one 128-byte record (two cache lines, so the coordinator's and the worker's writes never share
a line) holds::

    word 0  command   (gen << 40) | seq   written last by the coordinator ("a command is posted")
    word 1  op        FAST_STEP | FAST_RESET
    word 2  flags     bit 0: word 3 holds a reset seed
    word 3  seed      slot ``s`` is reset with ``seed + s`` (gymnasium's rule for ``reset(seed=)``)
    word 4  mode      a small int the caller gives meaning to (the pool: the autoreset mode)
    word 5  spinning  1 while the coordinator spins on ``done`` (the worker need not ring it)
    word 8  done      (gen << 40) | seq   written by the worker after its result rows
    word 9  spinning  the worker's gen while it spins on ``command`` (the coordinator need not ring it)

The two ``spinning`` words let a ringer skip its eventfd write (≈ 3 µs here) while the other side
spins anyway; the handshake that keeps a wake-up from being lost is in :mod:`pool_env.fastpath.bell`.
The worker's carries its generation, so a process killed while it spun never silences the rings
its successor waits for; the coordinator's is only ever raised by the coordinator's own spins
(anyone else blocking on the doorbell, e.g. a daemon's poller, gets every ring).

The actions and results themselves stay in the pool's batch segment (:mod:`pool_env.shm`).
A worker publishes ``done`` only for a *clean* command: no errors, no infos, no new counters —
the common case. Anything else it answers over zmq as before (a ``done`` message with the same
``seq``), so errors, infos and every healing path keep their one route.

Staleness, as on the zmq wire: a worker acts only on a command word carrying its own
generation, and the coordinator accepts only the exact ``(gen, seq)`` it posted. A replaced
process is killed and reaped before its successor starts, and the successor's generation differs,
so a late write of an old process can never complete a new command, and a new process never
runs a command posted for its predecessor.

Ordering: the writer stores the payload (rows, op, seed) before the word and the reader loads
the word before the payload; on x86-64 (TSO) stores are seen in program order and CPython adds
no reordering across statements. Weaker memory models would need fences that Python cannot
issue, so :func:`supported` is false there and the pool keeps the zmq path.

The records are the ``control`` words at the end of the pool's one batch segment
(:func:`control_words` of them in its :class:`~pool_env.shm.BatchLayout`), so a worker maps one
segment and the same naming, size checks and orphan sweep apply.
"""

from __future__ import annotations

import platform
import sys
from typing import Any, NamedTuple

from pool_env import shm
from pool_env.fastpath.bell import Bell, fence

__all__ = [
    "DONE",
    "FAST_RESET",
    "FAST_STEP",
    "WORDS",
    "FastCommand",
    "FastLane",
    "SpinFlag",
    "WorkerPort",
    "control_words",
    "pack",
    "supported",
]

WORDS = 16
CMD, OP, FLAGS, SEED, MODE, DONE = 0, 1, 2, 3, 4, 8
COORDINATOR_SPINS, WORKER_SPINS = 5, 9
FAST_STEP, FAST_RESET = 1, 2
_SEEDED = 1
SEQ_BITS = 40
MAX_GEN = (1 << (63 - SEQ_BITS)) - 1
_SEQ_LIMIT = 1 << SEQ_BITS


def supported() -> bool:
    """Whether the fast path may run here: Linux (named pipes opened read-write) on x86-64 (TSO)."""
    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def pack(gen: int, seq: int) -> int:
    """One 64-bit word for ``(gen, seq)``, written and read in one store/load.

    Raises:
        ValueError: ``gen`` or ``seq`` out of range (gen < 2**23, 0 < seq < 2**40).
    """
    if not 0 <= gen <= MAX_GEN or not 0 < seq < _SEQ_LIMIT:
        raise ValueError(f"(gen, seq) = ({gen}, {seq}) out of range for the fast path")
    return (gen << SEQ_BITS) | seq


class FastCommand(NamedTuple):
    """A command a worker found in its record (a tuple: made on every command, ≈ 4x cheaper than a
    frozen dataclass)."""

    seq: int
    op: int
    seed: int | None
    mode: int = 0


class SpinFlag:
    """A waiter's announcement "I am spinning on my word" (:class:`~pool_env.fastpath.bell.Announcer`):
    ``value`` in some words of the control block while raised, 0 otherwise.

    Args:
        words: the control block (:func:`control_words`), as a flat int64 view.
        indices: the words to write (the coordinator: its word in every worker's record).
        value: the announcement (a worker: its generation; the coordinator: 1).
    """

    _words: memoryview
    _indices: list[int]
    _value: int

    def __init__(self, words: memoryview, indices: list[int], value: int) -> None:
        self._words = words
        self._indices = indices
        self._value = value

    def raise_(self) -> None:
        """Announce the spin: the ringer may skip its ring from now on."""
        words, value = self._words, self._value
        for index in self._indices:
            words[index] = value

    def lower(self) -> None:
        """Stop announcing and :func:`~pool_env.fastpath.bell.fence` (check the word after this)."""
        words = self._words
        for index in self._indices:
            words[index] = 0
        fence()


def control_words(num_workers: int) -> int:
    """How many ``control`` words a batch layout needs for ``num_workers`` records."""
    return WORDS * num_workers


def _words(buffers: shm.BatchBuffers, num_workers: int) -> memoryview:
    control = buffers.control
    if control is None or len(control) < control_words(num_workers):
        raise ValueError(f"the batch segment has no room for {num_workers} fast-path records")
    # A flat int64 memoryview: one word read or written costs ≈ 30 ns (a numpy scalar ≈ 100 ns).
    return control.data.cast("B").cast("q")


class FastLane:
    """The coordinator's side: the control block, one bell per worker and its own doorbell.

    Args:
        buffers: the pool's batch segment, made with :func:`control_words` ``(num_workers)`` control words.
        num_workers: records to use.

    Raises:
        ValueError: ``buffers`` has too few control words.
        OSError: an eventfd cannot be made.
    """

    num_workers: int
    doorbell: Bell
    spin_flag: SpinFlag
    """The coordinator's announcement that it spins on the ``done`` words (workers skip the doorbell)."""
    _words: memoryview
    _bells: list[Bell]
    _gens: list[int]

    def __init__(self, buffers: shm.BatchBuffers, num_workers: int) -> None:
        self.num_workers = num_workers
        self._bells = []
        self._words = _words(buffers, num_workers)
        self._gens = [-1] * num_workers  # of the last command posted to each record
        self.spin_flag = SpinFlag(self._words, [i * WORDS + COORDINATOR_SPINS for i in range(num_workers)], 1)
        try:
            self.doorbell = Bell()
            for _ in range(num_workers):
                self._bells.append(Bell())
        except BaseException:
            self.close()
            raise

    def worker_fds(self, index: int) -> tuple[int, int]:
        """The descriptors worker ``index`` must inherit (``Popen(pass_fds=...)``): its bell, the doorbell."""
        return (self._bells[index].fileno(), self.doorbell.fileno())

    def worker_config(self, index: int) -> dict[str, Any]:
        """What worker ``index`` needs to attach (goes in its ``init`` message)."""
        return {
            "workers": self.num_workers,
            "index": index,
            "bell": self._bells[index].fileno(),
            "doorbell": self.doorbell.fileno(),
        }

    def post(
        self, index: int, gen: int, seq: int, op: int, seed: int | None = None, mode: int = 0, ring: bool = True
    ) -> int:
        """Post command ``seq`` to worker ``index`` (generation ``gen``) and ring its bell (unless not
        ``ring``: the caller rings it with :meth:`ring` once every worker's command is posted).
        Returns the ``done`` word that finishes it, ``pack(gen, seq)``.

        The actions must already be in the batch segment.
        """
        base = index * WORDS
        words = self._words
        words[base + OP] = op
        words[base + MODE] = mode
        if seed is None:
            words[base + FLAGS] = 0
        else:
            words[base + FLAGS] = _SEEDED
            words[base + SEED] = seed
        word = words[base + CMD] = pack(gen, seq)
        self._gens[index] = gen
        if ring:
            self.ring(index)
        return word

    @property
    def words(self) -> memoryview:
        """The records as one flat int64 view (word ``index * 16 + 8``: worker ``index``'s ``done``)."""
        return self._words

    def ring(self, index: int) -> None:
        """Ring worker ``index``'s bell (after a :meth:`post` with ``ring=False``), unless the worker
        the command was posted to still spins on its record (it finds the command by itself)."""
        fence()  # the command word out before the worker's announcement is read (see bell.py)
        if self._words[index * WORDS + WORKER_SPINS] != self._gens[index]:
            self._bells[index].ring()

    def ring_many(self, indices: list[int]) -> None:
        """:meth:`ring` each worker of ``indices``, with one fence for them all."""
        fence()  # every command word out before any announcement is read (see bell.py)
        words, gens, bells = self._words, self._gens, self._bells
        for index in indices:
            if words[index * WORDS + WORKER_SPINS] != gens[index]:
                bells[index].ring()

    def finished(self, index: int, word: int) -> bool:
        """Whether worker ``index`` published ``word`` (``pack(gen, seq)`` of the awaited command)."""
        return bool(self._words[index * WORDS + DONE] == word)

    def close(self) -> None:
        """Close the bells and let go of the words (before the segment closes). Idempotent."""
        for bell in self._bells:
            bell.close()
        self._bells = []
        if hasattr(self, "doorbell"):
            self.doorbell.close()
        self._words.release()


class WorkerPort:
    """A worker's side: its record, its bell (to wait on) and the coordinator's doorbell (to ring).

    Args:
        config: :meth:`FastLane.worker_config` of this worker.
        gen: this process's generation; commands of other generations are ignored.
        buffers: the worker's view of the pool's batch segment.

    Raises:
        ValueError: ``buffers`` has too few control words.
        OSError: a descriptor was not inherited.
    """

    bell: Bell
    gen: int
    spin_flag: SpinFlag
    """This worker's announcement that it spins on its record (the coordinator skips its bell)."""
    _words: memoryview
    _base: int
    _doorbell: Bell
    _last_seq: int
    _gen_bits: int

    def __init__(self, config: dict[str, Any], gen: int, buffers: shm.BatchBuffers) -> None:
        self.gen = gen
        self._gen_bits = pack(gen, 1) - 1  # gen << SEQ_BITS, range-checked once
        self._words = _words(buffers, int(config["workers"]))
        self._base = int(config["index"]) * WORDS
        self._last_seq = 0
        self.spin_flag = SpinFlag(self._words, [self._base + WORKER_SPINS], gen)
        self.bell = Bell(int(config["bell"]))
        self._doorbell = Bell(int(config["doorbell"]))

    def poll(self) -> FastCommand | None:
        """The newest command posted for this generation and not yet taken, if any."""
        words, base = self._words, self._base
        seq = words[base + CMD] - self._gen_bits  # this generation's seq, if the word is of it
        if not self._last_seq < seq < _SEQ_LIMIT:
            return None
        self._last_seq = seq
        seed = words[base + SEED] if words[base + FLAGS] & _SEEDED else None
        return FastCommand(seq, words[base + OP], seed, words[base + MODE])

    def take(self, seq: int) -> None:
        """Mark ``seq`` taken (a command that came over zmq), so :meth:`poll` never returns it."""
        self._last_seq = max(self._last_seq, seq)

    def publish(self, seq: int) -> None:
        """Command ``seq`` is done and clean (its rows are written): tell the coordinator (ring its
        doorbell, unless it still spins on the words: it finds the word by itself)."""
        words, base = self._words, self._base
        words[base + DONE] = self._gen_bits | seq
        fence()  # the done word out before the coordinator's announcement is read (see bell.py)
        if words[base + COORDINATOR_SPINS] != 1:
            self._doorbell.ring()

    def close(self) -> None:
        """Close the bells and let go of the words (before the segment closes). Idempotent."""
        self.bell.close()
        self._doorbell.close()
        self._words.release()
