"""The coordinator: slots ↔ workers, commands with sequence numbers, deadlines, results.

One ROUTER socket (``ipc://`` in a private 0700 directory) talks to every worker's DEALER.
A command goes to each worker that owns one of its slots; the actions and results live in
shared memory, so messages stay tiny. The worker processes belong to the
:class:`~pool_env.supervisor.Supervisor` (spawn, liveness, restart policy); while waiting for
replies the coordinator lets it check them, and itself fails a worker that does not answer
within ``step_timeout``. Only a failed worker's slots are reported failed — truncated,
reward 0, with a :class:`~pool_env.errors.SlotFailure` in ``errors`` (its kind, and the fate of
the slot's step: unknown if the command had reached the worker, not applied otherwise).

Unlike gymnasium's ``AsyncVectorEnv`` (which returns to idle on a timeout while replies are
still in flight), a command stays pending until every worker answered or was replaced, and
replies carry ``(generation, seq)``, so a late reply can never be read as a new one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import zmq

from pool_env import errors, fastpath, protocol, shm
from pool_env.commands import CommandResult, PendingCommand, WorkerCall, split_slots
from pool_env.config import PoolOptions
from pool_env.env_failures import env_name, judge_env_failures
from pool_env.envs import EnvSpec
from pool_env.errors import (
    EnvCreationError,
    ErrorKind,
    PoolEnvError,
    PoolGaveUpError,
    ProtocolError,
    QuotaExceededError,
    SlotFailure,
    StepFate,
    StepTimeoutError,
)
from pool_env.fastpath.route import FastCalls, fast_plan
from pool_env.fastpath.steady import SteadyCalls, pool_plan
from pool_env.protocol import Op
from pool_env.quick_step import QuickStep
from pool_env.recycle import Handovers, Recycler
from pool_env.supervisor import ALIVE, Supervisor, WorkerHandle, WorkerState
from pool_env.supervisor.rundir import RunDir
from pool_env.trainer_slots import TrainerSlots

__all__ = ["Coordinator"]

log = logging.getLogger(__name__)

LIVENESS_POLL_MS = 50
MAX_GROUPS = 64  # slot splits kept by Coordinator._group (a daemon: one per lease shape)

_NEWS = frozenset({"obs", "values", "call_error", "in_a_row"})
"""Keys of a ``done`` reply besides infos and errors that :meth:`Coordinator._merge_done` acts on."""


class Coordinator:
    """Owns the workers, the control socket and the shared-memory buffers of one pool."""

    def __init__(
        self,
        spec: EnvSpec,
        layout: shm.BatchLayout,
        num_workers: int,
        options: PoolOptions,
        log_level: str = "WARNING",
        spaces: dict[str, Any] | None = None,
        trainer_slots: int = 0,
    ) -> None:
        self.spec = spec
        self._spaces = spaces  # the pool's spaces (space_check.describe_pool): workers check their envs'
        self._start_failure: Exception | None = None
        self.options = options
        self.step_timeout = options.effective_step_timeout(spec)
        self.counters: Counter[str] = Counter()
        self.error_kinds: Counter[ErrorKind] = Counter()  # every slot failure reported, by kind
        self.base_seed: int | None = None
        self.num_envs = layout.num_envs
        # Observation leaves without a fixed shape (shm.MESSAGE_DTYPE): their last value per slot,
        # from the workers' replies (their place in the segment is unused).
        self.message_obs: dict[int, list[Any]] = {
            i: [None] * layout.num_envs for i, leaf in enumerate(layout.obs) if leaf.by_message
        }
        self._env_name = env_name(spec)
        self._seq = 0
        self._closed = False
        self._created_at = time.monotonic()
        shm.sweep_orphans()
        self._run_dir = RunDir()  # mode 0700: only we can connect; stale ones of dead trainers swept
        self._socket_dir = self._run_dir.path
        self.endpoint = self._run_dir.endpoint
        self._context = zmq.Context()
        self._socket: zmq.Socket[bytes] = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.buffers: shm.BatchBuffers | None = None
        self.supervisor: Supervisor | None = None
        groups = split_slots(self.num_envs - trainer_slots, num_workers)
        self.trainer_slots = list(range(self.num_envs - trainer_slots, self.num_envs))
        self._trainer: TrainerSlots | None = None
        # The fast path (pool_env.fastpath): clean steps/resets through sequence words in the segment.
        self._fast: fastpath.FastLane | None = None
        self._fast_calls: FastCalls | None = None  # the calls on the fast path (pool_env.fastpath.route)
        self._steady: SteadyCalls | None = None  # plain calls of every slot (pool_env.fastpath.steady)
        self._cores = fastpath.usable_cores()
        # Spin while waiting for workers only if a core is free for it (never take one from the envs).
        spin = fastpath.spin_budget(num_workers, cores=self._cores)
        self._waiter = fastpath.Waiter(self._socket, None, spin)  # for the fast path, remade with its doorbell
        self._tail_spin = fastpath.AdaptiveSpin(fastpath.SPIN_BUDGET)  # waiting for the last workers (steady path)
        try:
            self._socket.bind(self.endpoint)
            if options.fast_path and fastpath.supported():
                layout = dataclasses.replace(layout, control_words=fastpath.control_words(num_workers))
            self.buffers = shm.create(layout)
            if layout.control_words:
                self._fast = fastpath.FastLane(self.buffers, num_workers)
                self._fast_calls = FastCalls(self._fast)
                # While it spins, the workers skip the doorbell (pool_env.fastpath.bell: the handshake).
                flag = self._fast.spin_flag
                self._waiter = fastpath.Waiter(self._socket, self._fast.doorbell, spin, flag)
                self._tail_spin = fastpath.AdaptiveSpin(fastpath.SPIN_BUDGET, flag=flag)
            fast = self._fast
            # Only an env_fns pool's own workers may unpickle (its factories, in init).
            self.supervisor = Supervisor.of_subprocesses(
                groups,
                options,
                self.endpoint,
                self._socket_dir,
                log_level,
                accept_pickle=spec.carries_code,
                worker_fds=None if fast is None else fast.worker_fds,
            )
        except BaseException:
            self.close()
            raise
        self.workers = self.supervisor.workers
        self._queues: dict[int, deque[WorkerCall]] = {w.worker_id: deque() for w in self.workers}
        self._lost: dict[int, str] = {}  # slot -> why its episode ended without being reported yet
        self._last_check = 0.0
        self._all_by_worker = {w: list(w.slots) for w in self.workers}  # records stay (recycling too)
        self._all_slots = list(range(self.num_envs))  # built once: submit() of every slot is the hot path
        self._server_steps_counted = getattr(spec, "kind", None) == "http"  # max_server_steps applies
        self._slot_worker = {slot: w for w in self.workers for slot in w.slots}
        self._groups: dict[tuple[int, ...], tuple[list[int], dict[WorkerHandle, list[int]]]] = {}  # _group's
        recycler = Recycler.from_options(options)  # None unless recycling is asked for
        self._handovers: Handovers | None = None  # the recycling handovers (pool_env.recycle)
        if self._fast_calls is not None and recycler is None:  # handovers need the generic path
            self._steady = SteadyCalls(self._fast_calls, self._queues, self.workers)
        if recycler is not None:
            self._handovers = Handovers(
                recycler, self.supervisor, self.buffers, self._slot_worker, self.counters,
                self._send_head, self._fail_call, self._ask_to_close,
            )  # fmt: skip

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn every worker in parallel and wait until all are ready.

        Raises:
            EnvCreationError: a worker could not create its envs.
            WorkerStartError: a worker exited or did not get ready within ``start_timeout``.
        """
        self._supervisor.start_all()
        if self.trainer_slots:
            assert self.buffers is not None
            self._trainer = TrainerSlots(self.spec, self.trainer_slots, self.buffers)
        try:
            self._supervisor.wait_ready(self._pump, LIVENESS_POLL_MS / 1000)
        except EnvCreationError:
            if isinstance(self._start_failure, EnvCreationError):  # the worker's own error, with its class
                raise self._start_failure from None
            raise

    def close(self) -> None:
        """Stop every worker (bounded time), close the socket, unlink shared memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.supervisor is not None:
            self.supervisor.stop_all(ask=self._ask_to_close)
        self._socket.close(linger=0)
        self._context.term()
        if self._trainer is not None:
            self._trainer.close()
        if self._fast is not None:
            self._fast.close()  # before the segment: it holds a view of it
        if self.buffers is not None:
            self.buffers.close()
        self._run_dir.close()

    def _ask_to_close(self, handle: WorkerHandle) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._socket.send_multipart([handle.identity, protocol.encode({"op": Op.CLOSE.value})])

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- commands ---------------------------------------------------------------------------

    def submit(
        self,
        op: Op,
        slots: Iterable[int] | None = None,
        seeds: Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
        autoreset: str = "NextStep",
        invocation: dict[str, Any] | None = None,
        actions: dict[int, list[Any]] | None = None,
        give_back: bool = False,
    ) -> PendingCommand:
        """Send ``op`` for ``slots`` (all when ``None``) to their workers.

        ``actions``: action leaf index -> its value per slot, for the leaves without a fixed shape
        (:data:`pool_env.shm.MESSAGE_DTYPE`; the others are in shared memory). They travel in the
        commands (never on the fast path).

        ``autoreset`` is the value of a ``gymnasium.vector.AutoresetMode`` (the workers follow
        it for this command: reset ended slots on the next step, within the step, or never).
        ``invocation`` (for ``Op.CALL``): ``{name, args, kwargs}`` or ``values`` (slot →
        value, for ``set_attr``).

        Several commands may be in flight at once (the daemon serves several trainers); each
        worker executes its share of them in order. Workers that are restarting get the
        command as soon as they are ready; workers in backoff or given up on answer at once
        with an error for their slots.

        ``give_back``: the caller keeps no reference to the command nor its result once it
        collected it (the next command's, or a later one's, may then be the same objects, their
        fields renewed: :meth:`SteadyCalls.renew <pool_env.fastpath.steady.SteadyCalls.renew>`).

        Raises:
            QuotaExceededError: a step that would pass ``HttpEnvSpec.max_server_steps`` (nothing sent).
        """
        slots = None if slots is None else list(slots)
        if op is Op.STEP and self._server_steps_counted:
            self._charge_server_steps(self.num_envs if slots is None else len(slots))
        steady = self._steady
        if (
            steady is not None
            and slots is None
            and options is None
            and invocation is None
            and actions is None
            and not self._lost
            and steady.idle()
        ):
            plan = pool_plan(op, None if seeds is None else list(seeds), autoreset)
            if plan is not None:
                return self._submit_steady(steady, op, plan, seeds, autoreset, give_back)
        handovers = self._handovers
        if handovers is not None:
            handovers.tick(self.workers, self._queue)
        self._seq += 1
        mine: list[int] = []  # the trainer's own slots (trainer_slots)
        by_worker: dict[WorkerHandle, list[int]] = {}
        if slots is None and not (handovers is not None and handovers.active):
            chosen = self._all_slots
            by_worker = self._all_by_worker
            mine = self.trainer_slots
        else:
            chosen = self._all_slots if slots is None else slots
            mine, by_worker = self._group(chosen)
        seed_of = dict(zip(chosen, seeds, strict=True)) if seeds is not None else {}
        pending = PendingCommand(op, self._seq)
        # Post every worker's command before ringing any bell: a woken worker may take this core
        # from us (wake-up preemption), and the next worker's command would wait for it.
        fast_calls = self._fast_calls
        if fast_calls is not None:
            fast_calls.rings = []
        if mine:
            pending.local = self._message(op, mine, seed_of, options, autoreset, invocation, actions)
        for handle, worker_slots in by_worker.items():
            self._supervisor.restart_if_due(handle)
            if self._lost and op is Op.STEP and any(s in self._lost for s in worker_slots):
                # Slots whose episode died with a worker while another command was running:
                # report that now (truncated + error); the new worker resets them next step.
                lost = [s for s in worker_slots if s in self._lost]
                gone = WorkerCall(pending, handle, handle.gen, {"slots": lost}, lost)
                pending.calls.append(gone)
                self._fail_call(gone, ErrorKind.EPISODE_LOST, "episode lost: " + self._lost[lost[0]])
                worker_slots = [s for s in worker_slots if s not in lost]
                if not worker_slots:
                    continue
            if self._lost:
                for slot in worker_slots:
                    self._lost.pop(slot, None)  # a reset starts a new episode anyway
            message = self._message(op, worker_slots, seed_of, options, autoreset, invocation, actions)
            handover = None if handovers is None else handovers.of(handle)
            if handover is not None:
                assert handovers is not None
                handovers.mark(handover, handle, message)
            call = WorkerCall(pending, handle, handle.gen, message, worker_slots)
            # During a handover, and until a recycled process is gone (it shares the bell), zmq only.
            recycling = handovers is not None and (
                handover is not None or self._supervisor.has_retired(handle.worker_id)
            )
            if fast_calls is not None and invocation is None and actions is None and not recycling:
                call.fast = fast_plan(op, worker_slots, len(handle.slots), message.get("seeds"), options, autoreset)
            pending.calls.append(call)
            if handle.state in (WorkerState.BACKOFF, WorkerState.FATAL):
                kind = ErrorKind.GAVE_UP if handle.state is WorkerState.FATAL else ErrorKind.WORKER_RESTARTING
                self._fail_call(call, kind, handle.last_error or "worker restarting")
                continue
            self._queue(handle).append(call)
            self._send_head(handle)
        if fast_calls is not None:
            fast_calls.ring_all()
        return pending

    def _group(self, slots: list[int]) -> tuple[list[int], dict[WorkerHandle, list[int]]]:
        """``slots`` split into the trainer's own (``trainer_slots``) and each worker's, in order.

        A daemon's lease submits the same slots on every step: 64 dict look-ups and appends, the
        largest Python item of the daemon in a CPU-time cProfile (which inflates such small calls;
        ``timeit``: 7-13 µs per step, 1.3 µs with the split kept). So a split is kept while the
        slot → worker map cannot change, i.e. without recycling's handovers (the only writer of
        that map). The lists handed out are shared between calls, as ``_all_by_worker``'s are:
        nobody mutates them.
        """
        key = tuple(slots)
        cacheable = self._handovers is None
        if cacheable:
            hit = self._groups.get(key)
            if hit is not None:
                return hit
        mine: list[int] = []
        by_worker: dict[WorkerHandle, list[int]] = {}
        slot_worker = self._slot_worker
        for slot in key:
            owner = slot_worker.get(slot)
            if owner is None:
                mine.append(slot)
            else:
                by_worker.setdefault(owner, []).append(slot)
        if cacheable:
            if len(self._groups) >= MAX_GROUPS:  # leases come and go: keep the recent ones
                self._groups.clear()
            self._groups[key] = (mine, by_worker)
        return mine, by_worker

    def _submit_steady(
        self,
        steady: SteadyCalls,
        op: Op,
        plan: tuple[int, int | None, int],
        seeds: Sequence[int | None] | None,
        autoreset: str,
        give_back: bool,
    ) -> PendingCommand:
        """:meth:`submit` of a plain call of every slot while every worker is healthy and idle
        (:mod:`pool_env.fastpath.steady`): the same records, posted at once; with ``give_back``,
        the records of the last such call renewed rather than new ones made."""
        self._seq += 1
        pending = steady.renew(op, autoreset, self._seq) if give_back and seeds is None else None
        if pending is None:
            pending = PendingCommand(op, self._seq)
        seed_of = dict(zip(self._all_slots, seeds, strict=True)) if seeds is not None else {}
        if self.trainer_slots:
            pending.local = self._message(op, self.trainer_slots, seed_of, None, autoreset, None)
        steady.post(pending, plan, lambda slots: self._message(op, slots, seed_of, None, autoreset, None), give_back)
        return pending

    def quick_step(self, autoreset: str) -> QuickStep | None:
        """The quick step of a plain full step in ``autoreset`` mode (:mod:`pool_env.quick_step`), if
        this pool's steps can take the steady path at all: the fast path without recycling, no
        trainer slots, no server-step quota to charge, an autoreset mode the fast path carries."""
        plan = pool_plan(Op.STEP, None, autoreset)
        if self._steady is None or plan is None or self.trainer_slots or self._server_steps_counted:
            return None
        return QuickStep(self, self._steady, plan, autoreset, LIVENESS_POLL_MS / 1000)

    def _message(
        self,
        op: Op,
        slots: list[int],
        seed_of: dict[int, int | None],
        options: dict[str, Any] | None,
        autoreset: str,
        invocation: dict[str, Any] | None,
        actions: dict[int, list[Any]] | None = None,
    ) -> dict[str, Any]:
        """The command message for ``slots`` (one worker's, or the trainer's own)."""
        message: dict[str, Any] = {"op": op.value, "seq": self._seq, "slots": slots}
        if autoreset != "NextStep":  # the default stays implicit: messages stay small
            message["autoreset"] = autoreset
        if invocation is not None:
            message.update({k: v for k, v in invocation.items() if k != "values"})
            if invocation.get("values") is not None:
                message["values"] = [invocation["values"][s] for s in slots]
        if op is Op.RESET:
            message["seeds"] = [seed_of.get(s) for s in slots]
            message["options"] = options
        if actions:
            message["actions"] = {s: [values[s] for values in actions.values()] for s in slots}
        return message

    def collect(
        self,
        pending: PendingCommand,
        timeout: float | None = None,
        early: Callable[[list[int]], None] | None = None,
    ) -> CommandResult:
        """Wait for every worker of ``pending``; heal the ones that die or hang.

        ``early``: called with the slots of the workers that finished a steady call clean while a
        core waits for the last ones (:class:`pool_env.banks.EarlyRows` copies their rows then).

        Raises:
            StepTimeoutError: ``timeout`` passed first (``pending`` stays valid: call again).
            HttpStatusError, PoolEnvError: a worker reported a fatal error (after all others answered).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if pending.local is not None:  # the trainer's own slots, while the workers step theirs
            self._run_trainer_slots(pending)
        steady = self._steady
        # Retired by the steady path: every call of ``pending`` is done, the workers' health checked
        # as due; nothing is left for the loop below.
        if (
            steady is not None
            and steady.inflight
            and steady.inflight[0][0].pending is pending
            and self._collect_steady(steady, deadline, early)
        ):
            if pending.result.fatal is not None:
                raise pending.result.fatal
            return pending.result
        while True:
            now = time.monotonic()
            if now - self._last_check >= LIVENESS_POLL_MS / 1000:  # not on every message: it costs waitpids
                self._check_workers(now)
            if self._fast_calls is not None and self._fast_calls.calls:
                self._reap_fast()
            if pending.complete:
                break
            wait = LIVENESS_POLL_MS / 1000
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    busy = sum(not call.done for call in pending.calls)
                    raise StepTimeoutError(f"{busy} worker(s) still busy after {timeout} s; the call stays pending")
                wait = min(wait, left)
            fast_calls = self._fast_calls
            if not self._pump(wait, fast_calls.any_done if fast_calls is not None and fast_calls.calls else None):
                self._last_check = 0.0  # a quiet poll: check the workers' health now
        if pending.result.fatal is not None:
            raise pending.result.fatal
        return pending.result

    def _collect_steady(
        self, steady: SteadyCalls, deadline: float | None, early: Callable[[list[int]], None] | None = None
    ) -> bool:
        """Wait for a call of :meth:`_submit_steady` and retire it once every worker published it
        (``True``); on anything else (a message, a quiet liveness interval, the deadline, a due
        health check) return ``False`` with the generic records intact: :meth:`collect`'s loop
        takes over."""
        now = time.monotonic()
        if now - self._last_check >= LIVENESS_POLL_MS / 1000:
            self._check_workers(now)
        if not steady.untouched():  # a check failed a worker, or the generic path reaped some
            steady.inflight = []
            return False
        end = now + LIVENESS_POLL_MS / 1000
        if deadline is not None:
            end = min(end, deadline)
        waiter, published = self._waiter, steady.published
        cores, tail = self._cores, self._tail_spin
        while not published():
            left = end - time.monotonic()
            # Once fewer workers than cores are still stepping, a core is free for us: spin for the
            # rest rather than block for the last ring (one wake-up less per batch with W = cores).
            spun = steady.busy() < cores
            if spun and early is not None:  # the finished workers' rows, while waiting for the others
                for slots in steady.published_slots():
                    early(slots)
                early = None
                continue
            if spun and not steady.tail_spun and tail.spin(published):
                break
            steady.tail_spun = False  # (spent once: a wake-up with nothing published spins again)
            # Having spun (or skipped a spin that does not pay lately), block without spinning again.
            wake = waiter.wait(None if spun else published, left) if left > 0 else fastpath.Wake.TIMEOUT
            if wake is fastpath.Wake.TIMEOUT or wake is fastpath.Wake.MESSAGE:
                steady.inflight = []  # the generic loop reaps the published ones, handles the rest
                if wake is fastpath.Wake.TIMEOUT:
                    self._last_check = 0.0  # a quiet wait: check the workers' health now
                return False
        self._retire_steady(steady)
        return True

    def _retire_steady(self, steady: SteadyCalls) -> None:
        """Retire the steady call that every worker published (:meth:`SteadyCalls.finish`) and send
        the next queued call of the workers that have one."""
        self.counters["fast_path_calls"] += len(steady.inflight)
        for handle in steady.finish():
            self._send_head(handle)

    def progress(self, wait: float) -> None:
        """Handle worker messages for up to ``wait`` seconds and heal failed workers (non-blocking use)."""
        fast_calls = self._fast_calls
        if fast_calls is not None and fast_calls.calls:
            self._reap_fast()
        quiet = not self._pump(wait)
        if fast_calls is not None and fast_calls.calls:
            self._reap_fast()
        now = time.monotonic()
        if quiet or now - self._last_check >= LIVENESS_POLL_MS / 1000:
            self._check_workers(now)

    @property
    def socket(self) -> zmq.Socket[bytes]:
        """The control socket (to register in a caller's ``zmq.Poller``)."""
        return self._socket

    def register(self, poller: zmq.Poller) -> None:
        """Register in a caller's ``poller`` everything that signals progress: the control socket
        and, with the fast path, the doorbell workers ring when a step is done."""
        poller.register(self._socket, zmq.POLLIN)
        if self._fast is not None:
            poller.register(self._fast.doorbell.fileno(), zmq.POLLIN)

    def _send_head(self, handle: WorkerHandle) -> None:
        """Send the oldest unsent call of ``handle`` if the worker is ready and idle."""
        queue = self._queue(handle)
        if not queue or handle.state is not WorkerState.RUNNING:
            return
        call = queue[0]
        if call.sent_at is not None:
            return
        if call.gen != handle.gen:  # queued for a process that was replaced meanwhile
            self._fail_queue(handle, ErrorKind.WORKER_RESTARTING, handle.last_error or "worker restarted")
            return
        if call.fast is not None and self._fast_calls is not None:
            self._fast_calls.post(call)
            return
        try:
            self._socket.send_multipart([handle.identity, protocol.encode(call.message)])
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the worker's socket is gone, most likely it died
            code = self._supervisor.exit_code(handle, wait=0.5)
            reason = self._supervisor.exit_reason(handle, code) if code is not None else f"worker unreachable ({exc})"
            self._fail(handle, reason, ErrorKind.WORKER_DIED)
            return
        call.sent_at = time.monotonic()

    def _check_workers(self, now: float) -> None:
        """Let the supervisor check the processes; fail workers past ``step_timeout``; send queued calls."""
        self._last_check = now
        for handle in self._supervisor.check():
            self._after_failure(handle)
        handles = self.workers
        if self._handovers is not None and self._handovers.active:
            handles = handles + self._handovers.successors()
        for handle in handles:
            queue = self._queue(handle)
            if not queue or handle.state not in ALIVE:
                continue
            head = queue[0]
            if head.sent_at is None:
                self._send_head(handle)
            elif now - head.sent_at > self.step_timeout:
                self._fail(
                    handle,
                    f"worker {handle.worker_id} (pid {handle.pid}) did not answer within "
                    f"step_timeout={self.step_timeout} s; killed",
                    ErrorKind.WORKER_HUNG,
                )

    def _fail_call(self, call: WorkerCall, kind: ErrorKind, reason: str) -> None:
        """Report every slot of ``call`` failed: truncated, reward 0, observation unchanged.

        The fate of the slots' steps: not applied if the call never reached the worker (or is a
        reset, which takes no step), else unknown (the worker may have stepped some slots).

        When every worker was given up on, the command raises :class:`PoolGaveUpError` instead:
        never all-truncated batches forever.
        """
        assert self.buffers is not None
        call.done = True
        fate = StepFate.UNKNOWN if call.sent_at is not None and call.pending.op is Op.STEP else StepFate.NOT_APPLIED
        failure = SlotFailure(kind, fate, reason)
        for slot in call.slots:
            self._lost.pop(slot, None)
            self.buffers.reward[slot] = 0.0
            self.buffers.terminated[slot] = False
            self.buffers.truncated[slot] = True
            call.pending.result.errors[slot] = failure
        self.counters["slot_failures"] += len(call.slots)
        self.error_kinds[kind] += len(call.slots)
        result = call.pending.result
        if result.fatal is None and all(h.state is WorkerState.FATAL for h in self.workers):
            first = min(self.workers, key=lambda h: h.slots[0] if h.slots else 0)
            result.fatal = PoolGaveUpError(
                f"every worker of this pool was given up on (env {self._env_name}); step() and reset() "
                f"cannot return experience. Slot {first.slots[0]} (worker {first.worker_id}): "
                f"{first.last_error or reason}"
            )

    def _fail_queue(self, handle: WorkerHandle, kind: ErrorKind, reason: str) -> None:
        queue = self._queue(handle)
        while queue:
            self._fail_call(queue.popleft(), kind, reason)

    def _charge_server_steps(self, count: int) -> None:
        """Count ``count`` server step calls of an HTTP pool against ``max_server_steps``.

        Raises:
            QuotaExceededError: the budget would be passed (nothing counted).
        """
        if not self._server_steps_counted:
            return
        budget: int | None = getattr(self.spec, "max_server_steps", None)
        used = self.counters["server_steps"]
        if budget is not None and used + count > budget:
            raise QuotaExceededError(
                f"max_server_steps budget of {budget} reached: {used} used, this step needs {count}; nothing was sent",
                "",
                used,
                budget,
            )
        self.counters["server_steps"] += count

    # -- worker failures --------------------------------------------------------------------

    @property
    def _supervisor(self) -> Supervisor:
        assert self.supervisor is not None
        return self.supervisor

    def _fail(self, handle: WorkerHandle, reason: str, kind: ErrorKind) -> None:
        """Have the supervisor kill (and maybe restart) ``handle``; fail what it was doing.

        A successor that fails during a handover fails its worker (both processes are stopped).
        """
        handle = handle.takes_over or handle
        if self._supervisor.fail(handle, reason, kind):
            self._after_failure(handle)

    def _after_failure(self, handle: WorkerHandle) -> None:
        """Every episode of a failed worker died with it: fail its queued calls now (with the kind
        the supervisor recorded, ``GAVE_UP`` once given up on); its other slots are reported when
        they are next stepped."""
        self.counters["worker_failures"] += 1
        reason = handle.last_error or "worker failed"
        self._lost.update({slot: reason for slot in handle.slots})
        self._fail_queue(handle, handle.last_kind or ErrorKind.WORKER_DIED, reason)
        if self._handovers is not None:
            self._handovers.end(handle, reason)

    def _restart_seeds(self, handle: WorkerHandle) -> list[int | None]:
        """Seed schedule of a restarted worker: ``base_seed + slot + num_envs * restarts``."""
        if self.base_seed is None or handle.restarts == 0:
            return [None] * len(handle.slots)
        return [self.base_seed + slot + self.num_envs * handle.restarts for slot in handle.slots]

    # -- messages ---------------------------------------------------------------------------

    def _pump(self, wait: float, ready: Callable[[], bool] | None = None) -> bool:
        """Wait up to ``wait`` seconds (spinning on ``ready`` first, if given, while spinning pays)
        and handle every message that arrived; whether anything happened (a message, the doorbell,
        ``ready``). The fast calls a doorbell announces are reaped by the caller."""
        if self._waiter.wait(ready, wait) is fastpath.Wake.TIMEOUT:
            return False
        while self._waiter.has_message():
            self._handle(self._socket.recv_multipart(zmq.NOBLOCK))
        return True

    def _handle(self, frames: list[bytes]) -> None:
        handle = self._supervisor.handle_of(frames[0]) if len(frames) == 2 else None
        if handle is None:
            log.debug("dropping a message from an unknown or replaced worker")
            return
        try:
            message = protocol.decode(frames[1])
        except ProtocolError as exc:
            self._fail(handle, f"worker {handle.worker_id} sent a malformed message: {exc}", ErrorKind.PROTOCOL)
            return
        if message.get("gen") != handle.gen:
            return
        op = message["op"]
        if op == Op.HELLO.value:
            self._send_init(handle)
        elif op == Op.READY.value:
            if handle.state is WorkerState.STARTING:
                self._supervisor.ready(handle)
            self._send_head(handle)
        elif op == Op.DONE.value:
            try:
                failures = {int(k): SlotFailure.from_wire(v) for k, v in message.get("errors", {}).items()}
            except (ProtocolError, TypeError, ValueError, AttributeError) as exc:
                self._fail(handle, f"worker {handle.worker_id} sent malformed errors: {exc}", ErrorKind.PROTOCOL)
                return
            call = self._answered_call(handle, message)
            if call is None:
                return  # a reply to an abandoned command
            if self._handovers is not None:
                self._handovers.on_reply(handle, call, message)
            handle.steps += len(call.slots)
            if "counters" in message:
                handle.backend_counters = {str(k): int(v) for k, v in message["counters"].items()}
            self._merge_done(call.pending.result, message, failures, handle.worker_id)
            self._send_head(handle)
        elif op == Op.FATAL.value:
            self._on_fatal(handle, message)

    def _merge_done(
        self, result: CommandResult, message: dict[str, Any], failures: dict[int, SlotFailure], worker_id: int
    ) -> None:
        """Add a ``done`` reply's infos, failures and call values to ``result``."""
        result.infos.update({int(k): v for k, v in message.get("infos", {}).items()})
        if "obs" in message:
            for row, parts in message["obs"].items():
                if int(row) not in failures:  # a failed slot keeps its previous observation
                    for i, value in zip(self.message_obs, parts, strict=True):
                        self.message_obs[i][int(row)] = value
        result.errors.update(failures)
        self.counters["slot_errors"] += len(failures)
        self.error_kinds.update(failure.kind for failure in failures.values())
        judge_env_failures(result, message, failures, self.options, self.counters, self._env_name)
        if "values" in message:
            result.values.update({int(k): v for k, v in message["values"].items()})
        if "call_error" in message and result.fatal is None:
            result.fatal = errors.from_wire(message["call_error"])
            result.fatal.add_note(f"raised in worker {worker_id}")

    # -- the fast path and the trainer's own slots -------------------------------------------

    def _reap_fast(self) -> None:
        """Finish the calls whose worker published them on the fast path."""
        assert self._fast_calls is not None
        self._fast_calls.reap(self._queues, self._fast_finished)

    def _fast_finished(self, call: WorkerCall) -> None:
        if self._handovers is not None and call.pending.op is Op.STEP:
            self._handovers.count_episodes(call)
        self.counters["fast_path_calls"] += 1
        self._send_head(call.handle)

    def _run_trainer_slots(self, pending: PendingCommand) -> None:
        """Step, reset or call the trainer's own slots in this process (``trainer_slots``)."""
        assert self._trainer is not None and pending.local is not None
        message, pending.local = pending.local, None
        try:
            reply = self._trainer.run(message)
        except PoolEnvError as exc:
            if pending.result.fatal is None:
                pending.result.fatal = exc
            return
        errors = reply.get("errors")
        if not errors and not reply.get("infos") and _NEWS.isdisjoint(reply):
            return  # the common step: nothing to merge (_merge_done's walk costs ≈ 5 µs)
        failures = {int(k): SlotFailure.from_wire(v) for k, v in (errors or {}).items()}
        self._merge_done(pending.result, reply, failures, -1)

    def _send_init(self, handle: WorkerHandle) -> None:
        assert self.buffers is not None
        init: dict[str, Any] = {
            "op": Op.INIT.value,
            "spec": self.spec.to_wire(handle.slots),
            "slots": handle.slots,
            "shm_name": self.buffers.name,
            "layout": self.buffers.layout.to_wire(),
            "seeds": self._restart_seeds(handle),
        }
        if self._spaces is not None:
            init["spaces"] = self._spaces
        if handle.takes_over is not None:
            init["successor"] = True  # it adopts the slots one by one (pool_env.recycle)
        if self._fast is not None:
            # A worker waiting for the next step spins only if the others and the trainer keep a core each.
            spin = fastpath.spin_budget(len(self.workers), cores=self._cores)
            init["fast"] = {**self._fast.worker_config(handle.worker_id), "spin": spin}
        self._socket.send_multipart([handle.identity, protocol.encode(init)])

    def _answered_call(self, handle: WorkerHandle, message: dict[str, Any]) -> WorkerCall | None:
        """Pop and return the in-flight call that ``message`` answers, if it answers one."""
        queue = self._queue(handle)
        if not queue or queue[0].sent_at is None or queue[0].message["seq"] != message.get("seq"):
            return None
        call = queue.popleft()
        call.done = True
        return call

    def _on_fatal(self, handle: WorkerHandle, message: dict[str, Any]) -> None:
        error = errors.from_wire(message.get("error"))
        error.add_note(f"raised in worker {handle.worker_id} (pid {handle.pid})")
        if handle.takes_over is not None:  # a successor that could not start: its worker failed
            self._fail(handle, f"while recycling worker {handle.worker_id}, its new process failed: {error}",
                       ErrorKind.WORKER_DIED)  # fmt: skip
            return
        if handle.state is WorkerState.STARTING:
            # The worker could not create its envs and exits; at start-up this is raised.
            self._start_failure = self._start_failure or error
            self._supervisor.give_up(handle, str(error))
            self._fail_queue(handle, ErrorKind.GAVE_UP, str(error))
            return
        call = self._answered_call(handle, message)
        if call is not None and call.pending.result.fatal is None:
            call.pending.result.fatal = error
        self._send_head(handle)

    def _queue(self, handle: WorkerHandle) -> deque[WorkerCall]:
        """The calls of ``handle`` in order (a successor has its own queue during a handover)."""
        if handle.takes_over is not None:
            assert self._handovers is not None
            return self._handovers.queue_of(handle)
        return self._queues[handle.worker_id]

    # -- observability ----------------------------------------------------------------------

    def worker_stats(self) -> list[dict[str, Any]]:
        """Per worker: id, pid, slots, state, restarts, steps, uptime, cpu %, rss, last error."""
        return self._supervisor.worker_stats()

    def live_pids(self) -> list[int]:
        """Pids of worker processes that are still running."""
        return self._supervisor.live_pids()

    @property
    def socket_dir(self) -> str:
        """The private directory of the control socket (removed by :meth:`close`)."""
        return self._socket_dir

    def restarts_of(self, slot: int) -> int:
        """How many times the worker owning ``slot`` was restarted (0 for the trainer's own slots)."""
        owner = self._slot_worker.get(slot)
        return 0 if owner is None else (owner.takes_over or owner).restarts

    def uptime(self) -> float:
        """Seconds since this coordinator was created."""
        return time.monotonic() - self._created_at
