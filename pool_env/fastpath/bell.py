"""A doorbell between processes: an eventfd that one side rings and the other waits on.

The fast path signals "a command is posted" (coordinator → worker) and "a command is done"
(worker → coordinator) through sequence words in shared memory (:mod:`pool_env.fastpath.block`).
A waiter first spins on the word while a core is free for it (:func:`spin_budget`), then blocks
until its bell rings, so it burns no CPU while idle. The blocking half is this module.

Why an eventfd, measured on this project's 2-core machine with ``python -m pool_env.fastpath.probe``
(µs per round trip between two processes; "ring" is the waker's own call)::

                                        load < 1: median   load ≈ 9: median  p99    mean   ring
    spin on a shared-memory word, both busy       0.3                0.3     0.4    0.4     -
    eventfd, blocking read                        5.5-6.0            7.0    12.8   14.3    2.0
    pipe, blocking read                           6.1-6.3            7.6  2208     96.6    2.0
    futex on the shm word (ctypes)                9.6-10.5          11.0    84.5   33.9    2.3
    zmq ipc ROUTER/DEALER, 8 bytes               45-90              47.4    87.2   51.2    3.6

A pipe's median looks like an eventfd's, but a pipe write wakes its reader as a *synchronous*
wake-up (``WF_SYNC``: "the writer is about to sleep"), so the scheduler may pull the reader onto
the writer's core while the other core idles; under load that shows as millisecond tails, and
inside a worker (a named-pipe first version of this module) a publish took 112-131 µs on
average. An eventfd wakes its reader like any other event. It is also a file descriptor, so the
coordinator waits on its doorbell and its zmq socket in *one* ``zmq.Poller`` (a futex cannot be
polled with a socket), and many workers can ring one doorbell (the kernel adds the counts; a
futex would need an atomic shared counter that Python does not have). The price: the worker
inherits its two eventfds at spawn (``Popen(pass_fds=...)``), so a restarted worker gets them
again from the coordinator, which owns them for the pool's life.

A ring is skipped while the other side spins (it would find the word anyway): a waiter that
spins *announces* it in a word of its record (:class:`SpinFlag`), and the ringer reads that word
after storing its own. Both sides must order "store my word, then load the other's" — the store
and the later load may be reordered even on x86 (the store buffer), and then both could miss the
other: the ringer reads "spinning", the waiter reads the old word, stops spinning and blocks with no
ring coming (a lost wake-up costs a whole poll timeout). So between the two sits :func:`fence`,
the classic Dekker/futex handshake: the waiter stops announcing, fences, checks the word once
more, and only then blocks; the ringer stores its word, fences, and rings unless the waiter is
still announcing. At most one of them can miss the other's store, never both. A waiter that caught
the word while the ringer rang anyway finds a stale count later; that costs one extra poll and
drain, only on the blocking path.
"""

from __future__ import annotations

import enum
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol

import zmq

__all__ = [
    "SPIN_BUDGET",
    "AdaptiveSpin",
    "Announcer",
    "Bell",
    "Waiter",
    "Wake",
    "fence",
    "spin_budget",
    "spin_until",
    "usable_cores",
]

_DRAIN_BYTES = 65536
_POLLIN = int(zmq.POLLIN)  # plain ints: ``int & zmq.POLLIN`` builds an IntFlag member (≈ 1 µs)
_EVENTS = int(zmq.EVENTS)
_FENCE = threading.Lock()


def fence() -> None:
    """A full memory barrier: every store before it is visible to other processes before any
    load after it (≈ 0.1 µs).

    Taking an uncontended lock is an atomic read-modify-write in every CPython (a semaphore's or
    a mutex's compare-and-swap), which on x86-64 is a ``lock``-prefixed instruction: a full barrier
    that drains the store buffer. Python has no fence of its own; the fast path runs only on
    x86-64 (:func:`pool_env.fastpath.block.supported`). Nothing ever waits on this lock: one found
    held is replaced by a fresh one before it is taken. A signal handler that raises (Ctrl-C's
    ``KeyboardInterrupt``) between the acquire and the release leaves the lock held, and the next
    fence's acquire would then hang, and with it the pool (seen: timed ``KeyboardInterrupt``s in
    a step loop hung it within seconds). A try-acquire would not do: a failed one is no barrier
    (glibc reads the semaphore's count, sees 0 and returns without an atomic instruction), and its
    argument costs more than the ``locked()`` check.
    """
    global _FENCE
    lock = _FENCE
    if lock.locked():  # left held by a fence that a signal handler's exception cut short
        lock = _FENCE = threading.Lock()
    lock.acquire()
    lock.release()


class Announcer(Protocol):
    """Where a waiter announces that it spins, so that its ringer may skip the ring (:class:`SpinFlag`)."""

    def raise_(self) -> None:
        """Announce: spinning from now on."""

    def lower(self) -> None:
        """Stop announcing, then :func:`fence` (the caller checks its word once more before blocking)."""


