"""Issue 13's goals, checked against one interleaved run, and the idle-CPU measurement they need.

Each goal is a ratio measured in the same run (never across runs): a pool candidate against
gymnasium's ``SyncVectorEnv``/``AsyncVectorEnv``, the raw shared-memory spin floor, or the
embedded pool. A goal whose cases did not run is reported ``n/a``, never guessed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psutil

from pool_env import GymEnvSpec, PoolVectorEnv

__all__ = ["evaluate_goals", "margin", "measure_idle_cpu"]

IDLE_SECONDS = 3.0


def measure_idle_cpu(num_envs: int = 16, seconds: float = IDLE_SECONDS) -> dict[str, Any]:
    """CPU a CartPole pool uses while the trainer does not call it: % of one core, all processes.

    The pool is reset and stepped once, then left alone for ``seconds``; the CPU time of its
    workers and of this (the trainer's) process over that time is summed. This process does
    nothing but sleep meanwhile, so its share is the coordinator's background cost.
    """
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), num_envs) as env:
        env.reset(seed=0)
        env.step(env.action_space.sample())
        processes = [psutil.Process()] + [psutil.Process(pid) for pid in env.worker_pids]

        def cpu() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in processes)

        before, start = cpu(), time.monotonic()
        time.sleep(seconds)
        used, elapsed = cpu() - before, time.monotonic() - start
        return {
            "num_envs": num_envs,
            "num_workers": env.num_workers,
            "seconds": round(elapsed, 2),
            "cpu_percent_of_core": round(100 * used / elapsed, 3),
        }


def _case(cases: Sequence[dict[str, Any]], workload: str, num_envs: int, **params: Any) -> dict[str, Any] | None:
    for case in cases:
        same = case["workload"] == workload and case["num_envs"] == num_envs
        if same and all(case["params"].get(k) == v for k, v in params.items()):
            return case
    return None


def _rows(case: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [] if case is None else list(case["results"])


def _pick(case: dict[str, Any] | None, **match: Any) -> dict[str, Any] | None:
    for row in _rows(case):
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _goal(name: str, measured: float | None, goal: float, higher: bool, unit: str = "x") -> dict[str, Any]:
    met = None if measured is None else (measured >= goal if higher else measured <= goal)
    return {
        "goal": name,
        "measured": None if measured is None else round(measured, 3),
        "target": f"{'≥' if higher else '≤'} {goal:g}{unit}",
        "met": met,
        "goal_value": goal,
        "higher_is_better": higher,
    }


def margin(goal: dict[str, Any]) -> float | None:
    """How far a goal of :func:`evaluate_goals` is met: ``measured / goal`` for a "≥" goal and
    ``goal / measured`` for a "≤" one, so ≥ 1 means met either way (``None``: not measured).

    Raises:
        KeyError: ``goal`` has no ``goal_value`` (a report written before it had one).
    """
    measured, value = goal["measured"], goal["goal_value"]
    if measured is None:
        return None
    if goal["higher_is_better"]:
        return float(measured) / value
    return float("inf") if measured == 0 else value / float(measured)


def _ratio(row: dict[str, Any] | None, reference: str) -> float | None:
    return None if row is None else row["ratios"].get(reference)


def evaluate_goals(cases: Sequence[dict[str, Any]], idle: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 13's goals (ratios in this run; ``met`` is ``None`` where the cases did not run)."""
    goals = []
    for n, floor in ((64, 1.1), (16, 0.8), (4, 0.6)):
        pool = _pick(_case(cases, "a", n), kind="pool", default_workers=True)
        goals.append(
            _goal(f"CartPole N={n}, every env in a worker: pool vs SyncVectorEnv", _ratio(pool, "sync"), floor, True)
        )
        goals.append(_goal(f"CartPole N={n}: pool vs AsyncVectorEnv", _ratio(pool, "async"), 2.0, True))
    for n, floor in ((64, 1.5), (16, 1.2)):
        pool = _pick(_case(cases, "a", n), kind="pool", trainer_slots=n // 2)
        goals.append(
            _goal(f"CartPole N={n}, trainer_slots={n // 2}: pool vs SyncVectorEnv", _ratio(pool, "sync"), floor, True)
        )
    big = _pick(_case(cases, "c", 64), kind="pool", default_workers=True)
    goals.append(_goal("84x84x4 uint8 N=64: pool vs SyncVectorEnv", _ratio(big, "sync"), 1.0, True))
    floor_case = _case(cases, "d", 1)
    pool, spin = _pick(floor_case, kind="pool"), _pick(floor_case, impl="floor spin+shm")
    trip = None if pool is None or spin is None else pool["step_us_mean"] / spin["step_us_mean"]
    goals.append(_goal("no-op env N=1: pool round trip / shared-memory spin floor", trip, 10.0, False))
    a64 = _case(cases, "a", 64)
    daemon, embedded = _pick(a64, kind="daemon", trainers=None), _pick(a64, kind="pool", default_workers=True)
    through = None if daemon is None or embedded is None else daemon["steps_per_s"] / embedded["steps_per_s"]
    goals.append(_goal("CartPole N=64 through the daemon (ipc) vs embedded", through, 0.8, True))
    shared = _pick(a64, kind="daemon", trainers=2)
    each = None if shared is None or embedded is None else shared["steps_per_s"] / embedded["steps_per_s"]
    goals.append(_goal("CartPole N=64, one of two trainers on one daemon vs embedded", each, 0.45, True))
    for latency in (20.0, 50.0):
        remote = _case(cases, "b", 64, latency_ms=latency)
        row = _pick(remote, kind="pool")
        name = f"refserver L={latency:g}ms N=64: pool vs ideal asyncio client"
        goals.append(_goal(name, _ratio(row, "ideal_client"), 0.9, True))
        goals.append(_goal(f"refserver L={latency:g}ms N=64: pool vs client pattern", _ratio(row, "client"), 3.0, True))
    percent = None if idle is None else idle["cpu_percent_of_core"]
    goals.append(_goal("idle pool (trainer not calling): CPU % of one core", percent, 2.0, False, " %"))
    http = [r for c in cases if c["workload"] == "b" for r in c["results"] if r["kind"] == "pool"]
    rss = [r["rss_max_worker_mib"] for r in http if r.get("rss_max_worker_mib")]
    goals.append(_goal("HTTP worker RSS (max)", max(rss) if rss else None, 50.0, False, " MiB"))
    pools = [r for c in cases for r in _rows(c) if r["kind"] == "pool"]
    every = [r["rss_max_worker_mib"] for r in pools if r.get("rss_max_worker_mib")]
    goals.append(_goal("pool worker RSS, every workload (max)", max(every) if every else None, 50.0, False, " MiB"))
    total = [r["rss_total_mib"] for c in cases if c["workload"] == "b" and c["num_envs"] == 256 for r in _rows(c)]
    total = [t for t in total if t]
    goals.append(_goal("256 HTTP slots: workers' total RSS", max(total) if total else None, 400.0, False, " MiB"))
    return goals
