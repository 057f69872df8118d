"""Writing a worker's results: each slot's reset or step outcome into its rows of the batch segment.

What an env returned is checked against its contract (:mod:`workers.contract`) slot by slot, each
under its own guard: a slot whose env failed or returned something its contract forbids is
reported failed alone (truncated, reward 0, its previous observation kept, a
:class:`~pool_env.errors.SlotFailure` for the reply); the others are written. The common case (a
plain return: an observation of exactly the declared shape and dtype, a float reward, bool
flags, a dict info) is taken as it is, and a command's rows are written with one slice
assignment per array. The command loop (:mod:`workers.loop`) decides what to reset and step;
this module only writes what came back, and keeps each slot's "needs a reset" flag.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from pool_env.banks import BankWriter
from pool_env.errors import ErrorKind, SlotFailure, StepFate
from pool_env.shm import BatchBuffers, leaf_value
from workers.backends.base import Outcome
from workers.contract import ContractViolation, check_outcome

__all__ = ["ResultWriter"]


class ResultWriter:
    """Writes one worker's outcomes into its rows of the pool's batch segment.

    Args:
        buffers: the pool's batch segment, attached.
        slots: the worker's global slot ids (its rows); local slot ``i`` is ``slots[i]``.
        needs_reset: per local slot, whether its episode ended (or failed): written here, read
            by the loop to decide what to reset. The loop's own list, shared (never rebound).
        raised_in_a_row: per local slot, env exceptions since its last good step (shared, as above).
        episode: per local slot, episodes started in this process (shared; for error texts).
        episode_step: per local slot, steps in its current episode (shared; for error texts).
        worker_id: this worker's index (for error texts).

    Per command, :attr:`obs_out` collects the observation parts that travel in the reply (leaves
    without a fixed shape) and :attr:`in_a_row` the slots whose env raised; the loop takes both
    into its reply and starts each command with :meth:`begin`.
    """

    every: list[int]
    """Every local slot, in order: the ``slots`` argument of a command for all of them (known by identity)."""
    rows: slice | None
    """Our rows as one slice, when they are contiguous (they are, unless slots moved)."""
    obs_out: dict[int, list[Any]]
    in_a_row: dict[int, int]

    def __init__(
        self,
        buffers: BatchBuffers,
        slots: list[int],
        needs_reset: list[bool],
        raised_in_a_row: list[int],
        episode: list[int],
        episode_step: list[int],
        worker_id: int,
    ) -> None:
        layout = buffers.layout
        self._buffers = buffers
        self._slots = slots
        self.every = list(range(len(slots)))
        first = slots[0] if slots else 0
        contiguous = slots == list(range(first, first + len(slots)))
        self.rows = slice(first, first + len(slots)) if contiguous and slots else None
        self._needs_reset = needs_reset
        self._raised = raised_in_a_row
        self._episode = episode
        self._episode_step = episode_step
        self._worker_id = worker_id
        self._leaves = layout.obs
        self._flat_obs = len(layout.obs) == 1 and not layout.obs[0].path  # a single leaf, no nesting
        self._obs_by_message = any(leaf.by_message for leaf in layout.obs)  # some leaf has no fixed shape
        # The lean path (write_steps): the flat observation's (shape, dtype), when it has both.
        self._lean_obs: tuple[tuple[int, ...], np.dtype[Any]] | None = None
        if self._flat_obs and not self._obs_by_message and layout.obs[0].shape:  # np.concatenate needs 1-d+
            self._lean_obs = (layout.obs[0].shape, np.dtype(layout.obs[0].dtype))
        self.obs_out = {}
        self.in_a_row = {}
        # Which observation bank each row is written into (pool_env.banks); bank 0 with one bank.
        self._bank = BankWriter(buffers, slots)

    def begin(self) -> None:
        """Start a command: forget the previous command's slots whose env raised, take the
        observation bank each row is written into."""
        if self.in_a_row:  # (taken into a reply as it is: a new dict, never cleared in place)
            self.in_a_row = {}
        self._bank.begin()

    def write(
        self,
        what: str,
        slots: Sequence[int],
        outcomes: list[Outcome],
        infos: dict[int, Any],
        failures: dict[int, list[str]],
    ) -> None:
        """Check each slot's outcome against the env's contract and write it into shared memory.

        Everything per slot happens under its own guard (:meth:`_settle`): a slot whose env
        returned something its contract forbids is reported failed alone (kind
        ``invalid_env_return``); the worker and its other slots go on. A plain outcome (the lean
        case of :meth:`write_steps`: a reset's, an HTTP step's) is taken as it is.
        """
        buffers = self._buffers
        rows = [self._slots[slot] for slot in slots]
        rewards: list[Any] = []
        terminated: list[Any] = []
        truncated: list[Any] = []
        shape, dtype = self._lean_obs if self._lean_obs is not None else ((), None)
        bank = self._bank
        needs_reset = self._needs_reset
        for slot, row, outcome in zip(slots, rows, outcomes, strict=True):
            obs, reward, info = outcome.obs, outcome.reward, outcome.info
            ended, cut = outcome.terminated, outcome.truncated
            if outcome.error is None and _plain(obs, reward, ended, cut, info, dtype, shape):
                (bank.leaves or bank.leaves_of(slot))[0][row] = obs
                needs_reset[slot] = not outcome.restarted and (ended or cut)
                if what == "step":
                    self._raised[slot] = 0
                if info:
                    infos[row] = info
            else:
                reward, ended, cut = self._settle(what, slot, row, outcome, infos, failures)
            rewards.append(reward)
            terminated.append(ended)
            truncated.append(cut)
        # Every slot: one slice assignment per array (≈ 4x cheaper than a fancy index at 32 rows).
        written: Any = self.rows if self.rows is not None and slots == self.every else rows
        buffers.reward[written] = rewards
        buffers.terminated[written] = terminated
        buffers.truncated[written] = truncated
        self._bank.commit(slots, written)  # a failed slot's the trainer points back (pool_env.banks)

    def write_steps(
        self,
        slots: Sequence[int],
        returns: list[tuple[Any, ...] | Outcome],
        infos: dict[int, Any],
        failures: dict[int, list[str]],
        resets: Collection[int] = (),
    ) -> None:
        """:meth:`write` for step returns as a local env gave them (``GymBackend.step_returns``).

        The lean common case, for a flat array observation: a return whose observation is an
        ndarray of exactly the declared shape and dtype, a ``float`` reward, ``bool`` flags and a
        ``dict`` info needs no conversion, so it is taken as is: no object, no call per slot, and
        all observations of a command written by one ``np.concatenate`` when every slot is clean.
        Anything else (a failure, a numpy reward, a castable dtype, a wrong shape) goes through
        :meth:`_settle`, the full contract check, so what passes and every error text stay the same.

        ``resets``: the local slots among ``slots`` whose entry is their reset's outcome
        (NEXT_STEP's autoreset within a step command), as an :class:`Outcome` or, without an
        error, as the tuple ``(obs, reward, terminated, truncated, info)`` of its fields; each is
        written exactly as :meth:`write` writes a reset (a reset does not clear the slot's raise
        count, its errors name ``reset()``), so a command that steps some slots and resets others
        still writes its rows at once.
        """
        buffers = self._buffers
        all_rows = self.rows is not None and (slots is self.every or slots == self.every)
        if len(slots) == 1 and self._write_one(slots, returns[0], infos, resets, all_rows):
            return
        rows = (
            range(self.rows.start, self.rows.stop)
            if all_rows and self.rows is not None
            else [self._slots[s] for s in slots]
        )
        lean = self._lean_obs
        shape, dtype = lean if lean is not None else ((), None)
        bank = self._bank
        needs_reset = self._needs_reset
        raised = self._raised
        rewards: list[Any] = []
        terminated: list[Any] = []
        truncated: list[Any] = []
        observations: list[Any] = []
        clean = lean is not None
        for slot, row, returned in zip(slots, rows, returns, strict=True):
            if not isinstance(returned, Outcome):
                obs, reward, ended, cut, info = returned
                if _plain(obs, reward, ended, cut, info, dtype, shape):
                    observations.append(obs)
                    rewards.append(reward)
                    terminated.append(ended)
                    truncated.append(cut)
                    needs_reset[slot] = ended or cut
                    if raised[slot] and slot not in resets:  # a good step ends a run of raises
                        raised[slot] = 0
                    if info:
                        infos[row] = info
                    continue
                returned = Outcome(obs, reward, ended, cut, info)
            clean = False
            observations.append(None)
            what = "reset" if slot in resets else "step"
            reward, ended, cut = self._settle(what, slot, row, returned, infos, failures)
            rewards.append(reward)
            terminated.append(ended)
            truncated.append(cut)
        written: Any = self.rows if all_rows else rows
        if len(observations) == 1:  # one slot: plain item writes (≈ 3 µs less than the batch forms below)
            row = rows[0]
            if observations[0] is not None:
                (bank.leaves or bank.leaves_of(slots[0]))[0][row] = observations[0]
            buffers.reward[row] = rewards[0]
            buffers.terminated[row] = terminated[0]
            buffers.truncated[row] = truncated[0]
            self._bank.commit(slots, written)
            return
        if clean and all_rows and bank.leaves is not None:  # one copy for the whole command (shapes, dtype checked)
            np.concatenate(observations, out=bank.leaves[0][written].reshape((-1, *shape[1:])))
        else:  # row by row; a slot _settle took (None here) has its observation written already
            for slot, row, obs in zip(slots, rows, observations, strict=True):
                if obs is not None:
                    (bank.leaves or bank.leaves_of(slot))[0][row] = obs
        buffers.reward[written] = rewards
        buffers.terminated[written] = terminated
        buffers.truncated[written] = truncated
        self._bank.commit(slots, written)  # a failed slot's the trainer points back (pool_env.banks)

    def _write_one(
        self, slots: Sequence[int], returned: tuple[Any, ...] | Outcome, infos: dict[int, Any], resets: Collection[int],
        all_rows: bool,
    ) -> bool:  # fmt: skip
        """:meth:`write_steps` of one slot's plain return (a one-slot command: a worker of one slot),
        written item by item without the lists the batch needs; ``False`` (nothing written) for
        anything else, which the batch code takes."""
        lean = self._lean_obs
        if lean is None or isinstance(returned, Outcome):
            return False
        obs, reward, ended, cut, info = returned
        if not _plain(obs, reward, ended, cut, info, lean[1], lean[0]):
            return False
        slot = slots[0]
        row = self._slots[slot]
        bank = self._bank
        (bank.leaves or bank.leaves_of(slot))[0][row] = obs
        buffers = self._buffers
        buffers.reward[row] = reward
        buffers.terminated[row] = ended
        buffers.truncated[row] = cut
        self._needs_reset[slot] = ended or cut
        if self._raised[slot] and slot not in resets:  # a good step ends a run of raises
            self._raised[slot] = 0
        if info:
            infos[row] = info
        bank.commit(slots, self.rows if all_rows else [row])
        return True

    def _settle(
        self,
        what: str,
        slot: int,
        row: int,
        outcome: Outcome,
        infos: dict[int, Any],
        failures: dict[int, list[str]],
    ) -> tuple[float, bool, bool]:
        """Check one slot's outcome against the env's contract, write its observation; its reward
        and flags to write.

        A failed slot's :class:`SlotFailure` goes to ``failures`` in wire form, keyed by global
        slot; it is reported truncated with reward 0 and keeps its previous observation.
        """
        leaves = self._leaves
        error, kind, fate = outcome.error, outcome.kind, outcome.fate
        reward, ended, cut = 0.0, False, True
        if error is None:
            try:
                reward, ended, cut = check_outcome(
                    outcome.obs, outcome.reward, outcome.terminated, outcome.truncated, outcome.info,
                    leaves, self._flat_obs,
                )  # fmt: skip
                self._write_obs(slot, row, outcome.obs)
            except ContractViolation as exc:
                error, kind = f"{what}() returned an {exc}", ErrorKind.INVALID_ENV_RETURN
            except Exception as exc:  # numpy refused a value the checks let through
                error = f"{what}() returned an invalid observation: {type(exc).__name__}: {exc}"
                kind = ErrorKind.INVALID_ENV_RETURN
            if error is not None:  # the env did the step (or reset); its return is unusable
                fate = StepFate.APPLIED if what == "step" else StepFate.NOT_APPLIED
        elif outcome.obs is not None:
            with contextlib.suppress(Exception):  # an observation beside an error is a courtesy
                check_outcome(outcome.obs, 0.0, False, False, {}, leaves, self._flat_obs)
                self._write_obs(slot, row, outcome.obs)
        if outcome.info and isinstance(outcome.info, dict):
            infos[row] = outcome.info
        if error is None:
            self._needs_reset[slot] = not outcome.restarted and (ended or cut)
            if what == "step":
                self._raised[slot] = 0
            return reward, ended, cut
        self._needs_reset[slot] = True
        assert kind is not None  # an Outcome with an error has its kind
        if kind is ErrorKind.ENV_RAISED:
            self._raised[slot] += 1
            self.in_a_row[row] = self._raised[slot]
        where = (
            f"slot {row} (worker {self._worker_id}, pid {os.getpid()}, episode {self._episode[slot]}, "
            f"step {self._episode_step[slot]})"
        )
        failures[row] = SlotFailure(kind, fate, f"{where}: {error}").to_wire()
        return 0.0, False, True

    def _write_obs(self, slot: int, row: int, obs: Any) -> None:
        """Write local ``slot``'s observation into its ``row`` of this command's bank."""
        if obs is None:  # the slot keeps its observation (also in the bank it is committed from)
            self._bank.copy_current(slot, row)
            return
        arrays = self._bank.leaves_of(slot)
        if self._obs_by_message:
            self._write_obs_parts(row, obs, arrays)
        elif self._flat_obs:
            arrays[0][row] = obs
        else:
            for leaf, array in zip(self._leaves, arrays, strict=True):
                array[row] = leaf_value(obs, leaf.path)

    def _write_obs_parts(self, row: int, obs: Any, arrays: list[np.ndarray]) -> None:
        """Array leaves into shared memory, the others (no fixed shape) into the reply."""
        parts: list[Any] = []
        for leaf, array in zip(self._leaves, arrays, strict=True):
            value = obs if self._flat_obs else leaf_value(obs, leaf.path)
            if leaf.by_message:
                parts.append(value)
            else:
                array[row] = value
        self.obs_out[row] = parts


def _plain(obs: Any, reward: Any, ended: Any, cut: Any, info: Any, dtype: Any, shape: tuple[int, ...]) -> bool:
    """Whether an env's return is the plain common case the lean write takes as it is: an ndarray
    observation of exactly the declared ``dtype``/``shape``, a ``float``/``np.float64`` reward,
    ``bool`` flags and a ``dict`` info (anything else goes through the full contract check)."""
    return (
        type(obs) is np.ndarray
        and obs.dtype is dtype
        and obs.shape == shape
        and (type(reward) is float or type(reward) is np.float64)
        and (ended is True or ended is False)
        and (cut is True or cut is False)
        and type(info) is dict
    )