class Bell:
    """An eventfd used as a doorbell: :meth:`ring` adds one, a waiter polls its descriptor.

    Args:
        fd: an eventfd inherited from the pool (a worker's side); ``None`` makes a new one, owned
            (and closed) by this object.

    Raises:
        OSError: no eventfd could be made.
    """

    _fd: int
    _owner: bool
    _poll: select.poll

    def __init__(self, fd: int | None = None) -> None:
        self._owner = fd is None
        # Non-blocking: ring never blocks, drain never blocks; waiting is poll's job. Close-on-exec
        # unless handed to a worker explicitly (Popen's pass_fds makes it inheritable there).
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) if fd is None else fd
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    def fileno(self) -> int:
        """The descriptor to register in a poller (readable when the bell rang)."""
        return self._fd

    def ring(self) -> None:
        """Wake whoever waits on this bell (one ``eventfd_write``, ≈ 0.5 µs; never blocks)."""
        os.eventfd_write(self._fd, 1)

    def drain(self) -> int:
        """Consume every pending ring; how many there were."""
        try:
            return os.eventfd_read(self._fd)
        except BlockingIOError:
            return 0

    def wait(self, timeout: float) -> bool:
        """Block until the bell rings or ``timeout`` seconds pass; whether it rang (it is drained).

        Uses no CPU while blocked.
        """
        if not self._poll.poll(max(0, int(timeout * 1000 + 0.999))):
            return False
        self.drain()
        return True

    def close(self) -> None:
        """Close the descriptor (an inherited one too: the worker is done with it). Idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Bell:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def spin_until(ready: Callable[[], bool], budget: float) -> bool:
    """Busy-poll ``ready()`` for up to ``budget`` seconds; whether it became true.

    The spinning half of "spin, then block": worth it only while the other side runs on another
    core; how long, see :func:`spin_budget`. ``budget <= 0`` checks once.
    """
    if ready():
        return True
    if budget <= 0:
        return False
    clock = time.perf_counter
    end = clock() + budget
    while clock() < end:
        # Yield each turn: a waker's wake-up lands on its own core first ("wake affine"), and a
        # spinner that does not yield keeps the woken process off that core for its whole budget
        # (measured: 118 µs round trips with a 50 µs budget, against 3 µs with the yield).
        os.sched_yield()
        if ready():
            return True
    return ready()


class AdaptiveSpin:
    """Spin-then-block that stops spinning where spinning does not pay.

    A spin pays when the other side answers within the budget; on a loaded machine it does not
    (``sched_yield`` hands the core to other processes for a whole time slice, measured here: a
    one-worker pool at 0.2x ``SyncVectorEnv`` with spinning, 2x without, at load 13). So each
    waiter keeps a moving score of its recent spins (hit = the answer came within twice the
    budget) and, while the score is below one half, blocks at once, trying one spin every
    ``probe_every`` waits to notice when spinning pays again: the adaptive spinning of glibc's
    adaptive mutexes and the JVM's locks, applied to one waiter.

    While it spins, it announces so through ``flag`` (if given): the other side skips its ring
    meanwhile, and after the spin the flag is lowered and ``ready()`` checked once more (see the
    module's docstring), so a ``False`` answer means: block, a ring will come.

    Args:
        budget: seconds to spin per wait (0: never spin).
        probe_every: waits between two trial spins while spinning does not pay.
        flag: where to announce the spinning (``None``: nowhere, every ring is a real write).
    """

    budget: float
    probe_every: int
    score: float
    flag: Announcer | None
    _skipped: int

    def __init__(self, budget: float, probe_every: int = 32, flag: Announcer | None = None) -> None:
        self.budget = budget
        self.probe_every = probe_every
        self.score = 1.0
        self.flag = flag
        self._skipped = 0

    def spin(self, ready: Callable[[], bool]) -> bool:
        """Spin on ``ready()`` if it pays lately; whether it is true (the caller blocks if not)."""
        if self.budget <= 0:
            return ready()
        if self.score < 0.5:
            self._skipped += 1
            if self._skipped < self.probe_every:
                return ready()
            self._skipped = 0
        start = time.perf_counter()
        flag = self.flag
        if flag is None:
            done = spin_until(ready, self.budget)
        else:
            flag.raise_()
            try:
                done = spin_until(ready, self.budget)
            finally:
                flag.lower()  # before the last check: a ring comes for anything it misses
            done = done or ready()
        hit = done and time.perf_counter() - start <= 2 * self.budget
        self.score += ((1.0 if hit else 0.0) - self.score) * 0.125
        return done


class Wake(enum.Enum):
    """Why :meth:`Waiter.wait` returned."""

    READY = "ready"  # the condition came true while spinning
    MESSAGE = "message"  # the zmq socket has a message
    BELL = "bell"  # the bell rang (drained)
    TIMEOUT = "timeout"  # nothing within the timeout


class Waiter:
    """One side's wait for the other, the same on both sides of the fast path.

    Spin on a condition while spinning pays (:class:`AdaptiveSpin`), then block in *one* poll on
    the side's bell and its zmq socket, so a wait ends on a posted/published word, a ring or a
    message, whichever comes first. The coordinator waits for its workers with one (its bell is
    the doorbell every worker rings), each worker waits for its next command with one.

    The poll is the kernel's (``select.poll``) on the bell and the socket's ``ZMQ_FD``, not
    ``zmq.Poller``: zmq's descriptor signals each *new* event edge, so the socket's events
    (``getsockopt(EVENTS)``, ≈ 3 µs) are asked once before blocking — which also catches a
    message whose edge was consumed already — and afterwards only if the socket's descriptor
    fired. Measured (2-core VM, two processes ping-ponging, waiter's CPU per round trip with its
    ring, median of 5 runs of 20000): ``zmq.Poller`` 22.3 µs, ``select.poll`` asking the events
    twice 21.0 µs, this way 13.0 µs, the bell alone 6.8 µs.

    Args:
        socket: the zmq socket whose messages end a wait (the coordinator's ROUTER, a worker's DEALER).
        bell: the bell that ends a wait (``None``: no fast path, the socket only).
        budget: seconds to spin per wait (0: never spin).
        flag: where the spin is announced (:class:`AdaptiveSpin`), so the other side skips its ring.
    """

    spin: AdaptiveSpin
    _socket: zmq.Socket[bytes]
    _bell: Bell | None
    _bell_fd: int
    _poll: select.poll

    def __init__(
        self, socket: zmq.Socket[bytes], bell: Bell | None, budget: float, flag: Announcer | None = None
    ) -> None:
        self.spin = AdaptiveSpin(budget, flag=flag)
        self._socket = socket
        self._bell = bell
        self._bell_fd = -1 if bell is None else bell.fileno()
        self._poll = select.poll()  # one, reused
        self._poll.register(int(socket.getsockopt(zmq.FD)), select.POLLIN)
        if bell is not None:
            self._poll.register(self._bell_fd, select.POLLIN)

    def has_message(self) -> bool:
        """Whether a message waits on the socket (asked, not caught as ``zmq.Again``: cheaper)."""
        return bool(int(self._socket.getsockopt(_EVENTS)) & _POLLIN)

    def wait(self, ready: Callable[[], bool] | None, timeout: float) -> Wake:
        """Spin on ``ready`` (if given), then block up to ``timeout`` seconds; why it returned.

        A message already queued returns at once (zmq's descriptor only signals new ones). A ring
        is drained here; the caller then checks its words. ``BELL`` may also mean a wake-up with
        nothing new (the socket's descriptor fired for another event): callers check and wait again.
        """
        if ready is not None and self.spin.spin(ready):
            return Wake.READY
        if self.has_message():
            return Wake.MESSAGE
        events = self._poll.poll(max(0, int(timeout * 1000)))
        if not events:
            return Wake.TIMEOUT
        rang = socket_fired = False
        for fd, _ in events:
            if fd == self._bell_fd:
                rang = True
            else:
                socket_fired = True
        if rang:
            assert self._bell is not None
            self._bell.drain()
        if socket_fired and self.has_message():
            return Wake.MESSAGE
        return Wake.BELL


SPIN_BUDGET = 1e-3
"""Seconds a waiter spins when a core is free for it (:func:`spin_budget`).

Not the competitive-spinning bound (spin about one wake-up, ≈ 20 µs, then block), which minimises
the CPU a wait burns: with a core of its own the spinner burns only that core's idle time, while
each blocking wait costs the critical path a wake-up (the waker's ≈ 10 µs ``eventfd_write``, the
sleeper's scheduling and cold caches). Measured on this project's 2-core machine, one worker and
a spinning trainer, CartPole (a loop of ``env.step``, load ≈ 0.7, one run after the other):
a 50 µs budget gave 0.38x / 0.50x / 0.80x ``SyncVectorEnv`` at N=4 / 16 / 64 (the trainer
blocked on every step: a worker's batch outlasts 50 µs), a 1 ms budget 0.54x / 0.75x / 0.89x
with no blocking at all. :class:`AdaptiveSpin` still stops spinning where answers take longer
than twice this (slow envs, a loaded machine)."""


def spin_budget(busy_processes: int, budget: float = SPIN_BUDGET, cores: int | None = None) -> float:
    """How long a waiter may spin: ``budget`` seconds if a core is free for it, else 0 (block at once).

    ``busy_processes`` counts the processes that must run meanwhile (e.g. the workers stepping).
    On a 2-core machine with two busy workers the coordinator never spins: it would take a core
    from the envs; with one worker both it and the trainer spin, each on its own core.
    ``cores`` defaults to the CPUs this process may run on.
    """
    return budget if busy_processes < (usable_cores() if cores is None else cores) else 0.0


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
