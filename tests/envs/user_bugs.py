"""Users' envs with bugs of their own: returns that break the declared contract, exceptions.

Import-string targets for :class:`pool_env.GymEnvSpec`; keyword arguments are plain values.
With ``reset(seed=0)`` slot ``k`` gets seed ``k``, so ``bad_seeds`` aims a bug at given slots.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["BAD_RETURNS", "BadReturnEnv", "FlakyEnv", "SpaceBySlotEnv"]

BAD_RETURNS: dict[str, Any] = {
    "reward": np.array([1.0]),  # gymnasium#1445: a shape-(1,) reward
    "observation": np.ones((3, 1), np.float32),  # pytorch/rl#1585: a lookback window, not one row
    "observation dtype": np.array([1 + 2j]),  # complex does not cast to float32 ('same_kind')
    "terminated": None,
    "truncated": np.array([0.5]),
    "info": ["not", "a", "dict"],
}
"""What :class:`BadReturnEnv` returns in place of the named field."""


class BadReturnEnv(gym.Env[np.ndarray, int]):
    """``obs = [steps since reset]``, reward 1, never ends; slots seeded in ``bad_seeds`` return
    ``BAD_RETURNS[field]`` as their ``field`` on every step (``field="reset observation"``: the
    observation of every reset instead)."""

    observation_space = spaces.Box(-100, 100, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, field: str = "reward", bad_seeds: tuple[int, ...] = (1,)) -> None:
        self.field = field
        self.bad_seeds = tuple(bad_seeds)
        self.bad = False
        self.t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.bad = seed in self.bad_seeds
        self.t = 0
        if self.bad and self.field == "reset observation":
            return BAD_RETURNS["observation"], {}
        return np.zeros(1, np.float32), {}

    def step(self, action: int) -> tuple[Any, Any, Any, Any, Any]:
        self.t += 1
        values: dict[str, Any] = {
            "observation": np.array([self.t], np.float32),
            "reward": 1.0,
            "terminated": False,
            "truncated": False,
            "info": {},
        }
        if self.bad and self.field in BAD_RETURNS:
            values[self.field.split()[0]] = BAD_RETURNS[self.field]
        return values["observation"], values["reward"], values["terminated"], values["truncated"], values["info"]


class FlakyEnv(BadReturnEnv):
    """Raises ``RuntimeError`` on every ``every``-th step of an episode (1: on every step) in slots
    seeded in ``bad_seeds`` (``None``: in every env, also one made anew after an exception, whose
    reset has no seed); steps fine otherwise."""

    def __init__(self, every: int = 1, bad_seeds: tuple[int, ...] | None = (0,)) -> None:
        super().__init__("reward", bad_seeds or ())
        self.every = every
        self.bad = bad_seeds is None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        always = not self.bad_seeds
        result = super().reset(seed=seed, options=options)
        self.bad = self.bad or always
        return result

    def step(self, action: int) -> tuple[Any, Any, Any, Any, Any]:
        if self.bad and (self.t + 1) % self.every == 0:
            self.t += 1
            raise RuntimeError(f"flaky env failed at step {self.t}")
        self.t += 1
        return np.array([self.t], np.float32), 1.0, False, False, {}


class SpaceBySlotEnv(BadReturnEnv):
    """Declares the usual spaces in the trainer and in the first env a worker makes; the next envs
    of a worker (slot 1 of a 2-slot pool) declare a ``(3,)`` observation space (``which="observation"``)
    or ``Discrete(3)`` actions (``which="action"``): as a factory whose spaces depend on chance."""

    made_in_worker = 0

    def __init__(self, which: str = "observation") -> None:
        from tests.envs.faulty import worker_id

        super().__init__("reward", ())
        odd = worker_id() is not None and SpaceBySlotEnv.made_in_worker > 0
        if worker_id() is not None:
            SpaceBySlotEnv.made_in_worker += 1
        if odd and which == "observation":
            self.observation_space = spaces.Box(-100, 100, (3,), np.float32)
        if odd and which == "action":
            self.action_space = spaces.Discrete(3)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, np.float32), {}
