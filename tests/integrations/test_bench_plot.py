"""`pool-env bench --plot`: the PNG of throughput panels and the goals panel (extra ``[bench]``: matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the [bench] extra is not installed")

from matplotlib import image

from pool_env.bench.goals import evaluate_goals
from pool_env.bench.plot import write_plot

pytestmark = [pytest.mark.integrations, pytest.mark.timeout(120)]

REPORT = Path(__file__).resolve().parents[2] / "pool_env" / "bench" / "results" / "latest.json"


def test_the_plot_of_a_bench_report_grows_a_goals_panel(tmp_path: Path) -> None:
    report = json.loads(REPORT.read_text())
    goals = evaluate_goals(report["cases"], report["idle"])
    plain, with_goals = tmp_path / "plain.png", tmp_path / "goals.png"

    write_plot(report["cases"], str(plain))
    write_plot(report["cases"], str(with_goals), goals)

    for path in (plain, with_goals):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain_height, goals_height = image.imread(plain).shape[0], image.imread(with_goals).shape[0]
    # a row of the goals panel per measured goal (≈ 0.28 in at 110 dpi each)
    assert goals_height - plain_height > 0.2 * 110 * len([g for g in goals if g["measured"] is not None])
