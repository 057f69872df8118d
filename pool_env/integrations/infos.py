"""Per-slot views of gymnasium's vector infos, and which slots a failure cut.

gymnasium's vector envs return infos as one dict of arrays with a ``_key`` mask per key (nested
dicts recurse, ``final_info`` included). Stacks that want one dict per env (Stable-Baselines3's
``VecEnv``) and statistics that must leave out episodes cut by an infrastructure failure both
read them here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["FAILURE_KEYS", "failed_slots", "unbatch_infos"]

FAILURE_KEYS = ("error", "error_kind", "step_fate", "restarts")
"""The keys the pool adds to a failed slot's infos (README, "Failures")."""


def unbatch_infos(infos: Mapping[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """One dict per env from gymnasium vector infos (the inverse of ``VectorEnv._add_info``).

    A key counts for env ``i`` where its ``_key`` mask is true (or, without a mask, everywhere);
    nested vector dicts become nested dicts.

    Args:
        infos: vector infos, each value an array (or a nested vector dict) of length ``num_envs``.
        num_envs: the batch size.

    Returns:
        ``num_envs`` dicts; the values are the array elements (numpy scalars for numeric keys).
    """
    per_env: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in infos.items():
        if key.startswith("_") and key[1:] in infos:
            continue  # a mask
        mask = infos.get(f"_{key}")
        present = np.ones(num_envs, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if isinstance(value, Mapping):
            nested = unbatch_infos(value, num_envs)
            for i in np.flatnonzero(present):
                per_env[i][key] = nested[i]
            continue
        for i in np.flatnonzero(present):
            per_env[i][key] = value[i]
    return per_env


def failed_slots(infos: Mapping[str, Any], num_envs: int) -> np.ndarray:
    """The slots whose episode an infrastructure failure cut in this step or reset.

    A failed slot carries ``infos["error_kind"]`` (NEXT_STEP, DISABLED) or
    ``infos["final_info"]["error_kind"]`` (SAME_STEP, where the slot is already reset).

    Returns:
        A bool array of shape ``(num_envs,)``.
    """
    failed = np.zeros(num_envs, dtype=bool)
    if "_error_kind" in infos:
        failed |= np.asarray(infos["_error_kind"], dtype=bool)
    final_info = infos.get("final_info")
    if isinstance(final_info, Mapping) and "_error_kind" in final_info:
        failed |= np.asarray(final_info["_error_kind"], dtype=bool)
    return failed
