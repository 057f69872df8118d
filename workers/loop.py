"""The worker's command loop: hello → init → (reset | step)* → close.

Each command covers all the slots it names at once; results go straight into shared memory and
one small ``done`` message answers the command. The loop exits by itself when the coordinator
process is gone (its parent pid changes), so a ``kill -9`` of the trainer leaves no worker.
The process around the loop (socket, heartbeat thread, last-resort cleanup) is
:mod:`workers.process`; the fast path's wait and publish are :mod:`workers.fast`, writing each
slot's outcome into its rows (with the env contract's checks) is :mod:`workers.results`, and what a
slot carries from a recycled process to its successor is :mod:`workers.handover`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import operator
import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from pool_env import codec, errors, protocol
from pool_env.envs.registry import spec_from_wire
from pool_env.errors import PoolEnvError, SpaceMismatchError, StepFate
from pool_env.fastpath import FAST_STEP, FastCommand
from pool_env.protocol import AUTORESET_MODES, Op
from pool_env.shm import BatchBuffers, BatchLayout, attach, build_structure
from workers import handover
from workers.backends.base import Backend, Outcome
from workers.fast import FastPath
from workers.results import ResultWriter

__all__ = ["WorkerLoop"]

log = logging.getLogger(__name__)

PARENT_CHECK_MS = 500
_CLEAN_KEYS = {"op", "seq", "infos", "errors"}  # a reply with nothing else to say (every reply has these)


# gymnasium.vector.AutoresetMode values (the worker imports no gymnasium): commands carry one.
NEXT_STEP, SAME_STEP, DISABLED = "NextStep", "SameStep", "Disabled"


class WorkerLoop:
    """One worker's state: its slots, its backend, its view of shared memory."""

    def __init__(
        self, socket: zmq.Socket[bytes], parent_pid: int, gen: int, worker_id: int = -1, accept_pickle: bool = False
    ) -> None:
        self._socket = socket
        self._accept_pickle = accept_pickle  # env factories (cloudpickle) only for an embedded pool's workers
        self._worker_id = worker_id
        self._parent_pid = parent_pid
        self._gen = gen
        self._backend: Backend | None = None
        self._flat_act = False  # a single action leaf with an empty path: no nesting
        self._act_by_message = False  # some action leaf has no fixed shape: its values come in commands
        self._sent_actions: dict[int, list[Any]] = {}  # row -> those values, of the current command
        self._buffers: BatchBuffers | None = None
        self._results: ResultWriter | None = None  # writes outcomes into our rows (workers/results.py)
        # The lean step path (ResultWriter.write_steps): the backend's step_returns (local envs'
        # returns as they came), when it has one.
        self._step_returns: Callable[[Sequence[int], Sequence[Any]], list[Any]] | None = None
        self._slots: list[int] = []  # global slot ids, local id = position
        self._local: dict[int, int] = {}
        self._every: list[int] = []  # every local index, in order (a command for all our slots)
        self._rows: slice | None = None  # our rows as one slice, when they are contiguous (they are, unless moved)
        self._needs_reset: list[bool] = []
        self._episode: list[int] = []
        self._episode_step: list[int] = []
        self._next_seeds: list[int | None] = []
        self._reported_counters: dict[str, int] = {}
        self._counters: Callable[[], dict[str, int]] | None = None  # the backend's, if it counts
        self._prefetches = False  # the backend resets ended slots early (_prefetch_resets)
        self._prefetched: dict[int, Outcome] = {}  # local slot -> its next (seedless) reset, done early
        # A reset sent ahead and not collected yet (HTTP, HttpBackend.reset_early): its slots, the
        # scheduled seeds taken for them (in slot order), the backend's handle.
        self._early: tuple[list[int], list[int | None], Any] | None = None
        self._raised_in_a_row: list[int] = []  # per local slot: env exceptions since its last good step
        self._autoreset = NEXT_STEP  # of the last command (the daemon's leases may differ)
        self._fast: FastPath | None = None  # the fast path, when the coordinator offers it (workers/fast.py)
        # Recycling (workers/handover.py): slots this retiring process released to its successor,
        # and, in a successor, slots it has not adopted yet (they are still its predecessor's).
        self._releasing = False
        self._released: set[int] = set()
        self._not_adopted: set[int] = set()
        self._finals: dict[int, tuple[Any, Any]] = {}  # SAME_STEP: ended slots' last obs and info, to hand over

    # -- wire -------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        message["gen"] = self._gen
        self._socket.send(protocol.encode(message))

    def _send_reply(self, reply: dict[str, Any]) -> None:
        """Send a ``done`` reply; an info that cannot cross becomes an error naming slot and key."""
        try:
            self._send(reply)
        except codec.CodecError as exc:
            path = exc.path
            if len(path) >= 2 and path[0] in ("infos", "values"):
                what = "the info" if path[0] == "infos" else "the call result"
                where = f"{what} of slot {path[1]} at {codec.render_path(path[2:])}"
                raise codec.CodecError(str(exc).replace(f"message{codec.render_path(path)}", where), path) from None
            raise

    def _parent_alive(self) -> bool:
        return os.getppid() == self._parent_pid

    def serve(self) -> None:
        """Run until ``close`` or until the coordinator is gone."""
        self._send({"op": Op.HELLO.value, "pid": os.getpid()})
        # recv with a timeout (RCVTIMEO, set by run_worker) rather than poll + recv: no Poller
        # object per command on the hot path; zmq.Again only when idle, to check the parent.
        while True:
            if self._fast is not None:
                fast = self._fast.wait(PARENT_CHECK_MS / 1000)
                if fast is not None:
                    self._run_fast(fast)
                    continue
                if not self._fast.has_message():
                    if not self._parent_alive():
                        log.warning("coordinator (pid %d) is gone; worker exits", self._parent_pid)
                        return
                    continue
            try:
                data = self._socket.recv()
            except zmq.Again:
                if not self._parent_alive():
                    log.warning("coordinator (pid %d) is gone; worker exits", self._parent_pid)
                    return
                continue
            message = protocol.decode(data)
            op = message["op"]
            if op == Op.CLOSE.value:
                return
            try:
                if op == Op.INIT.value:
                    self._init(message)
                    self._send({"op": Op.READY.value})
                elif op in (Op.RESET.value, Op.STEP.value):
                    if "adopt" in message:
                        self._adopt(message["adopt"])
                    if self._fast is not None:
                        self._fast.take(int(message["seq"]))
                    self._send_reply(self._command(message))
                    self._prefetch_resets()
                elif op == Op.CALL.value:
                    if "adopt" in message:
                        self._adopt(message["adopt"])
                    self._send_reply(self._call(message))
                else:
                    raise PoolEnvError(f"unknown op {op!r}")
            except PoolEnvError as exc:
                self._send(_fatal_message(message, exc))
                if op == Op.INIT.value:
                    return

    # -- the fast path ------------------------------------------------------------------------

    def _run_fast(self, command: FastCommand) -> None:
        """Run a fast-path command over all our slots; publish it, or answer over zmq if it has news.

        A step (the hot loop) runs straight through :meth:`_step`, as :meth:`_command` would run
        its message, without building that message; a reset, and a step whose actions travel in
        messages, go through the message (:meth:`FastPath.message`) and :meth:`_command`.
        """
        fast, results = self._fast, self._results
        assert fast is not None and results is not None
        seq = command.seq
        try:
            if command.op == FAST_STEP and not self._act_by_message:
                self._autoreset = AUTORESET_MODES[command.mode]
                infos: dict[int, Any] = {}
                failures: dict[int, list[str]] = {}
                results.begin()
                self._step(self._every, False, infos, failures)
                if not (infos or failures or results.obs_out or results.in_a_row or self._counters is not None):
                    fast.publish(seq)  # nothing to say: the reply would hold exactly _CLEAN_KEYS, all empty
                    if self._prefetches:  # (local envs never prefetch: no call per command for nothing)
                        self._prefetch_resets()
                    return
                reply = self._reply(seq, infos, failures)
            else:
                # Our own slot list itself: _command() knows it by identity and maps no slot ids.
                reply = self._command(fast.message(command, self._slots))
            if len(reply) != len(_CLEAN_KEYS) or reply["infos"] or reply["errors"]:
                self._send_reply(reply)  # errors, infos, counters, anything more travel over zmq, as always
            else:
                fast.publish(seq)
        except PoolEnvError as exc:  # as on the zmq path: the trainer gets it raised
            self._send(_fatal_message({"seq": seq}, exc))
            return
        self._prefetch_resets()

    # -- in-process use (the trainer's own slots, pool_env.trainer_slots) -----------------------

    def init(self, message: dict[str, Any]) -> None:
        """Take over the slots of an ``init`` message (without the fast path)."""
        self._init(message)

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        """Run one ``reset``/``step``/``call`` message; its ``done`` reply (not sent anywhere)."""
        return self._call(message) if message["op"] == Op.CALL.value else self._command(message)

    def close(self) -> None:
        """Close the backend and detach from shared memory."""
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        if self._backend is not None:
            with contextlib.suppress(Exception):
                self._backend.close()
            self._backend = None
        if self._buffers is not None:
            self._buffers.close()
            self._buffers = None

    # -- commands ---------------------------------------------------------------------------

    def _init(self, message: dict[str, Any]) -> None:
        spec = spec_from_wire(message["spec"], allow_pickle=self._accept_pickle)
        layout = BatchLayout.from_wire(message["layout"])
        self._slots = [int(s) for s in message["slots"]]
        self._local = {slot: i for i, slot in enumerate(self._slots)}
        # Plain lists, not numpy arrays: they are read per slot on the hot path.
        self._needs_reset = [True] * len(self._slots)
        # Where each slot is, for error messages: episodes started here, steps in the current one.
        self._episode = [0] * len(self._slots)
        self._episode_step = [0] * len(self._slots)
        self._raised_in_a_row = [0] * len(self._slots)
        self._next_seeds = list(message.get("seeds") or [None] * len(self._slots))
        self._buffers = attach(message["shm_name"], layout)
        self._results = ResultWriter(
            self._buffers, self._slots, self._needs_reset, self._raised_in_a_row, self._episode, self._episode_step,
            self._worker_id,
        )  # fmt: skip
        self._every, self._rows = self._results.every, self._results.rows
        self._act_by_message = any(leaf.by_message for leaf in layout.act)
        self._flat_act = len(layout.act) == 1 and not layout.act[0].path and not layout.act_tree
        self._backend = spec.make_backend(self._slots)
        self._step_returns = getattr(self._backend, "step_returns", None)
        self._counters = getattr(self._backend, "counters", None)
        self._prefetches = bool(getattr(self._backend, "prefetches_resets", False))
        fast = message.get("fast")
        if fast is not None:
            self._fast = FastPath(fast, self._gen, self._buffers, self._socket)
        self._check_spaces(message.get("spaces"))
        if message.get("successor"):  # recycling: the slots arrive one by one, each with its state
            self._not_adopted = set(range(len(self._slots)))

    def _check_spaces(self, pool_spaces: dict[str, Any] | None) -> None:
        """Compare the spaces each env declares with the pool's (only backends of envs that declare
        their own spaces; an HTTP backend's come from the spec itself).

        Raises:
            SpaceMismatchError: an env declares other spaces; the pool fails its construction.
        """
        declared_spaces = getattr(self._backend, "declared_spaces", None)
        if pool_spaces is None or declared_spaces is None:
            return
        from pool_env.space_check import mismatch  # imports gymnasium, which this backend loaded

        problem = mismatch(pool_spaces, declared_spaces(), self._slots)
        if problem is not None:
            raise SpaceMismatchError(problem)

    def _command(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self._backend is not None and self._buffers is not None and self._results is not None
        named = message["slots"]
        # Every slot of ours, in order (the trainer's own slots' messages too): no per-slot mapping.
        every = named is self._slots or named == self._slots
        slots = self._every if every else [self._local[int(s)] for s in named]
        self._autoreset = str(message.get("autoreset", NEXT_STEP))
        if self._act_by_message:
            self._sent_actions = {int(row): parts for row, parts in (message.get("actions") or {}).items()}
        infos: dict[int, Any] = {}
        failures: dict[int, list[str]] = {}
        self._results.begin()
        if message["op"] == Op.RESET.value:
            self._settle_early()
            seeds = list(message.get("seeds") or [None] * len(slots))
            # An empty dict is no option at all (reset(options={"reset_mask": m}) leaves one).
            options = message.get("options") or None
            # A seedless reset without options is exactly what was prefetched; others supersede it.
            early = [s for s, seed in zip(slots, seeds, strict=True) if seed is None and s in self._prefetched]
            if options is None:
                self._deliver_prefetched(early, infos, failures)
            rest = [(s, seed) for s, seed in zip(slots, seeds, strict=True) if options is not None or s not in early]
            for slot, _ in rest:
                self._prefetched.pop(slot, None)
            if rest:
                finish = message.get("finish")
                flags = None if not finish else handover.saved_flags(self._buffers, finish)
                self._reset([s for s, _ in rest], [seed for _, seed in rest], options, infos, failures)
                if finish:
                    handover.finish_same_step(self._buffers, finish, flags, infos, failures)
        else:
            self._step(slots, bool(message.get("release")), infos, failures)
        reply = self._reply(message["seq"], infos, failures)
        if message.get("release"):
            reply["released"] = self._release(infos)
        return reply

    def _step(self, slots: list[int], release: bool, infos: dict[int, Any], failures: dict[int, list[str]]) -> None:
        """Step ``slots`` (local ids; ``self._every`` for all of them), resetting those that ended
        first (NEXT_STEP); their infos and failures go to ``infos``/``failures``. ``release``: the
        command retires this process (SAME_STEP keeps the ended slots' finals for the successor)."""
        assert self._backend is not None and self._results is not None
        needs_reset = self._needs_reset
        if slots is self._every:  # all our slots: pick by mask, no Python per slot
            to_reset = list(itertools.compress(slots, needs_reset)) if any(needs_reset) else []
            to_step = list(itertools.compress(slots, map(operator.not_, needs_reset))) if to_reset else slots
        else:
            to_reset = [s for s in slots if needs_reset[s]]
            to_step = [s for s in slots if not needs_reset[s]]
        ready: list[int] = []  # reset already (prefetched), or being reset (sent ahead)
        if to_reset:
            sent_ahead = () if self._early is None else self._early[0]
            ready = [s for s in to_reset if s in self._prefetched or s in sent_ahead]
            to_reset = [s for s in to_reset if s not in ready]
        if ready and (to_reset or self._early is None):
            # Delivered first, as before resets were sent ahead. With slots no prefetch covered
            # (only after a command that failed), a reset sent ahead is collected here: its
            # answer is in by now, so the command still costs about two calls
            # (HttpEnvSpec.worst_case_step_seconds), unless that answer was lost.
            self._settle_early(raise_errors=True)
            self._deliver_prefetched(ready, infos, failures)
            ready = []
        lean = self._step_returns is not None and self._autoreset != SAME_STEP
        if lean and to_reset and to_step and slots is self._every and len(to_reset) + len(to_step) == len(slots):
            # (not with resets prefetched or sent ahead: their slots are delivered on their own)
            self._reset_and_step(to_reset, to_step, infos, failures)
            return
        if to_reset:
            self._reset(to_reset, [None] * len(to_reset), None, infos, failures)
        if to_step:
            actions = self._read_actions(to_step)
            episode_step = self._episode_step
            for slot in to_step:
                episode_step[slot] += 1
            if lean:
                assert self._step_returns is not None
                self._results.write_steps(to_step, self._step_returns(to_step, actions), infos, failures)
            else:
                outcomes = self._backend.step(to_step, actions)
                if self._autoreset == SAME_STEP and release:
                    handover.keep_finals(self._finals, to_step, outcomes)  # the successor resets them
                elif self._autoreset == SAME_STEP:
                    outcomes = self._reset_same_step(to_step, outcomes)
                self._results.write("step", to_step, outcomes, infos, failures)
        if ready:  # a reset sent ahead: its answer came back while the step's request flew
            self._settle_early(raise_errors=True)
            self._deliver_prefetched(ready, infos, failures)

    def _reset_and_step(
        self, to_reset: list[int], to_step: list[int], infos: dict[int, Any], failures: dict[int, list[str]]
    ) -> None:
        """NEXT_STEP over all our slots, some of which ended: reset ``to_reset``, step ``to_step``
        (in that order, as :meth:`_step` does), and write both into our rows in one
        :meth:`ResultWriter.write_steps` (in slot order, each reset as its own write would): one
        copy of all observations instead of row by row, one slice per array instead of two
        fancy-indexed halves. (SyncVectorEnv's NEXT_STEP: an ended slot's step is its reset,
        reward 0, both flags false.)"""
        assert self._step_returns is not None and self._results is not None
        returns: list[Any] = [None] * len(self._every)
        for slot, outcome in zip(to_reset, self._reset_outcomes(to_reset, [None] * len(to_reset), None), strict=True):
            # A clean reset as a step return's tuple (reward 0.0, flags False): the batch write takes it.
            failed = outcome.error is not None
            returns[slot] = outcome if failed else (outcome.obs, outcome.reward, False, False, outcome.info)
        actions = self._read_actions(to_step)
        episode_step = self._episode_step
        for slot in to_step:
            episode_step[slot] += 1
        for slot, returned in zip(to_step, self._step_returns(to_step, actions), strict=True):
            returns[slot] = returned
        self._results.write_steps(self._every, returns, infos, failures, resets=set(to_reset))

    def _reply(self, seq: int, infos: dict[int, Any], failures: dict[int, list[str]]) -> dict[str, Any]:
        """The ``done`` reply of command ``seq``: exactly ``op``, ``seq``, ``infos`` and ``errors``
        unless there is more to say (message-borne observations, errors in a row, new counters)."""
        reply: dict[str, Any] = {"op": Op.DONE.value, "seq": seq, "infos": infos, "errors": failures}
        results = self._results
        assert results is not None
        if results.obs_out:  # observations without a fixed shape travel here, not in shared memory
            reply["obs"], results.obs_out = results.obs_out, {}
        if results.in_a_row:  # only when an env raised: replies stay tiny
            reply["in_a_row"] = results.in_a_row
        if self._counters is not None:
            current = self._counters()
            if current != self._reported_counters:  # only when something changed: replies stay tiny
                reply["counters"] = self._reported_counters = current
        return reply

    # -- recycling (workers/handover.py) ------------------------------------------------------

    def _release(self, infos: dict[int, Any]) -> dict[int, dict[str, Any]]:
        """Hand over every slot at an episode boundary (ended, failed, or never started) that was
        not handed over yet: its state, by global slot. Such a slot is no longer this process's.

        Under SAME_STEP a slot that ended in this step also hands over its last observation and
        info (``final``; its info leaves ``infos``): the successor resets it within the same step.
        """
        self._releasing = True  # no more prefetched resets: the successor resets released slots
        self._settle_early()
        released: dict[int, dict[str, Any]] = {}
        for i, ended in enumerate(self._needs_reset):
            if not ended or i in self._released:
                continue
            self._released.add(i)
            self._prefetched.pop(i, None)
            released[self._slots[i]] = {
                "rng": handover.release_rng(self._backend, i),
                "seed": self._next_seeds[i],
                "episode": self._episode[i],
                "in_a_row": self._raised_in_a_row[i],
            }
            if i in self._finals:
                obs, info = self._finals.pop(i)
                infos.pop(self._slots[i], None)
                released[self._slots[i]]["final"] = {"obs": obs, "info": info}
        self._finals.clear()
        return released

    def _adopt(self, states: dict[int, dict[str, Any]]) -> None:
        """Take over the slots a retiring process released, each with the state it handed over."""
        self._settle_early()
        for slot, state in states.items():
            i = self._local[int(slot)]
            self._not_adopted.discard(i)
            self._prefetched.pop(i, None)
            handover.adopt_rng(self._backend, i, state.get("rng"))
            self._next_seeds[i] = state.get("seed")
            self._episode[i] = int(state.get("episode", 0))
            self._raised_in_a_row[i] = int(state.get("in_a_row", 0))
            self._needs_reset[i] = True

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        """``call``/``get_attr``/``set_attr`` on each slot's env; the first exception is reported."""
        assert self._backend is not None
        reply: dict[str, Any] = {"op": Op.DONE.value, "seq": message["seq"], "infos": {}, "errors": {}}
        slots = [self._local[int(s)] for s in message["slots"]]
        name = str(message["name"])
        values = message.get("values")
        results: dict[int, Any] = {}
        for i, slot in enumerate(slots):
            try:
                if values is not None:
                    self._backend.set_attr(slot, name, values[i])
                    continue
                results[self._slots[slot]] = self._backend.call(
                    slot, name, message.get("args") or [], message.get("kwargs") or {}
                )
            except Exception as exc:
                # A builtin type stays itself for the trainer, as AsyncVectorEnv re-raises it.
                call_error = errors.to_wire(exc, traceback.format_exc(), builtin=True)
                call_error["message"] = f"slot {self._slots[slot]}: {call_error['message']}"
                reply["call_error"] = call_error
                return reply
        reply["values"] = results
        return reply

    def _reset_same_step(self, slots: Sequence[int], outcomes: list[Outcome]) -> list[Outcome]:
        """SAME_STEP autoreset: reset the slots that ended within this step, as gymnasium does.

        Such a slot returns the new episode's first observation with the step's reward and
        flags; its info is ``{"final_obs": last obs, "final_info": step info, **reset info}``
        (``SyncVectorEnv(autoreset_mode=SAME_STEP)`` adds them in that order).
        """
        assert self._backend is not None
        ended = [i for i, o in enumerate(outcomes) if o.error is None and (o.terminated or o.truncated)]
        if not ended:
            return outcomes
        ended_slots = [slots[i] for i in ended]
        seeds = [self._take_scheduled_seed(s, None) for s in ended_slots]
        self._start_episodes(ended_slots)
        merged = list(outcomes)
        for i, reset in zip(ended, self._backend.reset(ended_slots, seeds, None), strict=True):
            final = outcomes[i]
            if reset.error is not None and reset.kind is not None:
                # The step was applied (it ended the episode); the reset after it failed.
                merged[i] = Outcome.failed(reset.kind, StepFate.APPLIED, reset.error)
                merged[i].obs = final.obs
                continue
            info = {"final_obs": final.obs, "final_info": final.info, **reset.info}
            merged[i] = Outcome(reset.obs, final.reward, final.terminated, final.truncated, info, restarted=True)
        return merged

    def _prefetch_resets(self) -> None:
        """Reset the slots that ended now, while the trainer works, instead of on their next step.

        NEXT_STEP autoreset makes that reset certain (a seedless one), so doing it early changes
        nothing the trainer sees but latency: for HTTP envs it takes one server round trip off the
        critical path of the next step. A failure is kept and delivered like any reset outcome;
        an error that must reach the trainer (a 4xx) is left for the real reset to raise.
        """
        assert self._backend is not None
        if self._autoreset != NEXT_STEP or not self._prefetches:
            # Only NEXT_STEP makes the next reset certain. Local envs reset in microseconds and
            # gain nothing; resetting them when SyncVectorEnv does keeps their RNG in step.
            return
        if self._releasing:
            return
        self._settle_early()  # (its answer is in by now, unless a partial batch left it waiting)
        slots = [
            s
            for s, ended in enumerate(self._needs_reset)
            if ended and s not in self._prefetched and s not in self._not_adopted
        ]
        if not slots:
            return
        seeds = [self._take_scheduled_seed(s, None) for s in slots]
        try:
            reset_early = getattr(self._backend, "reset_early", None)
            handle = None if reset_early is None else reset_early(slots, seeds)
            if handle is not None:  # sent ahead; the next command collects the answer
                self._early = (slots, seeds, handle)
                return
            outcomes = self._backend.reset(slots, seeds, None)
        except PoolEnvError:
            for slot, seed in zip(slots, seeds, strict=True):
                self._next_seeds[slot] = seed  # give the schedule back to the real reset
            return
        self._prefetched.update(zip(slots, outcomes, strict=True))

    def _settle_early(self, raise_errors: bool = False) -> None:
        """Collect the reset sent ahead (if any) into the prefetched outcomes.

        An error that must reach the trainer (a 4xx) is raised with ``raise_errors`` (a step
        command that needed the reset, as its own reset would raise it), else left for the real
        reset to raise, as in :meth:`_prefetch_resets`.
        """
        if self._early is None:
            return
        assert self._backend is not None
        slots, seeds, handle = self._early
        self._early = None
        try:
            outcomes = self._backend.finish_reset(handle)  # type: ignore[attr-defined]  # has reset_early
        except PoolEnvError:
            for slot, seed in zip(slots, seeds, strict=True):
                self._next_seeds[slot] = seed  # give the schedule back to the real reset
            if raise_errors:
                raise
            return
        self._prefetched.update(zip(slots, outcomes, strict=True))

    def _deliver_prefetched(
        self, slots: Sequence[int], infos: dict[int, Any], failures: dict[int, list[str]]
    ) -> None:
        if not slots:
            return
        assert self._results is not None
        self._start_episodes(slots)
        self._results.write("reset", slots, [self._prefetched.pop(s) for s in slots], infos, failures)

    def _take_scheduled_seed(self, slot: int, seed: int | None) -> int | None:
        """``seed``, or for a seedless reset the seed a restarted worker was scheduled to use (once)."""
        scheduled, self._next_seeds[slot] = self._next_seeds[slot], None
        return seed if seed is not None else scheduled

    def _start_episodes(self, slots: Sequence[int]) -> None:
        for slot in slots:
            self._episode[slot] += 1
            self._episode_step[slot] = 0

    def _reset(
        self,
        slots: Sequence[int],
        seeds: Sequence[int | None],
        options: dict[str, Any] | None,
        infos: dict[int, Any],
        failures: dict[int, list[str]],
    ) -> None:
        assert self._results is not None
        self._results.write("reset", slots, self._reset_outcomes(slots, seeds, options), infos, failures)

    def _reset_outcomes(
        self, slots: Sequence[int], seeds: Sequence[int | None], options: dict[str, Any] | None
    ) -> list[Outcome]:
        """Reset ``slots`` (a seedless one takes its scheduled seed) and start their episodes; the outcomes."""
        assert self._backend is not None
        effective = [self._take_scheduled_seed(slot, seed) for slot, seed in zip(slots, seeds, strict=True)]
        self._start_episodes(slots)
        return self._backend.reset(slots, effective, options)

    def _read_actions(self, slots: Sequence[int]) -> list[Any]:
        assert self._buffers is not None
        arrays = self._buffers.act
        if self._act_by_message:
            return [self._action_of(self._slots[s]) for s in slots]
        if self._flat_act and len(slots) == 1:  # the same item, ≈ 1.5 µs less than iterating a one-row view
            return [arrays[0][self._slots[slots[0]]]]
        # Every slot: one slice of contiguous rows instead of a fancy index (a view, no gather).
        every = slots is self._every or slots == self._every
        rows: Any = self._rows if self._rows is not None and every else [self._slots[s] for s in slots]
        if self._flat_act:
            return list(arrays[0][rows])
        layout = self._buffers.layout
        columns = [list(a[rows]) for a in arrays]
        return [build_structure(layout.act, [c[i] for c in columns], layout.act_tree) for i in range(len(slots))]

    def _action_of(self, row: int) -> Any:
        """Slot ``row``'s action: parts without a fixed shape from the command, the rest from shared memory."""
        buffers = self._buffers
        assert buffers is not None
        layout = buffers.layout
        sent = iter(self._sent_actions[row])
        parts = [
            next(sent) if leaf.by_message else array[row] for leaf, array in zip(layout.act, buffers.act, strict=True)
        ]
        return parts[0] if self._flat_act else build_structure(layout.act, parts, layout.act_tree)


def _fatal_message(message: dict[str, Any], exc: PoolEnvError) -> dict[str, Any]:
    return {
        "op": Op.FATAL.value,
        "seq": message.get("seq", -1),
        "error": errors.to_wire(exc, traceback.format_exc()),
    }
