"""Envs that misbehave on purpose, for the pool's fault tests.

Every factory is an import-string target (``"tests.envs.faulty:make_hanging_env"``) whose
keyword arguments are plain values, so they can travel in a :class:`pool_env.GymEnvSpec`.

Faults can be aimed at *one worker process*: :func:`worker_id` reads the ``--worker-id``
argument of ``python -m workers`` from ``sys.argv``. In the test process itself (where the
serial reference envs live) it is ``None``, so a reference built from the same factory never
misbehaves.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = [
    "DictTupleEnv",
    "make_crashing_env",
    "make_dict_tuple_env",
    "make_failing_in_worker_env",
    "make_hanging_env",
    "make_raising_env",
    "make_slow_env",
    "make_text_env",
    "worker_id",
]


def worker_id() -> int | None:
    """The ``--worker-id`` of the ``python -m workers`` process we run in, else ``None``."""
    argv = sys.argv
    if "--worker-id" in argv:
        position = argv.index("--worker-id")
        if position + 1 < len(argv):
            return int(argv[position + 1])
    return None


class _Fault(gym.Wrapper):  # type: ignore[type-arg]
    """CartPole-v1 with a hook before every step; counts steps since the last reset."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.reset_seed: int | None = None
        self.episode_steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        self.reset_seed = seed
        self.episode_steps = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> Any:
        self.episode_steps += 1
        self.before_step()
        return self.env.step(action)

    def before_step(self) -> None:
        """Override: misbehave here."""


class _HangingEnv(_Fault):
    def __init__(self, flag_path: str, target_worker: int) -> None:
        super().__init__()
        self._flag_path = flag_path
        self._target_worker = target_worker

    def before_step(self) -> None:
        if worker_id() == self._target_worker and os.path.exists(self._flag_path):
            os.unlink(self._flag_path)  # hang once: the replacement worker must not hang again
            while True:
                time.sleep(3600)


def make_hanging_env(flag_path: str, target_worker: int) -> gym.Env[Any, Any]:
    """CartPole that hangs forever inside ``step`` in worker ``target_worker`` once ``flag_path``
    exists (the flag is consumed, so only one hang happens)."""
    return _HangingEnv(flag_path, target_worker)


class _RaisingEnv(_Fault):
    def __init__(self, raise_seed: int | None, raise_at: int) -> None:
        super().__init__()
        self._raise_seed = raise_seed
        self._raise_at = raise_at

    def before_step(self) -> None:
        armed = self._raise_seed is not None and self.reset_seed == self._raise_seed
        if armed and self.episode_steps == self._raise_at:
            raise RuntimeError(f"injected failure at step {self.episode_steps} of the episode seeded {self.reset_seed}")


def make_raising_env(raise_seed: int | None = None, raise_at: int = 3) -> gym.Env[Any, Any]:
    """CartPole whose ``step`` raises ``RuntimeError`` at step ``raise_at`` of an episode that
    was reset with seed ``raise_seed`` (with ``reset(seed=0)`` slot k gets seed k)."""
    return _RaisingEnv(raise_seed, raise_at)


class _CrashingEnv(_Fault):
    def __init__(self, target_worker: int) -> None:
        super().__init__()
        self._target_worker = target_worker

    def before_step(self) -> None:
        if worker_id() == self._target_worker:
            os._exit(3)


def make_crashing_env(target_worker: int) -> gym.Env[Any, Any]:
    """CartPole whose every ``step`` in worker ``target_worker`` exits the process (code 3)."""
    return _CrashingEnv(target_worker)


class _SlowEnv(_Fault):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self._delay = delay

    def before_step(self) -> None:
        if self._delay > 0:
            time.sleep(self._delay)


def make_slow_env(delay: float) -> gym.Env[Any, Any]:
    """CartPole that sleeps ``delay`` seconds in every ``step``."""
    return _SlowEnv(delay)


def make_failing_in_worker_env() -> gym.Env[Any, Any]:
    """CartPole in the test process, but its constructor raises inside a worker process."""
    if worker_id() is not None:
        raise RuntimeError("this env cannot be created in a worker")
    return gym.make("CartPole-v1")


class DictTupleEnv(gym.Env[dict[str, Any], dict[str, Any]]):
    """A seeded random-walk env with nested Dict/Tuple observations and Dict actions.

    Episodes end at random (terminated) or after ``max_steps`` (truncated); every step and reset
    gives ``info = {"t": steps since reset}``.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, max_steps: int = 25) -> None:
        self.observation_space = spaces.Dict(
            {
                "position": spaces.Box(-10.0, 10.0, (2,), np.float32),
                "pair": spaces.Tuple((spaces.Discrete(5), spaces.Box(0.0, 1.0, (3,), np.float64))),
                "bits": spaces.MultiBinary(4),
            }
        )
        self.action_space = spaces.Dict(
            {"move": spaces.Discrete(3), "force": spaces.Box(-1.0, 1.0, (2,), np.float32)}
        )
        self._max_steps = max_steps
        self._t = 0
        self._position = np.zeros(2, np.float32)

    def _obs(self) -> dict[str, Any]:
        rng = self.np_random
        return {
            "position": self._position.copy(),
            "pair": (int(rng.integers(5)), rng.random(3)),
            "bits": rng.integers(0, 2, 4).astype(np.int8),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self._t = 0
        self._position = self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)
        return self._obs(), {"t": self._t}

    def step(self, action: dict[str, Any]) -> Any:
        self._t += 1
        direction = float(int(action["move"]) - 1)
        self._position = np.clip(
            self._position + direction * 0.5 + np.asarray(action["force"], np.float32), -10.0, 10.0
        ).astype(np.float32)
        reward = float(-np.abs(self._position).sum() + self.np_random.normal())
        terminated = bool(self.np_random.random() < 0.05)
        truncated = self._t >= self._max_steps
        return self._obs(), reward, terminated, truncated, {"t": self._t}


def make_dict_tuple_env(max_steps: int = 25) -> gym.Env[Any, Any]:
    """A :class:`DictTupleEnv`."""
    return DictTupleEnv(max_steps)


class _TextEnv(gym.Env[str, int]):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Text(max_length=8)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        return "hello", {}

    def step(self, action: int) -> Any:
        return "hello", 0.0, False, False, {}


def make_text_env() -> gym.Env[Any, Any]:
    """An env with a ``Text`` observation space (no fixed-size array form)."""
    return _TextEnv()
