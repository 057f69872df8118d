"""Small envs for the drop-in tests (importable by workers): infos of every type, reset options
echoed back, frames to render, nested and int-keyed Dict spaces, big infos, short episodes."""

from __future__ import annotations

import enum
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Phase(enum.Enum):
    """An enum value some envs report in infos."""

    RUN = "run"


class Tag:
    """A plain custom object in infos or options (an event, a task descriptor)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tag) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class InfoZooEnv(gym.Env[np.ndarray, int]):
    """Infos whose keys differ per env (by seed parity) and whose values have many types;
    episodes end after ``length`` steps so autoresets happen."""

    observation_space = spaces.Box(-1, 1, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, length: int = 3, unsendable: bool = False) -> None:
        self.length, self.unsendable, self.idx, self.t = length, unsendable, 0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        if seed is not None:
            self.idx = seed % 2
        self.t = 0
        return np.zeros(1, np.float32), {"start": np.int16(self.idx), "phase": Phase.RUN}

    def step(self, action: int) -> Any:
        self.t += 1
        info: dict[str, Any] = {
            "speed": np.float32(0.5 + self.idx), "cell": (self.idx, 2), "event": Tag(f"e{self.idx}"),
            "grid": np.full((2, 3), self.t, np.uint8), "none": None, "flag": bool(action), "nested": {"deep": {"k": 1}},
        }  # fmt: skip
        if self.idx % 2 == 0:
            info["lives"] = np.int32(3)
            info["sub"] = {"x": np.float32(1.25)}
        if self.unsendable and self.t == 2:
            info["callback"] = lambda: None
        obs = np.array([self.np_random.uniform(-1, 1)], np.float32)
        return obs, float(self.t), self.t >= self.length, False, info


class OptionsEchoEnv(gym.Env[np.ndarray, int]):
    """reset(options=...) starts at ``options["pose"]`` and reports the options' types in its info."""

    observation_space = spaces.Box(-10, 10, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        options = options or {}
        pose = np.asarray(options.get("pose", np.zeros(3)), np.float32)
        return pose, {"seen": dict(options)}

    def step(self, action: int) -> Any:
        return np.zeros(3, np.float32), 0.0, True, False, {}


class FrameEnv(gym.Env[np.ndarray, int]):
    """render_mode="rgb_array": a small frame whose first pixel is the step count."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    observation_space = spaces.Box(-1, 1, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode, self.t, self.gain = render_mode, 0, 1.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: int) -> Any:
        self.t += 1
        return np.zeros(1, np.float32), self.gain * self.t, False, False, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        frame = np.zeros((4, 4, 3), np.uint8)
        frame[0, 0, 0] = self.t
        return frame

    def scaled(self, factor: float, *, offset: float = 0.0) -> tuple[float, int]:
        """A method with arguments, for ``call``."""
        return self.gain * factor + offset, self.t


def rgb_frame_env() -> FrameEnv:
    """``FrameEnv(render_mode="rgb_array")`` from an import path alone (a daemon's spec string
    carries no keyword arguments)."""
    return FrameEnv(render_mode="rgb_array")


class NestedEnv(gym.Env[dict[str, Any], tuple[Any, ...]]):
    """Dict obs with Tuple(Discrete, Discrete), Tuple(Box, Dict(MultiBinary)) and an empty nested
    Dict; Tuple actions; ends after 4 steps."""

    observation_space = spaces.Dict({
        "pair": spaces.Tuple((spaces.Discrete(3), spaces.Discrete(4))),
        "arm": spaces.Tuple((spaces.Box(-9, 9, (2,), np.float32), spaces.Dict({"grip": spaces.MultiBinary(3)}))),
        "meta": spaces.Dict({"flags": spaces.MultiBinary(2), "extra": spaces.Dict({})}),
    })  # fmt: skip
    action_space = spaces.Tuple((spaces.Discrete(2), spaces.Box(-1, 1, (2,), np.float32)))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.k, self.t = int(self.np_random.integers(0, 3)), 0
        return self._obs(0.0), {}

    def _obs(self, a: float) -> dict[str, Any]:
        return {
            "pair": (self.k, (self.k + 1) % 4),
            "arm": (np.array([self.k, a], np.float32), {"grip": np.array([1, 0, self.k % 2], np.int8)}),
            "meta": {"flags": np.array([self.k % 2, 1], np.int8), "extra": {}},
        }

    def step(self, action: tuple[Any, ...]) -> Any:
        self.k, self.t = (self.k + int(action[0])) % 3, self.t + 1
        return self._obs(float(action[1][0])), float(self.k), self.t >= 4, False, {}


class AgentIdDictEnv(gym.Env[dict[int, Any], dict[int, Any]]):
    """Two agents keyed by int ids: Dict({0: Box, 1: Box}) observations, Dict({0: Discrete, 1: Discrete}) actions."""

    observation_space = spaces.Dict({0: spaces.Box(-9, 9, (2,), np.float32), 1: spaces.Box(-9, 9, (2,), np.float32)})
    action_space = spaces.Dict({0: spaces.Discrete(2), 1: spaces.Discrete(2)})

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        return {0: np.zeros(2, np.float32), 1: np.ones(2, np.float32)}, {}

    def step(self, action: dict[int, Any]) -> Any:
        info = {"action_type": type(action).__name__, "action_valid": bool(self.action_space.contains(action))}
        obs = {0: np.full(2, action[0], np.float32), 1: np.full(2, action[1] + 2, np.float32)}
        return obs, 0.0, False, False, info


class BigInfoEnv(gym.Env[np.ndarray, int]):
    """A 480x640 float32 depth map (1.2 MB) in every step's info."""

    observation_space = spaces.Box(-1, 1, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: int) -> Any:
        self.t += 1
        return np.zeros(1, np.float32), 1.0, False, False, {"depth": np.full((480, 640), self.t, np.float32)}


class ChattyEnv(gym.Env[np.ndarray, int]):
    """Prints each step, warns and logs at reset: how users debug their envs."""

    observation_space = spaces.Box(-1, 1, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        import logging
        import warnings

        super().reset(seed=seed)
        self.t = 0
        warnings.warn("CHATTY-WARN reset called", stacklevel=1)
        logging.getLogger("chatty").warning("CHATTY-LOG reset")
        return np.zeros(1, np.float32), {}

    def step(self, action: int) -> Any:
        self.t += 1
        print(f"CHATTY-PRINT step {self.t}")
        return np.zeros(1, np.float32), 0.1 * self.t, False, False, {}


NESTED_CASES: list[tuple[type[gym.Env[Any, Any]], str, Any]] = [
    (NestedEnv, "tests.envs.dropin:NestedEnv",
     (np.array([1, 0, 1]), np.array([[0.5, 0], [-0.5, 0], [0.25, 0]], np.float32))),
    (AgentIdDictEnv, "tests.envs.dropin:AgentIdDictEnv", {0: np.array([1, 0, 1]), 1: np.array([0, 0, 1])}),
]  # fmt: skip
"""The nested and int-keyed Dict envs: ``(class, import string, the batched actions of 3 slots)``."""
NESTED_CASE_IDS = ["nested-with-empty-dict", "int-agent-ids"]
