"""EnvPool-style partial batches: ``send(actions, env_ids)`` / ``recv()`` → the first ``batch_size`` ready slots.

A trainer overlaps policy inference with env stepping: it sends actions for the slots it just
received, then receives whichever ``batch_size`` slots finish first (in completion order, so no
slot starves). Each worker answers for its share of a command at once, so slots become ready
worker by worker; extra ready slots wait for the next ``recv``.

A slot is either *in flight* (sent, not yet received) or *idle*; sending an in-flight slot is
an error, which is what guarantees each action is applied exactly once and that a slot's rows
in shared memory are stable from the moment it is ready until the trainer sends it again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from pool_env.banks import ObservationBanks
from pool_env.batch import assemble_infos, validate_actions
from pool_env.commands import PendingCommand
from pool_env.coordinator import Coordinator
from pool_env.errors import SlotFailure, StepTimeoutError, UsageError
from pool_env.protocol import Op
from pool_env.shm import Leaf, build_structure

__all__ = ["PartialBatcher"]

_POLL_SECONDS = 0.05


class PartialBatcher:
    """The send/recv state of one pool: which slots are in flight, which are ready."""

    def __init__(
        self,
        coordinator: Coordinator,
        banks: ObservationBanks,
        obs_leaves: Sequence[Leaf],
        act_leaves: Sequence[Leaf],
        single_action_space: Any,
        batch_size: int,
    ) -> None:
        self._coordinator = coordinator
        self._banks = banks  # shared with the full-batch reader: a failed slot gets what either handed out last
        self._obs_leaves = list(obs_leaves)
        self._act_leaves = list(act_leaves)
        self._single_action_space = single_action_space
        self.batch_size = batch_size
        self._in_flight = np.zeros(coordinator.num_envs, dtype=bool)
        self._maybe_busy = False  # False: no slot in flight for sure (``busy`` on every step: no np.any)
        self._pending: list[PendingCommand] = []
        self._ready: deque[int] = deque()
        self._infos: dict[int, dict[str, Any]] = {}
        self._errors: dict[int, SlotFailure] = {}

    @property
    def busy(self) -> bool:
        """Whether any slot is in flight or ready but not yet received."""
        if self._maybe_busy:
            self._maybe_busy = bool(self._in_flight.any())
        return self._maybe_busy

    def send(self, op: Op, env_ids: np.ndarray, actions: Any = None, seeds: Sequence[int | None] | None = None) -> None:
        """Queue ``op`` for ``env_ids`` (with their ``actions`` for a step).

        Raises:
            UsageError: an id is out of range, repeated, or already in flight.
            InvalidActionError: bad actions (nothing is sent).
        """
        ids = np.asarray(env_ids, dtype=np.int64).reshape(-1)
        n = self._coordinator.num_envs
        if ids.size == 0 or ids.min() < 0 or ids.max() >= n or np.unique(ids).size != ids.size:
            raise UsageError(f"env_ids must be distinct slots in 0..{n - 1}, got {ids.tolist()}")
        if self._in_flight[ids].any():
            raise UsageError(f"env_ids {ids[self._in_flight[ids]].tolist()} are in flight; recv() them first")
        if op is Op.STEP:
            arrays = validate_actions(actions, self._act_leaves, self._single_action_space, ids.size)
            buffers = self._coordinator.buffers
            assert buffers is not None
            for target, value in zip(buffers.act, arrays, strict=True):
                target[ids] = value
        pending = self._coordinator.submit(op, ids.tolist(), seeds)  # may refuse (max_server_steps)
        self._in_flight[ids] = True
        self._maybe_busy = True
        self._pending.append(pending)

    def recv(self, timeout: float | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The first ``batch_size`` ready slots: ``obs, rewards, terminated, truncated, infos``.

        ``infos["env_id"]`` holds the slot ids (int32), in the order of the rows.

        Raises:
            UsageError: fewer than ``batch_size`` slots are in flight (it would never return).
            StepTimeoutError: ``timeout`` passed; nothing is lost, call ``recv`` again.
        """
        if int(self._in_flight.sum()) < self.batch_size:
            raise UsageError(
                f"recv() needs at least batch_size={self.batch_size} slots in flight, "
                f"{int(self._in_flight.sum())} are; send() more first"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._ready) < self.batch_size:
            wait = _POLL_SECONDS
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise StepTimeoutError(f"fewer than {self.batch_size} slots ready after {timeout} s")
            self._coordinator.progress(wait)
            self._harvest()
        ids = np.array([self._ready.popleft() for _ in range(self.batch_size)], dtype=np.int32)
        self._in_flight[ids] = False
        return self._batch(ids)

    def _harvest(self) -> None:
        """Move the slots of newly finished worker calls (with their infos/errors) to the ready queue."""
        still_pending = []
        for pending in self._pending:
            result = pending.result
            for call in pending.calls:
                if call.done and not call.harvested:
                    call.harvested = True
                    self._ready.extend(call.slots)
                    for slot in call.slots:
                        if slot in result.infos:
                            self._infos[slot] = result.infos[slot]
                        if slot in result.errors:
                            self._errors[slot] = result.errors[slot]
            if not pending.complete:
                still_pending.append(pending)
                continue
            if result.fatal is not None:
                self._drop(pending)
                self._pending = still_pending + self._pending[self._pending.index(pending) + 1 :]
                raise result.fatal
        self._pending = still_pending

    def _drop(self, pending: PendingCommand) -> None:
        slots = [s for call in pending.calls for s in call.slots]
        self._in_flight[slots] = False
        self._ready = deque(s for s in self._ready if s not in set(slots))

    def _batch(self, ids: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        buffers = self._coordinator.buffers
        assert buffers is not None
        position = {int(slot): i for i, slot in enumerate(ids)}
        errors = {s: self._errors.pop(s) for s in position if s in self._errors}
        # A failed slot keeps the observation handed out last: its dying worker may have
        # written a new one first.
        leaves = self._banks.take(ids, list(errors))
        obs = build_structure(self._obs_leaves, leaves)
        infos = assemble_infos(
            {s: self._infos.pop(s) for s in position if s in self._infos},
            errors,
            len(ids),
            self._coordinator.restarts_of,
            position.__getitem__,
        )
        infos["env_id"] = ids
        return obs, buffers.reward[ids], buffers.terminated[ids], buffers.truncated[ids], infos
