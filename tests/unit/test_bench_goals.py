"""Issue 13's goals as `pool-env bench` judges them: which rows each goal reads, which way it points,
and the bars of the plot's goals panel (no matplotlib needed; the PNG itself: tests/integrations)."""

from __future__ import annotations

from typing import Any

import pytest

from pool_env.bench.goals import evaluate_goals, margin
from pool_env.bench.plot import MARGIN_RANGE, MET_COLOR, MISSED_COLOR, goal_bars


def _row(impl: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"impl": impl, "kind": kind, "ratios": {}, "steps_per_s": 1000.0, "step_us_mean": 10.0, **fields}


def _case(workload: str, num_envs: int, rows: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return {"workload": workload, "num_envs": num_envs, "params": params, "results": rows}


def _by_name(goals: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {goal["goal"]: goal for goal in goals}


def test_cartpole_goals_read_the_default_pool_and_the_trainer_slots_rows() -> None:
    cases = [
        _case(
            "a",
            64,
            [
                _row("pool W=1", "pool", default_workers=False, ratios={"sync": 2.0, "async": 9.0}),
                _row("pool W=2 (default)", "pool", default_workers=True, ratios={"sync": 1.05, "async": 12.0}),
                _row("pool W=1 trainer_slots=32", "pool", trainer_slots=32, ratios={"sync": 1.6}),
            ],
        ),
    ]

    goals = _by_name(evaluate_goals(cases, None))

    default = goals["CartPole N=64, every env in a worker: pool vs SyncVectorEnv"]
    assert (default["measured"], default["met"]) == (1.05, False)  # the default row, not the faster W=1
    assert goals["CartPole N=64: pool vs AsyncVectorEnv"]["met"] is True
    slots = goals["CartPole N=64, trainer_slots=32: pool vs SyncVectorEnv"]
    assert (slots["measured"], slots["met"]) == (1.6, True)
    # cases that did not run are n/a, never guessed
    assert goals["CartPole N=16, every env in a worker: pool vs SyncVectorEnv"]["met"] is None
    assert goals["84x84x4 uint8 N=64: pool vs SyncVectorEnv"]["measured"] is None


@pytest.mark.parametrize(("pool_mean", "met"), [(29.0, True), (31.0, False)])
def test_the_floor_goal_divides_the_mean_round_trips_and_must_stay_at_most_ten(pool_mean: float, met: bool) -> None:
    cases = [
        _case(
            "d",
            1,
            [
                _row("floor spin+shm", "floor", step_us_mean=3.0, step_us_p50=1.0),
                _row("pool W=1 (default)", "pool", step_us_mean=pool_mean, step_us_p50=100.0),
            ],
        )
    ]

    goal = _by_name(evaluate_goals(cases, None))["no-op env N=1: pool round trip / shared-memory spin floor"]

    assert goal["measured"] == pytest.approx(pool_mean / 3.0, abs=1e-3)
    assert goal["met"] is met and goal["higher_is_better"] is False and goal["target"] == "≤ 10x"


def test_daemon_goals_compare_with_the_embedded_default_pool() -> None:
    rows = [
        _row("pool W=2 (default)", "pool", default_workers=True, steps_per_s=1000.0),
        _row("pool via daemon W=2", "daemon", steps_per_s=790.0),
        _row("daemon, 1 of 2 trainers W=2", "daemon", trainers=2, steps_per_s=460.0),
    ]

    goals = _by_name(evaluate_goals([_case("a", 64, rows)], None))

    through = goals["CartPole N=64 through the daemon (ipc) vs embedded"]
    assert (through["measured"], through["met"]) == (0.79, False)
    shared = goals["CartPole N=64, one of two trainers on one daemon vs embedded"]
    assert (shared["measured"], shared["met"]) == (0.46, True)


def test_idle_and_memory_goals_are_upper_bounds() -> None:
    http = _row("pool W=8 (default)", "pool", rss_max_worker_mib=51.0, rss_total_mib=390.0, ratios={})
    local = _row("pool W=1", "pool", rss_max_worker_mib=45.0)
    cases = [_case("b", 256, [http], latency_ms=20.0), _case("a", 4, [local])]

    goals = _by_name(evaluate_goals(cases, {"cpu_percent_of_core": 0.4}))

    assert goals["idle pool (trainer not calling): CPU % of one core"]["met"] is True
    assert goals["HTTP worker RSS (max)"]["met"] is False  # 51 MiB > 50 MiB
    assert goals["pool worker RSS, every workload (max)"]["measured"] == 51.0
    assert goals["256 HTTP slots: workers' total RSS"]["met"] is True


def test_margin_is_at_least_one_exactly_when_the_goal_is_met() -> None:
    above = {"measured": 1.2, "goal_value": 1.1, "higher_is_better": True, "met": True}
    below = {"measured": 1.0, "goal_value": 1.1, "higher_is_better": True, "met": False}
    under = {"measured": 5.0, "goal_value": 10.0, "higher_is_better": False, "met": True}
    over = {"measured": 20.0, "goal_value": 10.0, "higher_is_better": False, "met": False}

    assert margin(above) == pytest.approx(1.2 / 1.1) and margin(below) == pytest.approx(1.0 / 1.1)
    assert margin(under) == pytest.approx(2.0) and margin(over) == pytest.approx(0.5)
    assert margin({**above, "measured": None}) is None


def test_goal_bars_colour_met_and_missed_goals_clip_outliers_and_skip_unmeasured_ones() -> None:
    goals = [
        {"goal": "fast", "measured": 2.0, "target": "≥ 1x", "met": True, "goal_value": 1.0, "higher_is_better": True},
        {"goal": "slow", "measured": 0.5, "target": "≥ 1x", "met": False, "goal_value": 1.0, "higher_is_better": True},
        {"goal": "idle", "measured": 0.0, "target": "≤ 2 %", "met": True, "goal_value": 2.0, "higher_is_better": False},
        {"goal": "n/a", "measured": None, "target": "≥ 1x", "met": None, "goal_value": 1.0, "higher_is_better": True},
    ]

    bars = goal_bars(goals)

    assert [(label.split(" (")[0], value, color) for label, value, color in bars] == [
        ("fast", 2.0, MET_COLOR),
        ("slow", 0.5, MISSED_COLOR),
        ("idle", MARGIN_RANGE[1], MET_COLOR),  # 0 % CPU: an infinite margin, drawn at the edge
    ]
    assert bars[1][0] == "slow (0.5, goal ≥ 1x)"
