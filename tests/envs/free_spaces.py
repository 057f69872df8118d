"""Envs whose observations have no fixed shape (importable by workers): Text, Sequence (stacked or
not), Graph, OneOf, a Dict mixing a Box with a Text, a Tuple of such parts, and a custom ``Space``;
each draws its observations from its RNG and ends its episodes at different steps, so autoresets
happen. :class:`EchoActionEnv` takes actions of those spaces and returns each as its observation.
A ``pool-env serve`` names one kind through the environment variable :data:`KIND_VARIABLE`."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Parity(spaces.Space[int]):
    """A custom space (not one of gymnasium's): ints whose parity is ``parity``."""

    def __init__(self, parity: int = 0, seed: int | None = None) -> None:
        super().__init__((), np.int64, seed)
        self.parity = parity

    def sample(self, mask: Any = None, probability: Any = None) -> int:
        return int(self.np_random.integers(0, 50)) * 2 + self.parity

    def contains(self, x: Any) -> bool:
        return isinstance(x, int) and x % 2 == self.parity

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Parity) and other.parity == self.parity


class Point:
    """A plain object of an importable class (the codec carries it by import path)."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


class PointSpace(spaces.Space[Point]):
    """A custom space whose samples are objects of a class (:class:`Point`)."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(None, None, seed)

    def sample(self, mask: Any = None, probability: Any = None) -> Point:
        return Point(int(self.np_random.integers(0, 9)))

    def contains(self, x: Any) -> bool:
        return isinstance(x, Point)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PointSpace)


KIND_VARIABLE = "POOL_ENV_TEST_SPACE"
"""The kind an env made without arguments uses (how a test tells a ``pool-env serve`` which one)."""


def _spaces() -> dict[str, spaces.Space[Any]]:
    return {
        "text": spaces.Text(8, charset="zyxwvu0123"),
        "sequence": spaces.Sequence(spaces.Box(-1, 1, (2,), np.float32)),
        "stacked": spaces.Sequence(spaces.Box(-1, 1, (2,), np.float32), stack=True),
        "graph": spaces.Graph(spaces.Box(0, 1, (3,), np.float32), spaces.Discrete(4)),
        "oneof": spaces.OneOf([spaces.Text(4), spaces.Graph(spaces.Discrete(3), None), spaces.Discrete(5)]),
        "mixed": spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float32), 7: spaces.Text(5), "none": spaces.Dict()}),
        "tuple": spaces.Tuple(
            [
                spaces.Sequence(spaces.Discrete(3)),
                spaces.Dict({"g": spaces.Graph(spaces.Discrete(2), None), "v": spaces.Box(0, 1, (2,), np.float32)}),
            ]
        ),
        "custom": Parity(1),
        "objects": PointSpace(),
    }


KINDS = tuple(_spaces())


def _kind(kind: str | None) -> str:
    return kind if kind is not None else os.environ.get(KIND_VARIABLE, "text")


class FreeShapeEnv(gym.Env[Any, int]):
    """Observations sampled from ``kind``'s space with the env's RNG; episodes of 2..5 steps."""

    action_space = spaces.Discrete(2)

    def __init__(self, kind: str | None = None) -> None:
        kind = _kind(kind)
        self.kind = kind
        self.observation_space = _spaces()[kind]
        self.length, self.t = 0, 0

    def _obs(self) -> Any:
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        return self.observation_space.sample()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.length, self.t = int(self.np_random.integers(2, 6)), 0
        return self._obs(), {}

    def step(self, action: int) -> Any:
        self.t += 1
        return self._obs(), float(action), self.t >= self.length, False, {"t": self.t}


class NotASpaceEnv(FreeShapeEnv):
    """Declares an observation space that is no gymnasium ``Space`` (gymnasium refuses to batch it)."""

    def __init__(self) -> None:
        super().__init__("text")
        self.observation_space = "a string, not a Space"  # type: ignore[assignment]


class EchoTextEnv(gym.Env[str, str]):
    """Text actions (an LLM-style env): the observation echoes the action with a random suffix; a
    Dict action adds a Box part, so parts in shared memory and in messages meet in one action."""

    observation_space = spaces.Text(12)

    def __init__(self, nested: bool = False) -> None:
        self.nested = nested
        self.action_space = (
            spaces.Dict({"say": spaces.Text(6), "volume": spaces.Box(0, 1, (1,), np.float32)})
            if nested
            else spaces.Text(6)
        )
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.t = 0
        return "start", {}

    def step(self, action: Any) -> Any:
        self.t += 1
        said = action["say"] if self.nested else action
        volume = float(action["volume"][0]) if self.nested else 1.0
        obs = said + str(int(self.np_random.integers(10)))
        return obs, volume * len(said), self.t >= 3, False, {"heard": said}


class EchoActionEnv(gym.Env[Any, Any]):
    """Actions of ``kind``'s space (seeded, so a batch's ``action_space.sample()`` is reproducible),
    each returned as the next observation; episodes of 2..4 steps."""

    def __init__(self, kind: str | None = None) -> None:
        kind = _kind(kind)
        self.action_space = _spaces()[kind]
        self.action_space.seed(11)
        self.observation_space = _spaces()[kind]
        self.length, self.t = 0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.length, self.t = int(self.np_random.integers(2, 5)), 0
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> Any:
        self.t += 1
        return action, float(self.np_random.random()), self.t >= self.length, False, {"t": self.t}


def point_action_env() -> EchoActionEnv:
    """Actions that are objects of a class: a daemon does not rebuild them from the network."""
    env = EchoActionEnv("text")
    env.action_space = PointSpace(seed=1)
    return env


def local_space_env() -> FreeShapeEnv:
    """An observation space whose class is local to this function (no import path)."""

    class Local(Parity):
        pass

    env = FreeShapeEnv("custom")
    env.observation_space = Local(1)
    return env
