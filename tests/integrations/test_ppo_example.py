"""examples/ppo_degradation.py runs as documented (two small iterations against the reference
server with faults on, the heuristic baseline first, the curve written as CSV)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the example needs torch (CPU build)")

pytestmark = [pytest.mark.integrations, pytest.mark.timeout(180)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ppo_degradation.py"


def test_ppo_example_trains_two_iterations(tmp_path: Path) -> None:
    curve = tmp_path / "curve.csv"
    args = ["--envs", "4", "--workers", "2", "--steps", "16", "--iterations", "2", "--baseline-steps", "5"]
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *args, "--csv", str(curve)],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "heuristic policy: mean return" in done.stdout
    assert "done: 2 iterations" in done.stdout, done.stdout
    with curve.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert [int(r["env_steps"]) for r in rows] == [64, 128]
