"""Deterministic, cheap simulator of the challenge's ``DegradationEnv`` (PROTOCOL.md §8).

One :class:`DegradationEnv` is one aircraft engine. A decision step covers ``step_size`` flights
(sub-steps); the action applies to the first one. Observations are 9 floats per flight: 7 sensors,
the phase (always 0.0) and DTAMB, whose first row in every step chunk is exactly 9.1.

Model (a reference choice, tuned to the magnitudes observed on the live server):

* Wear ``w`` grows by ``rate * U(0.97, 1.03)`` per flight; the engine fails when ``w`` reaches its
  ``threshold``. ``rate ~ U(0.92, 1.08)`` and ``threshold ~ U(66, 120)`` per engine, so a never-repaired
  engine fails after 59-136 flights. A failure is detected from the second sub-step of a chunk on.
* Repair (cost 930 on the first sub-step) keeps 15 % of the wear and shortens the remaining life: the
  wear rate grows by 15 % per repair. Every flight of the chunk, repaired or not, earns revenue.
* Revenue per flight ``base - 30 f - 25 f^4`` with ``f = w / threshold`` (≈ 45 new, ≤ 0 near failure).
* Sell: +150 exactly, one row, ``terminated`` with reason ``"sold"``. Failure: -1000 exactly for the
  chunk, k ≤ step_size rows, ``terminated`` with reason ``"failure"``. Reaching ``max_steps`` flights
  truncates (reason ``"max_steps"``); the last chunk may be short.

All randomness comes from one ``numpy.random.Generator`` per episode, so a seed fixes the whole episode;
a ``None`` seed draws fresh entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pool_env.envs.degradation import ACTIONS, FAILURE_REWARD, OBS_FIELDS, REPAIR, SELL, SELL_REWARD

__all__ = ["DegradationEnv", "EpisodeEndedError", "StepResult"]

REPAIR_COST = 930.0
REPAIR_KEEP = 0.15
REPAIR_RATE_FACTOR = 1.15
DTAMB_FLOOR = 9.1
DTAMB_CAP = 10.9

# Sensors 0..6: HPC_Tout, HP_Nmech, HPC_Tin, LPT_Tin, Fuel_flow, HPC_Pout_st, LP_Nmech.
_SENSOR_MEAN = np.array([795.4, 19362.0, 335.5, 1119.3, 0.3719, 1.365e6, 3956.0])
_ENGINE_STD = np.array([1.0, 12.0, 0.2, 0.8, 0.0002, 2.5e3, 1.5])
_NOISE_STD = np.array([1.1, 25.0, 0.25, 1.2, 0.00015, 4.0e3, 1.5])
_AMBIENT_COEF = np.array([0.0, 0.0, 1.0, 2.8, 0.00066, 0.0, 6.4])  # per K of DTAMB above 9.6
_WEAR_COEF = np.array([-11.0, -340.0, 0.0, 2.0, 0.0, -4.5e4, 0.0])  # times f^2 (f = wear fraction)


class EpisodeEndedError(RuntimeError):
    """Raised by :meth:`DegradationEnv.step` once the episode has terminated or been truncated."""


@dataclass(frozen=True)
class StepResult:
    """Outcome of one decision step (a chunk of ``flights`` sub-steps).

    Attributes:
        observations: ``(flights, 9)`` float64 array, one row per executed flight.
        reward: Sum of the rewards of the chunk.
        terminated: True after a sale or a failure.
        truncated: True when ``max_steps`` flights were reached without termination.
        reason: ``"sold"``, ``"failure"``, ``"max_steps"`` or None.
        flights: Number of executed sub-steps (rows).
    """

    observations: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    reason: str | None
    flights: int


class DegradationEnv:
    """One simulated engine; see the module docstring for the model.

    Attributes:
        max_steps: Flights after which the episode is truncated.
        step: Flights flown since the last reset (the protocol's ``step``).
        total_reward: Sum of the rewards since the last reset.
        num_repairs: Repairs since the last reset.
        terminated / truncated / reason: End state of the current episode.
    """

    max_steps: int
    step: int
    total_reward: float
    num_repairs: int
    terminated: bool
    truncated: bool
    reason: str | None
    wear: float
    threshold: float

    def __init__(self, max_steps: int = 1000, seed: int | None = None) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps
        self.last_observation: list[float] = []
        self.reset(seed)

    @property
    def done(self) -> bool:
        """True once the episode has terminated or been truncated."""
        return self.terminated or self.truncated

    @property
    def degradation(self) -> float:
        """Current wear fraction ``wear / threshold`` (1.0 means failure)."""
        return min(self.wear / self.threshold, 1.0)

    def reset(self, seed: int | None = None) -> list[float]:
        """Start a new engine; return its first observation as a flat list of 9 floats."""
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        self.rate = float(rng.uniform(0.92, 1.08))
        self.threshold = float(rng.uniform(66.0, 120.0))
        self.revenue_base = float(rng.uniform(44.0, 48.5))
        self._sensor_base = _SENSOR_MEAN + _ENGINE_STD * rng.standard_normal(7)
        self.wear = 0.0
        self.step = 0
        self.total_reward = 0.0
        self.num_repairs = 0
        self.terminated = False
        self.truncated = False
        self.reason = None
        dtamb = np.array([rng.uniform(DTAMB_FLOOR, 10.8)])
        obs = self._observe(np.zeros(1), dtamb, rng.standard_normal((1, 7)))
        self.last_observation = obs[0].tolist()
        return self.last_observation

    def step_chunk(self, action: int, step_size: int) -> StepResult:
        """Apply ``action`` to the first of ``step_size`` flights and fly the rest.

        Raises:
            EpisodeEndedError: If the episode already ended (the server never auto-resets).
            ValueError: If ``action`` is not 0, 1 or 2 or ``step_size`` < 1.
        """
        if self.done:
            raise EpisodeEndedError("episode has ended; reset it")
        if action not in ACTIONS:
            raise ValueError(f"action must be 0, 1 or 2, got {action}")
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        if action == SELL:
            return self._sell()
        k = min(step_size, self.max_steps - self.step)
        rng = self._rng
        jitter = rng.uniform(0.97, 1.03, size=k)
        z = rng.standard_normal((k, 9))  # cols 0-6 sensor noise, 7 ambient walk, 8 revenue noise
        reward = 0.0
        if action == REPAIR:
            self.wear *= REPAIR_KEEP
            self.rate *= REPAIR_RATE_FACTOR
            self.num_repairs += 1
            reward -= REPAIR_COST
        growth = self.rate * jitter
        wear = self.wear + np.cumsum(growth)
        crossed = np.flatnonzero(wear >= self.threshold)
        failed = crossed.size > 0
        n = k
        if failed:
            first = int(crossed[0])
            if first == 0 and k > 1:
                first = 1  # a failure shows up from the second sub-step of a chunk on
            n = first + 1
        frac = np.minimum(wear[:n] / self.threshold, 1.0)
        steps = 0.12 + 0.3 * z[:n, 7]
        steps[0] = 0.0
        dtamb = np.minimum(DTAMB_FLOOR + np.abs(np.cumsum(steps)), DTAMB_CAP)
        obs = self._observe(frac, dtamb, z[:n, :7])
        self.wear = float(wear[n - 1])
        self.step += n
        if failed:
            reward = FAILURE_REWARD
            self.terminated = True
            self.reason = "failure"
        else:
            revenue = self.revenue_base - 30.0 * frac - 25.0 * frac**4 + 1.5 * z[:n, 8]
            reward += float(revenue.sum())
            if self.step >= self.max_steps:
                self.truncated = True
                self.reason = "max_steps"
        self.total_reward += reward
        self.last_observation = obs[-1].tolist()
        return StepResult(obs, reward, self.terminated, self.truncated, self.reason, n)

    def _sell(self) -> StepResult:
        z = self._rng.standard_normal((1, 7))
        obs = self._observe(np.array([self.degradation]), np.array([DTAMB_FLOOR]), z)
        self.step += 1
        self.total_reward += SELL_REWARD
        self.terminated = True
        self.reason = "sold"
        self.last_observation = obs[0].tolist()
        return StepResult(obs, SELL_REWARD, True, False, "sold", 1)

    def _observe(self, frac: np.ndarray, dtamb: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Build ``(n, 9)`` observations from wear fractions, DTAMB values and unit noise ``(n, 7)``."""
        n = frac.shape[0]
        obs = np.empty((n, OBS_FIELDS))
        obs[:, :7] = (
            self._sensor_base
            + _WEAR_COEF * (frac * frac)[:, None]
            + _AMBIENT_COEF * (dtamb - 9.6)[:, None]
            + _NOISE_STD * noise
        )
        obs[:, 7] = 0.0
        obs[:, 8] = dtamb
        return obs
