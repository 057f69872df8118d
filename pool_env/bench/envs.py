"""Tiny local envs for the benchmarks, made in pool workers by import string.

* ``pool_env.bench.envs:make_big_obs_env``: 84x84x4 uint8 observations (an Atari frame stack), so
  every copy of an observation shows in the step time; the env itself only touches one row.
* ``pool_env.bench.envs:make_null_env``: a 4-float observation and (almost) no work, so a step of a
  vector env over it is nothing but that vector env's own overhead (workload d).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["BigObsEnv", "NullEnv", "make_big_obs_env", "make_null_env"]

BIG_OBS_SHAPE = (84, 84, 4)


class BigObsEnv(gym.Env[np.ndarray, np.int64]):
    """84x84x4 uint8 observations; an episode lasts ``episode_length`` steps, then truncates."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, episode_length: int = 1000) -> None:
        self.observation_space = gym.spaces.Box(0, 255, BIG_OBS_SHAPE, dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self._episode_length = episode_length
        self._obs = np.zeros(BIG_OBS_SHAPE, dtype=np.uint8)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._obs.fill(0)
        return self._obs, {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._t += 1
        self._obs[self._t % BIG_OBS_SHAPE[0]] = self._t & 0xFF  # one row: the frame changes, cheaply
        return self._obs, 1.0, False, self._t >= self._episode_length, {}


class NullEnv(gym.Env[np.ndarray, np.int64]):
    """A float32 ``(4,)`` observation, no work; an episode lasts ``episode_length`` steps."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, episode_length: int = 1000) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._episode_length = episode_length
        self._obs = np.zeros(4, dtype=np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs, {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._t += 1
        return self._obs, 0.0, False, self._t >= self._episode_length, {}


def make_big_obs_env(episode_length: int = 1000) -> BigObsEnv:
    """Factory for ``GymEnvSpec("pool_env.bench.envs:make_big_obs_env")``."""
    return BigObsEnv(episode_length)


def make_null_env(episode_length: int = 1000) -> NullEnv:
    """Factory for ``GymEnvSpec("pool_env.bench.envs:make_null_env")``."""
    return NullEnv(episode_length)
