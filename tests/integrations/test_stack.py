"""The integrations' environment is the one CI promises: torch's CPU build, gymnasium as Ray pins it."""

from __future__ import annotations

from importlib import metadata

import gymnasium
import torch
from packaging.requirements import Requirement


def _gymnasium_requirement(distribution: str, extra: str = "") -> Requirement:
    for line in metadata.requires(distribution) or []:
        requirement = Requirement(line)
        applies = requirement.marker is None or requirement.marker.evaluate({"extra": extra})
        if requirement.name == "gymnasium" and applies:
            return requirement
    raise AssertionError(f"{distribution} declares no gymnasium requirement (extra {extra!r})")


def test_torch_is_the_cpu_build() -> None:
    assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build; pin the CPU one"


def test_installed_gymnasium_is_in_both_ray_and_pool_env_ranges() -> None:
    installed = gymnasium.__version__
    ray_range = _gymnasium_requirement("ray", extra="rllib").specifier
    pool_env_range = _gymnasium_requirement("pool_env").specifier
    assert ray_range.contains(installed), (installed, str(ray_range))
    assert pool_env_range.contains(installed), (installed, str(pool_env_range))
