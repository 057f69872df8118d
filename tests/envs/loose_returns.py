"""An env whose returns use every type the contract accepts, not only the plain ones.

CartPole underneath; each step it returns its values in one of several accepted forms (a float64
observation for the float32 space, a list, numpy rewards and flags, 0/1 ints), chosen by the step
count and the slot's first seed, so one command mixes plain and loose slots; slots with an odd
first seed reset to float64 observations. The worker's lean path
takes the plain ones as they are and the rest through the full contract check
(:meth:`workers.results.ResultWriter.write_steps`); both must give ``SyncVectorEnv``'s values.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["LooseReturnsEnv", "make_loose_returns_env"]

STYLES = 6  # 0-1: as CartPole returns them (plain); 2-5: loose forms


class LooseReturnsEnv(gym.Wrapper):  # type: ignore[type-arg]
    """CartPole returning its step values in a form that rotates with the step count."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.offset = 0
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self.offset = seed
        self.t = 0
        obs, info = self.env.reset(seed=seed, options=options)
        return (obs.astype(np.float64) if self.offset % 2 else obs), info  # odd first seeds: castable resets

    def step(self, action: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        style = (self.t + self.offset) % STYLES
        if style == 2:
            return obs.astype(np.float64), np.float64(reward), np.bool_(terminated), np.bool_(truncated), info
        if style == 3:
            return obs.tolist(), np.float32(reward), int(terminated), int(truncated), info
        if style == 4:
            return obs, int(reward), terminated, np.bool_(truncated), info
        if style == 5:
            return obs, np.int64(reward), np.array(terminated), truncated, {"style": style}
        return obs, reward, terminated, truncated, info


def make_loose_returns_env() -> gym.Env[Any, Any]:
    """A :class:`LooseReturnsEnv` (an import-string target)."""
    return LooseReturnsEnv()
