"""An env that ends, raises or kills its own worker at a chosen step: what the observation banks
(pool_env.banks) must survive — a worker that wrote a slot's new observation, then died."""

from __future__ import annotations

import os
import signal
from typing import Any

import gymnasium as gym
import numpy as np


class ScriptedEnv(gym.Env[np.ndarray, int]):
    """Observation ``[slot, step of the episode, resets, 0]``.

    ``end_at``: the first episode terminates at that step. ``raise_at``: the first episode's step
    raises ``RuntimeError``. ``kill_at``: the first episode's step SIGKILLs the worker process,
    once per ``flag`` file (a replacement worker's env steps on).
    """

    def __init__(self, slot: int, end_at: int = 0, raise_at: int = 0, kill_at: int = 0, flag: str = "") -> None:
        self.observation_space = gym.spaces.Box(-1e6, 1e6, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.slot, self.end_at, self.raise_at, self.kill_at, self.flag = slot, end_at, raise_at, kill_at, flag
        self.t = 0
        self.resets = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.slot, self.t, self.resets, 0], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.resets += 1
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        first = self.resets == 1
        if first and self.t == self.raise_at:
            raise RuntimeError(f"scripted failure at step {self.t}")
        if first and self.t == self.kill_at and not os.path.exists(self.flag):
            open(self.flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return self._obs(), 1.0, first and self.t == self.end_at, False, {}
