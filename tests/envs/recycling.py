"""Envs for the recycling tests (importable by workers): episodes whose lengths and observations
come from the env's own RNG (``np_random``), so a handover that lost the RNG state shows at once,
and an env that grows its process's memory on every step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class RandomLengthEnv(gym.Env[np.ndarray, int]):
    """Each episode lasts 2..``max_length`` steps, drawn from ``np_random`` at reset; observations
    and rewards are draws too, and infos carry the step and a draw (so slots end at different steps)."""

    observation_space = spaces.Box(-10, 10, (3,), np.float64)
    action_space = spaces.Discrete(3)

    def __init__(self, max_length: int = 6) -> None:
        self.max_length, self.length, self.t = max_length, 0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.length, self.t = int(self.np_random.integers(2, self.max_length + 1)), 0
        return self.np_random.normal(size=3), {"length": self.length}

    def step(self, action: int) -> Any:
        self.t += 1
        obs = self.np_random.normal(size=3) + action
        info = {"t": self.t, "draw": np.float32(self.np_random.random())}
        return obs, float(self.np_random.random()), self.t >= self.length, False, info


class MemoryGrowingEnv(RandomLengthEnv):
    """A :class:`RandomLengthEnv` that leaks ``mib_per_step`` MiB of touched memory on every step,
    up to ``limit_mib`` (a simulator's cache that is never freed), so its worker's RSS grows."""

    def __init__(self, max_length: int = 6, mib_per_step: float = 2.0, limit_mib: float = 96.0) -> None:
        super().__init__(max_length)
        self.mib_per_step, self.limit_mib = mib_per_step, limit_mib
        self.leak: list[np.ndarray] = []

    def step(self, action: int) -> Any:
        if len(self.leak) * self.mib_per_step < self.limit_mib:
            self.leak.append(np.ones(int(self.mib_per_step * 2**20) // 8))  # written: counts in RSS
        return super().step(action)
