"""PoolVectorEnv: a self-healing ``gymnasium.vector.VectorEnv`` over worker subprocesses.

Autoreset follows gymnasium's default, ``AutoresetMode.NEXT_STEP``: a slot that ended on step
*t* is reset on step *t+1*, which returns its first observation with reward 0 and both flags
false. A slot whose worker died, hung or lost its server episode comes back ``truncated=True``
with reward 0, its previous observation, ``infos["error"]`` (why) and ``infos["restarts"]``
(how often its worker was replaced); it is reset on its next step like any ended slot.

Returned arrays are copies: they stay valid after the next step.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import requests
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from pool_env.batch import assemble_infos, validate_actions
from pool_env.config import EnvSpec, GymEnvSpec, HttpEnvSpec, PoolOptions
from pool_env.coordinator import CommandResult, Coordinator, PendingCommand
from pool_env.errors import (
    AlreadyPendingError,
    HttpStatusError,
    NoPendingCallError,
    SpecError,
    TransportError,
    UsageError,
)
from pool_env.frontend import BatchedVectorEnv
from pool_env.partial import PartialBatcher
from pool_env.protocol import Op
from pool_env.shm import BatchLayout
from pool_env.spaces import leaves_of, probe_spaces, structure_of_batch

__all__ = ["PoolVectorEnv", "check_server", "default_num_workers"]

log = logging.getLogger(__name__)


def default_num_workers(spec: EnvSpec, num_envs: int) -> int:
    """Workers when none are given.

    Local envs: one per core but one, which the coordinator needs for its own share of each
    step (measured on 2 cores: one worker beats two by 1.6x on CartPole, see benchmarks/).
    HTTP: workers mostly wait on the network, so up to 4 per core with at least 4 slots each.
    """
    cores = os.cpu_count() or 1
    if isinstance(spec, HttpEnvSpec):
        return max(1, min(num_envs, 4 * cores, -(-num_envs // 4)))
    return max(1, min(num_envs, cores - 1))


def check_server(spec: HttpEnvSpec) -> None:
    """Fail fast, before any worker starts, when the env server cannot be reached.

    Raises:
        TransportError: the server does not answer.
        HttpStatusError: it answers 4xx (e.g. the token is refused).
    """
    url = f"{spec.server_url}/api/v1/version"
    try:
        response = requests.get(url, headers={"User-Token": spec.user_token}, timeout=spec.request_timeout)
    except requests.RequestException as exc:
        raise TransportError(f"cannot reach the env server at {spec.server_url}: {exc}") from exc
    if 400 <= response.status_code < 500:
        try:
            detail = str(response.json().get("detail", response.text))
        except ValueError:
            detail = response.text
        raise HttpStatusError(response.status_code, detail, url)


class PoolVectorEnv(BatchedVectorEnv):
    """Many episodes of one env spec, stepped in parallel by worker processes.

    Args:
        spec: what each slot runs (:class:`HttpEnvSpec` or :class:`GymEnvSpec`).
        num_envs: number of slots.
        num_workers: worker processes (default: :func:`default_num_workers`); any value from 1
            to ``num_envs`` works, the slots are split as evenly as possible.
        options: timeouts and restart policy (:class:`PoolOptions`).
        batch_size: slots returned by each :meth:`recv` (EnvPool-style partial batches);
            ``step``/``reset`` always cover every slot.
        log_level: log level of the worker processes.

    Raises:
        SpecError: bad arguments or an unsupported space.
        TransportError, HttpStatusError: the env server cannot be used.
        EnvCreationError, WorkerStartError: the workers could not start.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        spec: EnvSpec,
        num_envs: int = 16,
        num_workers: int | None = None,
        *,
        options: PoolOptions | None = None,
        batch_size: int | None = None,
        log_level: str = "WARNING",
    ) -> None:
        self.closed = True  # until the workers are up, close() has nothing to do
        if not isinstance(spec, HttpEnvSpec | GymEnvSpec):
            raise SpecError(f"spec: expected HttpEnvSpec or GymEnvSpec, got {type(spec).__name__}")
        if not isinstance(num_envs, int) or num_envs < 1:
            raise SpecError(f"num_envs: must be a positive int, got {num_envs!r}")
        workers = default_num_workers(spec, num_envs) if num_workers is None else num_workers
        if not isinstance(workers, int) or not 1 <= workers <= num_envs:
            raise SpecError(f"num_workers: must be 1..num_envs={num_envs}, got {num_workers!r}")
        batch_size = num_envs if batch_size is None else batch_size
        if not isinstance(batch_size, int) or not 1 <= batch_size <= num_envs:
            raise SpecError(f"batch_size: must be 1..num_envs={num_envs}, got {batch_size!r}")
        if isinstance(spec, HttpEnvSpec):
            check_server(spec)
        obs_space, act_space, env_metadata, render_mode = probe_spaces(spec)
        self.spec_ = spec
        self.num_envs = num_envs
        self.num_workers = workers
        self.single_observation_space = obs_space
        self.single_action_space = act_space
        self.observation_space = batch_space(obs_space, num_envs)
        self.action_space = batch_space(act_space, num_envs)
        self.metadata = {**env_metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        self.render_mode = render_mode
        self._obs_leaves = leaves_of(obs_space)
        self._act_leaves = leaves_of(act_space)
        layout = BatchLayout(num_envs, tuple(self._obs_leaves), tuple(self._act_leaves))
        self._coordinator = Coordinator(spec, layout, workers, options or PoolOptions(), log_level)
        try:
            self._coordinator.start()
        except BaseException:
            self._coordinator.close()
            raise
        self.closed = False
        self.batch_size = batch_size
        self._pending: PendingCommand | None = None
        self._last_obs: list[np.ndarray] | None = None  # the observation leaves returned last
        self._was_reset = False
        self._batcher = PartialBatcher(self._coordinator, self._obs_leaves, self._act_leaves, act_space, batch_size)

    # -- gymnasium API ----------------------------------------------------------------------

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every slot (seed ``s`` gives slot ``i`` the seed ``s + i``, as gymnasium does).

        ``options["reset_mask"]`` (a bool array) resets only the masked slots.
        """
        self._check_idle("reset")
        options = dict(options) if options is not None else None
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options.pop("reset_mask"))
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,) or not mask.any():
                raise UsageError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with a True")
            seeds = self._seed_list(seed)
            indices = np.flatnonzero(mask).tolist()
            return self.reset_envs(indices, seeds=[seeds[i] for i in indices], options=options)
        seeds = self._seed_list(seed)
        if isinstance(seed, int):
            self._coordinator.base_seed = seed
        result = self._run(Op.RESET, None, seeds, options)
        self._was_reset = True
        return self._observations(), self._infos(result)

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
        result = self._run(Op.RESET, chosen, chosen_seeds, options)
        return self._observations(), self._infos(result)

    def step_async(self, actions: Any) -> None:
        """Validate ``actions``, put them in shared memory and send one command per worker.

        Raises:
            InvalidActionError: wrong structure, shape or dtype, or values outside the space.
            AlreadyPendingError, ClosedError, UsageError: wrong call order.
        """
        self._check_can_step()
        self._write_actions(actions)
        self._pending = self._coordinator.submit(Op.STEP)

    def step_wait(self, timeout: float | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Wait for the pending step (at most ``timeout`` seconds, if given).

        Raises:
            StepTimeoutError: ``timeout`` passed; the step stays pending (call again).
            NoPendingCallError: no ``step_async`` before.
            HttpStatusError: the env server refused the request (4xx).
        """
        self._check_open()
        if self._pending is None:
            raise NoPendingCallError("step_wait() without a pending step_async()", "step")
        result = self._collect(timeout)
        buffers = self._buffers
        return (
            self._observations(sorted(result.errors)),
            buffers.reward.copy(),
            buffers.terminated.copy(),
            buffers.truncated.copy(),
            self._infos(result),
        )

    # -- EnvPool-style partial batches ------------------------------------------------------

    def async_reset(self, seed: int | Sequence[int | None] | None = None) -> None:
        """Start resetting every slot; collect the first observations with :meth:`recv`."""
        self._check_idle("async_reset")
        seeds = self._seed_list(seed)
        if isinstance(seed, int):
            self._coordinator.base_seed = seed
        self._last_obs = None  # partial batches hand out their own rows
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
        self._last_obs = None  # partial batches hand out their own rows
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

    def close_extras(self, **kwargs: Any) -> None:
        """Stop the workers and free shared memory (bounded time, idempotent)."""
        self._pending = None
        self._coordinator.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"PoolVectorEnv({self.spec_!r}, num_envs={self.num_envs}, num_workers={self.num_workers}, {state})"

    # -- observability ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Per-worker figures (pid, slots, state, restarts, steps, cpu %, rss, backend counters) and
        pool-wide counters (worker failures, slot failures and errors, HTTP requests/retries/...)."""
        self._check_open()
        coordinator = self._coordinator
        workers = coordinator.worker_stats()
        backend: Counter[str] = Counter()
        for row in workers:
            backend.update(row["backend"])
        return {
            "num_envs": self.num_envs,
            "num_workers": self.num_workers,
            "uptime": coordinator.uptime(),
            "counters": {**coordinator.counters, **backend},
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

    def _run(
        self, op: Op, slots: list[int] | None, seeds: list[int | None], options: dict[str, Any] | None
    ) -> CommandResult:
        self._pending = self._coordinator.submit(op, slots, seeds, options)
        result = self._collect(None)
        if op is Op.RESET and result.errors:
            # A reset is safe to repeat: give slots whose worker died (and was replaced at
            # once) or whose env failed one more try, so reset() rarely returns broken slots.
            chosen = list(range(self.num_envs)) if slots is None else slots
            seed_of = dict(zip(chosen, seeds, strict=True))
            failed = sorted(result.errors)
            self._pending = self._coordinator.submit(op, failed, [seed_of[s] for s in failed], options)
            retry = self._collect(None)
            for slot in failed:
                result.infos.pop(slot, None)
            result.errors = retry.errors
            result.infos.update(retry.infos)
        return result

    def _collect(self, timeout: float | None) -> CommandResult:
        assert self._pending is not None
        try:
            result = self._coordinator.collect(self._pending, timeout)
        except TimeoutError:
            raise  # still pending: the caller may wait again
        except BaseException:
            self._pending = None
            raise
        self._pending = None
        return result

    def _write_actions(self, actions: Any) -> None:
        arrays = validate_actions(actions, self._act_leaves, self.single_action_space, self.num_envs)
        for target, value in zip(self._buffers.act, arrays, strict=True):
            target[...] = value

    def _observations(self, failed: Sequence[int] = ()) -> Any:
        """Copies of the observations; ``failed`` slots keep the ones returned last.

        A worker that dies or hangs mid-command may already have written some of its rows
        (e.g. the reset of a slot that ended, before stepping the others); its slots must
        still come back with their previous observation.
        """
        leaves = [array.copy() for array in self._buffers.obs]
        if failed and self._last_obs is not None:
            rows = list(failed)
            for leaf, previous in zip(leaves, self._last_obs, strict=True):
                leaf[rows] = previous[rows]
        # A private copy: the trainer may change the returned arrays in place (normalising, say).
        self._last_obs = [leaf.copy() for leaf in leaves]
        return structure_of_batch(self._obs_leaves, leaves)

    def _infos(self, result: CommandResult) -> dict[str, Any]:
        return assemble_infos(result.infos, result.errors, self.num_envs, self._coordinator.restarts_of)
