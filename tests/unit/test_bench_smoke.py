"""The benchmark suite runs end to end at tiny sizes and writes well-formed JSON (never a speed check)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

from click.testing import CliRunner

from pool_env.cli import main

HAS_SERVER = importlib.util.find_spec("fastapi") is not None and importlib.util.find_spec("uvicorn") is not None


RATIO_LABELS = {"sync", "async", "sync copy=False", "client", "ideal_client", "floor", "ideal"}


def test_quick_bench_writes_a_row_per_candidate_of_every_workload(tmp_path: Path, no_leaks: object) -> None:
    workloads = "a,b,c,d" if HAS_SERVER else "a,c,d"
    out = tmp_path / "bench.json"

    result = CliRunner().invoke(
        main, ["bench", "--quick", "--rounds", "1", "--quiet", "--workload", workloads, "--json", str(out)]
    )

    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {"meta", "cases", "targets"} <= report.keys()
    assert sorted({case["workload"] for case in report["cases"]}) == workloads.split(",")
    for case in report["cases"]:
        kinds = {row["kind"] for row in case["results"]}
        assert "pool" in kinds, case["name"]
        for row in case["results"]:
            assert row["steps_per_s"] > 0 and math.isfinite(row["steps_per_s"])
            assert row["step_us_p50"] <= row["step_us_p99"]
            assert set(row["ratios"]) <= RATIO_LABELS
            if row["kind"] == "pool":
                assert row["workers"] == row["num_workers"] and row["rss_total_mib"] > 0
    assert all(target["met"] in (True, False) for target in report["targets"])
    assert "steps/s" in result.output  # the table was printed
    assert report["meta"]["other_processes_cores"] >= 0 and "other processes:" in result.output


def test_unknown_workload_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["bench", "--workload", "a,z"])

    assert result.exit_code == 2
    assert "subset of a,b,c,d" in result.output
