"""The invariants every batch of a DegradationEnv pool must satisfy, checked step by step.

:class:`BatchChecker` keeps, per slot, the previous observation, the server's step counter
(flights, ``infos["step"]``) and whether the episode ended, and checks each batch against them:

* **well-formed**: observations ``(num_envs, 9)`` float32, rewards ``(num_envs,)`` float, flags
  ``(num_envs,)`` bool, nothing NaN or infinite, never both terminated and truncated;
* **a failed slot** (``infos["_error"]``) is truncated, not terminated, reward 0, keeps its previous
  observation, carries a non-empty ``infos["error"]``, an :class:`~pool_env.errors.ErrorKind` in
  ``infos["error_kind"]``, a :class:`~pool_env.errors.StepFate` in ``infos["step_fate"]`` (their
  masks equal to ``infos["_error"]``) and ``infos["restarts"] >= 0``;
* **the step after an end** (terminated, truncated or failed) is an autoreset: reward 0, neither
  flag, step counter 0;
* **every other slot continued its own episode undisturbed**: its step counter grew by exactly
  what its action allows — ``step_size`` flights (or the flights left before ``max_steps``, which
  then truncates), 1 for a sale (which terminates with +150), between 2 and ``step_size`` for a
  failure (which terminates with -1000). A slot silently moved to a new episode, stepped twice
  or not at all, breaks this.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pool_env.envs.degradation import FAILURE_REWARD, OBS_FIELDS, SELL, SELL_REWARD
from pool_env.errors import ErrorKind, StepFate

__all__ = ["BatchChecker"]


class BatchChecker:
    """Checks batches of one pool (see the module docstring); :meth:`step` returns the violations."""

    def __init__(self, num_envs: int, step_size: int, max_steps: int) -> None:
        self.num_envs = num_envs
        self.step_size = step_size
        self.max_steps = max_steps
        self.counter = np.zeros(num_envs, dtype=np.int64)
        self.ended = np.zeros(num_envs, dtype=bool)
        self.obs = np.zeros((num_envs, OBS_FIELDS), dtype=np.float32)
        self.steps = 0

    def reset(self, obs: Any, infos: dict[str, Any]) -> list[str]:
        """Check the batch of a full ``reset``; slots that failed to reset autoreset next step."""
        problems = self._shape("obs", obs, (self.num_envs, OBS_FIELDS), np.float32)
        if problems:
            return problems
        error = _mask(infos, "error", self.num_envs)
        self.obs = np.array(obs)
        self.counter[:] = 0
        self.ended = error.copy()
        return [f"reset: slot {s} has a non-finite observation" for s in np.flatnonzero(~error) if not _finite(obs[s])]

    def step(
        self,
        actions: np.ndarray,
        obs: Any,
        rewards: Any,
        terminated: Any,
        truncated: Any,
        infos: dict[str, Any],
    ) -> list[str]:
        """Check one ``step`` batch against the previous one; the violations, as sentences."""
        self.steps += 1
        n = self.num_envs
        problems = (
            self._shape("obs", obs, (n, OBS_FIELDS), np.float32)
            + self._shape("rewards", rewards, (n,), None)
            + self._shape("terminated", terminated, (n,), np.bool_)
            + self._shape("truncated", truncated, (n,), np.bool_)
        )
        if problems:
            return problems
        rewards = np.asarray(rewards)
        if rewards.dtype.kind != "f":
            problems.append(f"rewards dtype {rewards.dtype} is not floating")
        error = _mask(infos, "error", n)
        has_step = _mask(infos, "step", n)
        for key in ("error_kind", "step_fate"):
            if not np.array_equal(_mask(infos, key, n), error):
                problems.append(f"step {self.steps}: infos['_{key}'] differs from infos['_error']")
        for slot in range(n):
            where = f"step {self.steps}, slot {slot}"
            found = self._slot(slot, int(actions[slot]), obs, rewards, terminated, truncated, infos, error, has_step)
            problems.extend(f"{where}: {text}" for text in found)
        self.obs = np.array(obs)
        self.ended = np.asarray(terminated) | np.asarray(truncated)
        return problems

    def _slot(
        self,
        slot: int,
        action: int,
        obs: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        infos: dict[str, Any],
        error: np.ndarray,
        has_step: np.ndarray,
    ) -> list[str]:
        reward, term, trunc = float(rewards[slot]), bool(terminated[slot]), bool(truncated[slot])
        if not (_finite(obs[slot]) and np.isfinite(reward)):
            return [f"non-finite observation or reward {reward}"]
        if term and trunc:
            return ["both terminated and truncated"]
        if error[slot]:
            message = infos["error"][slot]
            restarts = infos.get("restarts")
            found = []
            if not (trunc and not term and reward == 0.0):
                found.append(f"failed slot not reported as truncated with reward 0 ({term=}, {trunc=}, {reward=})")
            if not isinstance(message, str) or not message:
                found.append(f"failed slot has no error text: {message!r}")
            if restarts is None or int(restarts[slot]) < 0:
                found.append("failed slot has no infos['restarts']")
            if "error_kind" not in infos or not isinstance(infos["error_kind"][slot], ErrorKind):
                found.append("failed slot has no ErrorKind in infos['error_kind']")
            if "step_fate" not in infos or not isinstance(infos["step_fate"][slot], StepFate):
                found.append("failed slot has no StepFate in infos['step_fate']")
            if not np.array_equal(obs[slot], self.obs[slot]):
                found.append(f"failed slot's observation changed ({message})")
            return found
        if self.ended[slot]:  # NEXT_STEP autoreset (a reset answer may carry no step counter)
            counter = int(infos["step"][slot]) if has_step[slot] else 0
            self.counter[slot] = counter
            if reward != 0.0 or term or trunc or counter != 0:
                return [f"autoreset step is not a fresh episode ({reward=}, {term=}, {trunc=}, step={counter})"]
            return []
        if not has_step[slot]:
            return ["no infos['step'] on a slot that continued its episode"]
        counter = int(infos["step"][slot])
        previous, self.counter[slot] = int(self.counter[slot]), counter
        grew = counter - previous
        if action == SELL:
            ok = grew == 1 and term and reward == SELL_REWARD
        elif term:  # failure: detected from the second flight of a chunk on
            ok = 2 <= grew <= self.step_size and reward == FAILURE_REWARD
        else:
            ok = grew == min(self.step_size, self.max_steps - previous) and trunc == (counter >= self.max_steps)
        if not ok:
            return [
                f"episode disturbed: action {action} moved the step counter {previous} -> {counter} "
                f"({reward=}, {term=}, {trunc=})"
            ]
        return []

    @staticmethod
    def _shape(name: str, value: Any, shape: tuple[int, ...], dtype: Any) -> list[str]:
        array = np.asarray(value)
        if array.shape != shape:
            return [f"{name} has shape {array.shape}, expected {shape}"]
        if dtype is not None and array.dtype != dtype:
            return [f"{name} has dtype {array.dtype}, expected {np.dtype(dtype)}"]
        return []


def _mask(infos: dict[str, Any], key: str, n: int) -> np.ndarray:
    mask = infos.get("_" + key)
    return np.zeros(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


def _finite(row: Any) -> bool:
    return bool(np.all(np.isfinite(row)))
