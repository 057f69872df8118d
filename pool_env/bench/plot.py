"""``--plot``: throughput against num_envs per implementation, one panel per workload, and a panel
of issue 13's goals, met or not (matplotlib).

matplotlib is an optional extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pool_env.bench.goals import margin

__all__ = ["goal_bars", "write_plot"]

MARGIN_RANGE = (0.1, 10.0)
"""The goals panel's x range (margin to the goal, log scale); a bar beyond it is drawn at its edge."""
MET_COLOR, MISSED_COLOR = "tab:green", "tab:red"


def _panel(case: dict[str, Any]) -> str:
    if case["workload"] == "b":
        return f"(b) reference server, L={case['params']['latency_ms']:g} ms"
    titles = {"a": "(a) CartPole-v1", "c": "(c) 84x84x4 uint8 obs", "d": "(d) floor / round trip"}
    return titles[case["workload"]]


def goal_bars(goals: Sequence[dict[str, Any]]) -> list[tuple[str, float, str]]:
    """The goals panel's bars, top to bottom: ``(label, margin, color)`` for each measured goal.

    ``margin`` is :func:`pool_env.bench.goals.margin` (≥ 1: met), clipped to :data:`MARGIN_RANGE`;
    green where the goal is met, red where not. Goals that were not measured get no bar.
    """
    low, high = MARGIN_RANGE
    bars = []
    for goal in goals:
        value = margin(goal)
        if value is None or goal["met"] is None:
            continue
        label = f"{goal['goal']} ({goal['measured']:g}, goal {goal['target']})"
        bars.append((label, min(max(value, low), high), MET_COLOR if goal["met"] else MISSED_COLOR))
    return bars


def write_plot(cases: Sequence[dict[str, Any]], path: str, goals: Sequence[dict[str, Any]] = ()) -> None:
    """Write a PNG of env steps/s against num_envs (log-log), one line per implementation, one
    panel per workload; with ``goals`` (:func:`pool_env.bench.goals.evaluate_goals`), a last panel
    of how far each goal is met (:func:`goal_bars`).

    Raises:
        RuntimeError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install -e '.[bench]'") from exc
    panels: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for case in cases:
        for row in case["results"]:
            # (b)'s default num_workers grows with num_envs: one line for it; elsewhere one per W
            by_default = case["workload"] == "b" and row.get("default_workers")
            impl = "pool (default W)" if by_default else row["impl"].replace(" (default)", "")
            panels[_panel(case)][impl].append((case["num_envs"], row["steps_per_s"]))
    bars = goal_bars(goals)
    columns = min(3, len(panels)) or 1
    rows = -(-len(panels) // columns) or 1
    extra = 0.0 if not bars else 1.0 + 0.28 * len(bars)  # inches for the goals panel, a row per goal
    figure = plt.figure(figsize=(5 * columns, 3.8 * rows + extra))
    heights = [3.8] * rows + ([extra] if bars else [])
    grid = figure.add_gridspec(len(heights), columns, height_ratios=heights)
    axes = [[figure.add_subplot(grid[r, c]) for c in range(columns)] for r in range(rows)]
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, lines) in zip(flat, sorted(panels.items()), strict=False):
        for impl, points in sorted(lines.items()):
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=impl)
        ax.set_title(title, fontsize=10)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("num_envs")
        ax.set_ylabel("env steps/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if bars:
        _goals_panel(figure.add_subplot(grid[rows, :]), bars)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")  # long goal labels stay whole
    plt.close(figure)


def _goals_panel(ax: Any, bars: list[tuple[str, float, str]]) -> None:
    labels, values, colors = zip(*bars, strict=True)
    positions = range(len(bars))
    ax.barh(positions, values, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(list(positions), labels, fontsize=7)
    ax.invert_yaxis()  # the first goal on top, as printed
    ax.set_xscale("log")
    ax.set_xlim(*MARGIN_RANGE)
    ax.set_xlabel("margin to the goal (≥ 1: met; measured ÷ goal, or goal ÷ measured for a ≤ goal)")
    ax.set_title("issue 13 goals in this run (green: met, red: not met)", fontsize=10)
