"""Adapters for the stacks users train with: Stable-Baselines3 (:mod:`pool_env.sb3`),
``gymnasium.make_vec`` (:mod:`pool_env.integrations.gym_registration`), TorchRL, and
episode statistics that leave out episodes cut by failures (:mod:`pool_env.integrations.wrappers`).

Each module imports its stack only when imported itself.
"""

from __future__ import annotations

__all__: list[str] = []
