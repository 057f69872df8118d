"""The examples run as documented (small sizes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("embedded_cartpole.py", ["--envs", "4", "--steps", "60"], "episodes, mean return"),
        ("partial_batches.py", ["--envs", "4", "--batch-size", "2", "--rounds", "30"], "steps per slot"),
        ("degradation_pool.py", ["--envs", "4", "--steps", "10"], "slot errors absorbed"),
    ],
)
def test_example_runs(script: str, args: list[str], expect: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert expect in done.stdout
