"""Importing this module registers an env id, as a plugin package does (``"tests.envs.registering:Id"``)."""

from __future__ import annotations

import gymnasium as gym

__all__ = ["SHORT_CARTPOLE"]

SHORT_CARTPOLE = "PoolEnvShortCartPole-v0"
"""CartPole truncated after 12 steps: autoresets come early."""

if SHORT_CARTPOLE not in gym.registry:
    cartpole = "gymnasium.envs.classic_control.cartpole:CartPoleEnv"
    gym.register(SHORT_CARTPOLE, entry_point=cartpole, max_episode_steps=12)
