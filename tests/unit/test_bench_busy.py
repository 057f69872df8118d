"""ForeignCpu: the CPU of processes outside the bench's own tree, over a run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pool_env.bench import busy
from pool_env.bench.busy import ForeignCpu


def test_a_waited_for_child_counts_as_the_runs_own_cpu() -> None:
    before = busy._own_seconds()
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert busy._own_seconds() - before >= 0.25


def test_foreign_cores_are_the_machines_busy_time_minus_the_own_tree_over_wall_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, machine, own = [100.0], [50.0], [5.0]
    monkeypatch.setattr(busy.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(busy, "_busy_seconds", lambda: machine[0])
    monkeypatch.setattr(busy, "_own_seconds", lambda: own[0])
    foreign = ForeignCpu()

    clock[0], machine[0], own[0] = 110.0, 50.0 + 14.0, 5.0 + 12.0  # 14 s busy, 12 of them ours, in 10 s
    assert foreign.cores() == pytest.approx(0.2)

    machine[0] = 50.0 + 11.0  # tick rounding can put the machine's count under ours: never negative
    assert foreign.cores() == 0.0
