"""PoolVectorEnv: a self-healing ``gymnasium.vector.VectorEnv`` over worker subprocesses.

Autoreset follows gymnasium's default, ``AutoresetMode.NEXT_STEP``: a slot that ended on step
*t* is reset on step *t+1*, which returns its first observation with reward 0 and both flags
false. A slot whose worker died, hung or lost its server episode comes back ``truncated=True``
with reward 0, its previous observation, ``infos["error"]`` (why) and ``infos["restarts"]``
(how often its worker was replaced); it is reset on its next step like any ended slot.

Returned arrays are copies: they stay valid after the next step.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from pool_env.banks import EarlyRows, ObservationBanks
from pool_env.batch import PlainActions, assemble_infos, merge_same_step_failures, validate_actions
from pool_env.commands import CommandResult, PendingCommand, merge_counters
from pool_env.config import PoolOptions
from pool_env.coordinator import Coordinator
from pool_env.envs import EnvSpec
from pool_env.envs.base import refuse_inside_worker
from pool_env.envs.gym import vector_env_spec
from pool_env.envs.registry import Count, as_count, resolve_spec
from pool_env.errors import (
    AlreadyPendingError,
    SpecError,
    UsageError,
)
from pool_env.frontend import (
    BatchedVectorEnv,
    autoreset_mode_of,
    call_results,
    check_options,
    check_sendable,
    reset_mask_of,
    seed_list,
)
from pool_env.partial import PartialBatcher
from pool_env.protocol import Op
from pool_env.quick_step import QuickStep
from pool_env.shm import BatchLayout, build_structure
from pool_env.space_check import describe_pool
from pool_env.spaces import leaves_of, structure_of_batch, tree_of

__all__ = ["PoolVectorEnv"]

log = logging.getLogger(__name__)

EARLY_COPY_BYTES = 256 * 1024
"""A worker's share of the observations from which its rows are copied as soon as it finishes (if
others still step): ≈ 10 µs of copying, well above what arranging it costs (:class:`EarlyRows`)."""


class PoolVectorEnv(BatchedVectorEnv):
    """Many episodes of one env spec, stepped in parallel by worker processes.

    Built from a spec, or like ``gymnasium.vector.AsyncVectorEnv`` from one callable per slot::

        PoolVectorEnv(GymEnvSpec("CartPole-v1"), num_envs=16)
        PoolVectorEnv([make_env(env_id, i) for i in range(16)])      # AsyncVectorEnv(env_fns)

    Args:
        spec: what each slot runs (:class:`HttpEnvSpec` or :class:`GymEnvSpec`), or ``env_fns``:
            a list of callables, each returning a ``gymnasium.Env``; slot ``i`` runs
            ``env_fns[i]()``. They reach the workers pickled with ``cloudpickle``, on the pool's
            private owner-only channel (:mod:`pool_env.envs.callables`).
        num_envs: number of slots (any integer type); 16 by default for a spec, ``len(env_fns)``
            for callables (a different value is an error).
        num_workers: worker processes (default: the spec's ``default_num_workers``: for local envs
            one per core, one per core but one with ``trainer_slots``); any value from 1 to
            ``num_envs - trainer_slots`` works, the slots are split as evenly as possible.
        options: timeouts and restart policy (:class:`PoolOptions`).
        batch_size: slots returned by each :meth:`recv` (EnvPool-style partial batches);
            ``step``/``reset`` always cover every slot.
        log_level: log level of the worker processes.
        autoreset_mode: gymnasium's ``AutoresetMode`` (or its value): ``NEXT_STEP`` (default),
            ``SAME_STEP`` (ended slots reset within the step, ``infos["final_obs"]`` and
            ``infos["final_info"]``) or ``DISABLED`` (ended slots wait for ``reset``).
        check_action_bounds: refuse Box actions outside the space's bounds. Off by default:
            gymnasium's vector envs pass them to the env (which clips); shape and dtype are
            always checked.
        env_fns: the callables, by keyword (``AsyncVectorEnv(env_fns=...)``), instead of ``spec``.
        copy: as ``AsyncVectorEnv``'s: ``True`` returns observations the caller owns; ``False``
            may return views of the pool's shared memory (no copy: for large observations most of
            the trainer's time in a step), valid until the step after next, which overwrites them;
            writing into them also changes what a slot that fails next step is returned with.
            Rewards, flags and infos are always the caller's own.
        trainer_slots: the last ``trainer_slots`` slots are stepped in this process while the
            workers step the others (EnvPool/PufferLib style: both cores work on a small machine).
            Less isolation for those slots: an env that crashes the interpreter crashes the
            trainer, and one that hangs cannot be cut by ``step_timeout`` (see the README).

    Raises:
        SpecError: bad arguments or an unsupported space.
        TransportError, HttpStatusError: the env server cannot be used.
        EnvCreationError, WorkerStartError: the workers could not start.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        spec: EnvSpec | Sequence[Callable[[], Any]] | None = None,
        num_envs: Count | None = None,
        num_workers: Count | None = None,
        *,
        options: PoolOptions | None = None,
        batch_size: Count | None = None,
        log_level: str = "WARNING",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        check_action_bounds: bool = False,
        env_fns: Sequence[Callable[[], Any]] | None = None,
        copy: bool = True,
        trainer_slots: int = 0,
    ) -> None:
        self.closed = True  # until the workers are up, close() has nothing to do
        refuse_inside_worker()  # never workers starting workers (a script without its main guard)
        self.autoreset_mode = autoreset_mode_of(autoreset_mode)
        self._autoreset_value = self.autoreset_mode.value  # an enum's .value costs ≈ 0.1 µs on every step
        self.copy = bool(copy)
        spec, num_envs = resolve_spec(spec, env_fns, num_envs)
        trainer_slots = as_count("trainer_slots", trainer_slots)
        if not 0 <= trainer_slots < num_envs:
            raise SpecError(f"trainer_slots: must be 0..num_envs-1={num_envs - 1}, got {trainer_slots!r}")
        worker_slots = num_envs - trainer_slots
        if num_workers is None:
            workers = spec.default_num_workers(worker_slots, trainer_slots)
        else:
            workers = as_count("num_workers", num_workers)
        if not 1 <= workers <= worker_slots:
            raise SpecError(
                f"num_workers: must be 1..{worker_slots} (num_envs - trainer_slots), got {num_workers!r}"
            )
        batch_size = num_envs if batch_size is None else as_count("batch_size", batch_size)
        if not 1 <= batch_size <= num_envs:
            raise SpecError(f"batch_size: must be 1..num_envs={num_envs}, got {batch_size!r}")
        if trainer_slots and batch_size != num_envs:
            raise SpecError("trainer_slots: not with partial batches (batch_size < num_envs); use one or the other")
        spec.check()
        obs_space, act_space, env_metadata, render_mode = spec.probe()
        self.spec_ = spec
        self.num_envs = num_envs
        self.num_workers = workers
        self.single_observation_space = obs_space
        self.single_action_space = act_space
        self.observation_space = batch_space(obs_space, num_envs)
        self.action_space = batch_space(act_space, num_envs)
        self.metadata = {**env_metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = render_mode
        self.spec = vector_env_spec(spec, num_envs)  # what gymnasium.make_vec sets (None for env_fns)
        self.check_action_bounds = check_action_bounds
        self._obs_leaves = leaves_of(obs_space)
        self._act_leaves = leaves_of(act_space)
        self._obs_tree = tree_of(obs_space)
        self._message_actions: dict[int, list[Any]] | None = None  # action parts without a fixed shape
        self._plain_actions = PlainActions(self._act_leaves, act_space, num_envs)  # validate_actions' hot path
        if batch_size != num_envs and any(leaf.by_message for leaf in (*self._obs_leaves, *self._act_leaves)):
            raise SpecError(
                f"batch_size: partial batches need spaces of fixed shape; {obs_space} or {act_space} has a part "
                "without one (Text, Sequence, Graph, a custom space): use batch_size=num_envs"
            )
        # Two observation banks: a failed slot's previous observation needs no private copy (pool_env.banks).
        layout = BatchLayout(
            num_envs, tuple(self._obs_leaves), tuple(self._act_leaves), self._obs_tree, tree_of(act_space), obs_banks=2
        )
        self._coordinator = Coordinator(
            spec,
            layout,
            workers,
            options or PoolOptions(),
            log_level,
            spaces=describe_pool(obs_space, act_space),
            trainer_slots=trainer_slots,
        )
        try:
            self._coordinator.start()
        except BaseException:
            self._coordinator.close()
            raise
        self.closed = False
        self.batch_size = batch_size
        self._pending: PendingCommand | None = None
        # Hands out the observations (copies, or views with copy=False); a failed slot's is the one handed out last.
        self._banks = ObservationBanks(self._buffers)
        # Where a plain batch of actions goes (PlainActions: one leaf); the segment is the pool's for its life.
        self._action_rows: np.ndarray | None = self._buffers.act[0] if self._buffers.act else None
        self._results = (self._buffers.reward, self._buffers.terminated, self._buffers.truncated)
        # One leaf of fixed shape at the top (a Box, Discrete, ... space): the observations are that leaf's array.
        self._flat_obs = self._obs_tree == 0 and not self._coordinator.message_obs
        # Large observations: copy the rows of the workers that finish first while waiting for the others.
        worker_rows = sum(leaf.nbytes for leaf in self._buffers.obs) // max(1, workers)
        self._copy_early = self.copy and workers > 1 and self._banks.double and worker_rows >= EARLY_COPY_BYTES
        self._was_reset = False
        self._batcher = PartialBatcher(
            self._coordinator, self._banks, self._obs_leaves, self._act_leaves, act_space, batch_size
        )
        self._pending_op: str | None = None  # "reset" or "call" between *_async and *_wait
        # The plain full step in the steady state, in two calls (pool_env.quick_step); None: never.
        self._quick: QuickStep | None = None
        if self.autoreset_mode is not AutoresetMode.DISABLED and not self._copy_early and self._plain_actions.usable:
            self._quick = self._coordinator.quick_step(self._autoreset_value)

    # -- gymnasium API ----------------------------------------------------------------------

    def reset_async(
        self,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Start :meth:`reset`; collect it with :meth:`reset_wait` (as ``AsyncVectorEnv``).

        Raises:
            AlreadyPendingError: another call is pending; see :meth:`reset` for the rest.
        """
        self._check_idle("reset_async")
        seeds = self._seed_list(seed)
        options = dict(options) if options is not None else None
        slots: list[int] | None = None
        if options is not None and "reset_mask" in options:
            mask = reset_mask_of(options, self.num_envs)
            slots = np.flatnonzero(mask).tolist()
            seeds = [seeds[i] for i in slots]
        check_options(options)
        if slots is None and isinstance(seed, int | np.integer):
            self._coordinator.base_seed = int(seed)
        self._reset_slots = slots
        self._pending = self._coordinator.submit(Op.RESET, slots, seeds, options, self.autoreset_mode.value)
        self._pending_op = "reset"
        self._reset_retry = (slots, seeds, options)

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        """Wait for the reset started by :meth:`reset_async`: ``(observations, infos)``.

        Raises:
            NoPendingCallError: no :meth:`reset_async` before.
            StepTimeoutError: ``timeout`` passed (the reset stays pending: call again).
        """
        self._check_pending("reset")
        result = self._collect(timeout)
        slots, seeds, options = self._reset_retry
        result = self._retry_failed_resets(result, slots, seeds, options)
        if slots is None:
            self._was_reset = True
        self._track_reset(slots)
        return self._observations(sorted(result.errors)), self._infos(result)

    def reset_envs(
        self,
        indices: Sequence[int],
        seeds: Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset only the slots in ``indices``; the others keep their episodes untouched.

        Returns the whole batch of observations (only the reset rows changed) and infos.
        """
        chosen, chosen_seeds = self._reset_envs_arguments(indices, seeds)
        chosen_seeds = [None if s is None else seed_list([s], 1)[0] for s in chosen_seeds]
        check_options(options)
        self._pending = self._coordinator.submit(Op.RESET, chosen, chosen_seeds, options, self.autoreset_mode.value)
        self._pending_op = "reset"
        result = self._retry_failed_resets(self._collect(None), chosen, chosen_seeds, options)
        self._track_reset(chosen)
        return self._observations(sorted(result.errors)), self._infos(result)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every slot: ``step_async(actions)`` then ``step_wait()``, in fewer calls for the
        common step (:mod:`pool_env.quick_step`): the env idle, a plain batch of actions, every
        worker healthy and idle. Anything else, and anything that happens meanwhile, takes the
        generic path: the same values, errors and healing."""
        quick = self._quick
        if (
            quick is None
            or self._pending is not None
            or self.closed
            or not self._was_reset
            or self._batcher.busy
            or not quick.ready()
        ):
            return super().step(actions)
        plain = self._plain_actions.accept(actions, self.check_action_bounds)
        if plain is None:  # not a plain batch, or an invalid one: validate_actions says which
            return super().step(actions)
        assert self._action_rows is not None
        self._action_rows[...] = plain
        self._message_actions = None
        self._pending = quick.post()
        self._pending_op = "step"
        if not quick.wait():  # a message, a health check, a slow worker: the generic wait takes over
            return self.step_wait()
        self._pending = None
        self._pending_op = None
        rewards, terminations, truncations = self._results
        return self._observations(), rewards.copy(), terminations.copy(), truncations.copy(), {}

    def step_async(self, actions: Any) -> None:
        """Validate ``actions``, put them in shared memory and send one command per worker.

        Raises:
            InvalidActionError: wrong structure, shape or dtype, or values outside the space.
            AlreadyPendingError, ClosedError, UsageError: wrong call order.
        """
        self._check_can_step()
        self._write_actions(actions)
        # give_back: step_wait keeps nothing of the command once collected (its records may serve the next).
        self._pending = self._coordinator.submit(
            Op.STEP, autoreset=self._autoreset_value, actions=self._message_actions, give_back=True
        )
        self._pending_op = "step"

    def step_wait(self, timeout: float | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Wait for the pending step (at most ``timeout`` seconds, if given).

        Raises:
            StepTimeoutError: ``timeout`` passed; the step stays pending (call again).
            NoPendingCallError: no ``step_async`` before.
            HttpStatusError: the env server refused the request (4xx).
        """
        self._check_pending("step")
        early = self._banks.early_rows() if self._copy_early else None
        result = self._collect(timeout, early)
        rewards, terminations, truncations = self._results
        reward, terminated, truncated = rewards.copy(), terminations.copy(), truncations.copy()
        if not result.errors and not result.infos:  # the common step: nothing failed, nothing to tell
            self._track_step(terminated, truncated)
            return self._observations((), early), reward, terminated, truncated, {}
        failed = sorted(result.errors)
        if failed and self.autoreset_mode is AutoresetMode.SAME_STEP:
            return self._same_step_failures(result, reward, terminated, truncated)
        self._track_step(terminated, truncated)
        return self._observations(failed), reward, terminated, truncated, self._infos(result)

    # -- the rest of gymnasium's VectorEnv API ---------------------------------------------------

    def call_async(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Start :meth:`call`; collect the results with :meth:`call_wait`.

        Raises:
            CodecError: an argument that cannot cross (a ``TypeError`` naming it); nothing is sent.
            AlreadyPendingError, ClosedError: wrong call order.
        """
        self._check_idle("call_async")
        check_sendable([list(args), kwargs], f"call({name!r}) arguments")
        self._pending = self._coordinator.submit(
            Op.CALL, invocation={"name": name, "args": list(args), "kwargs": kwargs}
        )
        self._pending_op = "call"

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:
        """The results of the call started by :meth:`call_async`, one per slot.

        Raises:
            NoPendingCallError: no :meth:`call_async` before.
            StepTimeoutError: ``timeout`` passed (the call stays pending: call again).
            PoolEnvError: a slot's worker failed during the call (its error names the slot).
        """
        self._check_pending("call")
        result = self._collect(timeout)
        return call_results(result.values, result.errors, self.num_envs, "call")

    def _set_attr(self, name: str, values: list[Any]) -> None:
        check_sendable(values, f"set_attr({name!r}) values")
        invocation = {"name": name, "values": dict(enumerate(values))}
        self._pending = self._coordinator.submit(Op.CALL, invocation=invocation)
        self._pending_op = "call"
        result = self._collect(None)
        call_results(result.values, result.errors, 0, "set_attr")

    def call_slots(self, slots: Sequence[int], name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """:meth:`call` on the chosen slots only (SB3's ``env_method(..., indices=)``): one result
        per slot, in the order of ``slots``; the other slots' envs are not touched.

        Raises:
            CodecError, AttributeError, ...: as :meth:`call`.
            PoolEnvError: a slot's worker failed during the call.
        """
        self._check_idle("call_slots")
        chosen = [int(s) for s in slots]
        check_sendable([list(args), kwargs], f"call({name!r}) arguments")
        invocation = {"name": name, "args": list(args), "kwargs": kwargs}
        return self._call_on(chosen, invocation, "call")

    def set_slots_attr(self, slots: Sequence[int], name: str, values: Sequence[Any]) -> None:
        """:meth:`set_attr` on the chosen slots only: ``values[k]`` goes to ``slots[k]``.

        Raises:
            ValueError: ``values`` and ``slots`` differ in length.
            CodecError: a value that cannot cross (a ``TypeError`` naming it).
        """
        self._check_idle("set_slots_attr")
        chosen = [int(s) for s in slots]
        if len(values) != len(chosen):
            raise ValueError(f"set_slots_attr: {len(values)} values for {len(chosen)} slots")
        check_sendable(list(values), f"set_attr({name!r}) values")
        self._call_on(chosen, {"name": name, "values": dict(zip(chosen, values, strict=True))}, "set_attr")

    def _call_on(self, slots: list[int], invocation: dict[str, Any], what: str) -> tuple[Any, ...]:
        bad = [s for s in slots if not 0 <= s < self.num_envs]
        if bad:
            raise ValueError(f"{what}: slot {bad[0]} out of range 0..{self.num_envs - 1}")
        self._pending = self._coordinator.submit(Op.CALL, slots, invocation=invocation)
        self._pending_op = "call"
        result = self._collect(None)
        call_results(result.values, result.errors, 0, what)
        return tuple(result.values.get(slot) for slot in slots)

    # -- EnvPool-style partial batches ------------------------------------------------------

    def async_reset(self, seed: int | Sequence[int | None] | None = None) -> None:
        """Start resetting every slot; collect the first observations with :meth:`recv`."""
        self._check_idle("async_reset")
        seeds = self._seed_list(seed)
        if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
            self._coordinator.base_seed = int(seed)
        self._batcher.send(Op.RESET, np.arange(self.num_envs), seeds=seeds)
        self._was_reset = True

    def send(self, actions: Any, env_ids: Sequence[int] | np.ndarray | None = None) -> None:
        """Start stepping ``env_ids`` (all slots when ``None``) with ``actions`` (one row per id).

        Raises:
            InvalidActionError: bad actions; UsageError: ids in flight, repeated or out of range.
        """
        self._check_open()
        if self._pending is not None:
            raise AlreadyPendingError("send() while a step() is pending; call step_wait() first", "step")
        if not self._was_reset:
            raise UsageError("call reset() or async_reset() before send()")
        ids = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids)
        self._batcher.send(Op.STEP, ids, actions)

    def recv(self, timeout: float | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The first ``batch_size`` slots to finish: ``obs, rewards, terminated, truncated, infos``,
        with the slot ids in ``infos["env_id"]``.

        Raises:
            StepTimeoutError: ``timeout`` passed (nothing lost; call again).
            UsageError: fewer than ``batch_size`` slots in flight.
        """
        self._check_open()
        return self._batcher.recv(timeout)

    def close_extras(self, timeout: float | None = None, terminate: bool = False, **kwargs: Any) -> None:
        """Stop the workers and free shared memory (bounded time, idempotent).

        ``terminate=True`` (``AsyncVectorEnv``'s flag) drops a pending call; by default a pending
        call is first waited for, at most ``timeout`` seconds, as ``AsyncVectorEnv.close`` does.
        """
        if self._pending is not None and not terminate:
            with contextlib.suppress(Exception):
                self._collect(timeout)
        self._pending = None
        self._pending_op = None
        self._coordinator.close()

    def __repr__(self) -> str:
        state = "closed" if getattr(self, "closed", True) else "open"
        spec = getattr(self, "spec_", None)
        return (
            f"PoolVectorEnv({spec!r}, num_envs={getattr(self, 'num_envs', '?')}, "
            f"num_workers={getattr(self, 'num_workers', '?')}, {state})"
        )

    # -- observability ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Per-worker figures (pid, slots, state, restarts, steps, cpu %, rss, backend counters),
        pool-wide counters (worker failures, slot failures and errors, HTTP requests/retries/...) and
        ``error_kinds``: every slot failure reported so far, by :class:`~pool_env.errors.ErrorKind` value."""
        self._check_open()
        coordinator = self._coordinator
        workers = coordinator.worker_stats()
        backend: Counter[str] = Counter()
        for row in workers:
            merge_counters(backend, row["backend"])
        return {
            "num_envs": self.num_envs,
            "num_workers": self.num_workers,
            "uptime": coordinator.uptime(),
            "counters": {**coordinator.counters, **backend},
            "error_kinds": {kind.value: n for kind, n in sorted(coordinator.error_kinds.items())},
            "workers": workers,
        }

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the live worker processes."""
        return self._coordinator.live_pids()

    # -- internals --------------------------------------------------------------------------

    def _busy_reason(self) -> str | None:
        return "slots are in flight after send(); recv() them first" if self._batcher.busy else None

    @property
    def _buffers(self) -> Any:
        buffers = self._coordinator.buffers
        assert buffers is not None
        return buffers

    def _retry_failed_resets(
        self, result: CommandResult, slots: list[int] | None, seeds: list[int | None], options: dict[str, Any] | None
    ) -> CommandResult:
        """A reset is safe to repeat: give slots whose worker died (and was replaced at once) or
        whose env failed one more try, so reset() rarely returns broken slots."""
        if not result.errors:
            return result
        chosen = list(range(self.num_envs)) if slots is None else slots
        seed_of = dict(zip(chosen, seeds, strict=True))
        failed = sorted(result.errors)
        self._banks.keep_previous(failed)  # before the retry: their worker may have written a new one
        self._pending = self._coordinator.submit(
            Op.RESET, failed, [seed_of[s] for s in failed], options, self.autoreset_mode.value
        )
        self._pending_op = "reset"
        retry = self._collect(None)
        for slot in failed:
            result.infos.pop(slot, None)
        result.errors = retry.errors
        result.infos.update(retry.infos)
        return result

    def _same_step_failures(
        self, result: CommandResult, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """SAME_STEP: a failed slot returns its new episode's first observation at once, the last
        valid one in ``infos["final_obs"]`` and the error in ``infos["final_info"]``.

        The reset is one more command, only for the failed slots (their worker may be new).
        """
        failed = sorted(result.errors)
        self._banks.keep_previous(failed)  # before the reset: their worker may have written a new one
        by_message = self._coordinator.message_obs  # a failed slot's there are still its last valid ones

        def last_obs_of(slot: int) -> Any:
            parts = self._banks.previous(slot)
            for i in by_message:
                parts[i] = by_message[i][slot]
            return build_structure(self._obs_leaves, parts, self._obs_tree)

        finals = {slot: last_obs_of(slot) for slot in failed}  # before the reset writes new ones
        mode = self.autoreset_mode.value
        self._pending = self._coordinator.submit(Op.RESET, failed, [None] * len(failed), None, mode)
        self._pending_op = "reset"
        reset = self._collect(None)
        merge_same_step_failures(result.infos, result.errors, self._coordinator.restarts_of, finals.__getitem__,
                                 reset.infos)  # fmt: skip
        observations = self._observations(sorted(reset.errors))
        return observations, reward, terminated, truncated, self._infos(result)

    def _collect(self, timeout: float | None, early: EarlyRows | None = None) -> CommandResult:
        assert self._pending is not None
        try:
            result = self._coordinator.collect(self._pending, timeout, early)
        except (TimeoutError, KeyboardInterrupt):
            # Still pending: the caller may wait again. After Ctrl-C too, as AsyncVectorEnv stays in
            # its waiting state: forgetting the command would drop a step its workers ran (the next
            # step would start after it, unseen).
            raise
        except BaseException:
            if self._pending.complete:  # every worker answered, nothing was handed out: the slots keep
                self._banks.keep_previous(range(self.num_envs))  # the observations handed out last
            self._pending = None
            self._pending_op = None
            raise
        self._pending = None
        self._pending_op = None
        return result

    def _write_actions(self, actions: Any) -> None:
        plain = self._plain_actions.accept(actions, self.check_action_bounds)
        if plain is not None:  # the common batch: one array, already checked
            assert self._action_rows is not None
            self._action_rows[...] = plain
            self._message_actions = None
            return
        arrays = validate_actions(
            actions, self._act_leaves, self.single_action_space, self.num_envs, self.check_action_bounds
        )
        self._message_actions = None
        for i, (target, value) in enumerate(zip(self._buffers.act, arrays, strict=True)):
            if self._act_leaves[i].by_message:  # no fixed shape: it travels in the step commands
                self._message_actions = self._message_actions or {}
                self._message_actions[i] = value
            else:
                target[...] = value

    def _observations(self, failed: Sequence[int] = (), early: EarlyRows | None = None) -> Any:
        """The observations (copies; views of the segment with ``copy=False``); ``failed`` slots keep
        the ones returned last.

        A worker that dies or hangs mid-command may already have written some of its rows
        (e.g. the reset of a slot that ended, before stepping the others); its slots must
        still come back with their previous observation.
        """
        leaves = self._banks.take(None, failed, copy=self.copy, early=early)
        if self._flat_obs:
            return leaves[0]
        # Leaves without a fixed shape: a tuple of one value per slot, as gymnasium's concatenate
        # gives for Text, Sequence, Graph and custom spaces (AsyncVectorEnv(shared_memory=False)).
        parts: list[Any] = list(leaves)
        for i, values in self._coordinator.message_obs.items():
            parts[i] = tuple(values)
        return structure_of_batch(self._obs_leaves, parts, self._obs_tree)

    def _infos(self, result: CommandResult) -> dict[str, Any]:
        return assemble_infos(result.infos, result.errors, self.num_envs, self._coordinator.restarts_of)
