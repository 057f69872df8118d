"""``--plot``: throughput against num_envs per implementation, one panel per workload (matplotlib).

matplotlib is an optional extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

__all__ = ["write_plot"]


def _panel(case: dict[str, Any]) -> str:
    if case["workload"] == "b":
        return f"(b) reference server, L={case['params']['latency_ms']:g} ms"
    titles = {"a": "(a) CartPole-v1", "c": "(c) 84x84x4 uint8 obs", "d": "(d) floor / round trip"}
    return titles[case["workload"]]


def write_plot(cases: Sequence[dict[str, Any]], path: str) -> None:
    """Write a PNG of env steps/s against num_envs (log-log), one line per implementation.

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
    columns = min(3, len(panels)) or 1
    rows = -(-len(panels) // columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, lines) in zip(axes.flat, sorted(panels.items()), strict=False):
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
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
