"""Envs whose observations have no fixed shape (importable by workers): Text, Sequence, Graph, a
Dict mixing a Box with a Text, and a custom ``Space``; each draws its observations from its RNG
and ends its episodes at different steps, so autoresets happen."""

from __future__ import annotations

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


def _spaces() -> dict[str, spaces.Space[Any]]:
    return {
        "text": spaces.Text(8),
        "sequence": spaces.Sequence(spaces.Box(-1, 1, (2,), np.float32)),
        "graph": spaces.Graph(spaces.Box(0, 1, (3,), np.float32), spaces.Discrete(4)),
        "mixed": spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float32), 7: spaces.Text(5), "none": spaces.Dict()}),
        "custom": Parity(1),
    }


class FreeShapeEnv(gym.Env[Any, int]):
    """Observations sampled from ``kind``'s space with the env's RNG; episodes of 2..5 steps."""

    action_space = spaces.Discrete(2)

    def __init__(self, kind: str = "text") -> None:
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
