"""unbatch_infos is the inverse of gymnasium's VectorEnv._add_info; failed_slots reads both layouts."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv

from pool_env.integrations.infos import failed_slots, unbatch_infos


def test_unbatch_infos_gives_back_each_envs_dict() -> None:
    per_env: list[dict[str, Any]] = [
        {"a": 1, "nested": {"x": 0.5}},
        {},
        {"a": 3, "obj": "text", "nested": {"x": 1.5, "y": True}},
    ]
    infos: dict[str, Any] = {}
    adder = VectorEnv()
    adder.num_envs = 3
    for i, info in enumerate(per_env):
        infos = adder._add_info(infos, info, i)
    assert unbatch_infos(infos, 3) == per_env


def test_failed_slots_reads_error_kind_at_the_top_and_in_final_info() -> None:
    infos = {
        "error_kind": np.array([None, "worker_died", None], dtype=object),
        "_error_kind": np.array([False, True, False]),
        "final_info": {"error_kind": np.array([None, None, "transport"], dtype=object),
                       "_error_kind": np.array([False, False, True])},
    }  # fmt: skip
    assert failed_slots(infos, 3).tolist() == [False, True, True]
    assert failed_slots({}, 3).tolist() == [False, False, False]
