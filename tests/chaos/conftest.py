"""Chaos tests: the seed of the run (printed on failure), and the leak checks of every test.

``POOL_ENV_CHAOS_SEED=N`` replays a run; by default each run draws a new seed, so CI explores.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psutil
import pytest

from tests.conftest import LeakSnapshot

FD_SLACK = 8
"""File descriptors the test process may gain for good (lazily opened module state, e.g. urandom)."""
RSS_GROWTH_LIMIT = 50 * 2**20


def forced_signals(rng: random.Random, steps: Sequence[int]) -> dict[int, signal.Signals]:
    """One worker SIGKILL and one SIGSTOP at two distinct steps drawn from ``steps``, so every chaos
    run has both faults whatever its random ones are (the same seed draws the same two steps)."""
    kill_at, freeze_at = rng.sample(steps, 2)
    return {kill_at: signal.SIGKILL, freeze_at: signal.SIGSTOP}


@pytest.fixture(autouse=True)
def _check_no_leaks(no_leaks: LeakSnapshot) -> LeakSnapshot:
    return no_leaks


@pytest.fixture
def chaos_seed() -> int:
    """The run's seed; a failing test's report shows it (see ``pytest_runtest_makereport``)."""
    return int(os.environ.get("POOL_ENV_CHAOS_SEED", random.SystemRandom().randrange(2**31)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    seed = getattr(item, "funcargs", {}).get("chaos_seed")
    if report.failed and seed is not None:
        report.sections.append(("chaos seed", f"replay with POOL_ENV_CHAOS_SEED={seed}"))
    return report


@dataclass
class FdCount:
    """Open file descriptors of the test process when the test started."""

    before: int

    def growth(self) -> int:
        """Descriptors opened since, and still open."""
        return psutil.Process().num_fds() - self.before


@pytest.fixture
def fds() -> FdCount:
    return FdCount(psutil.Process().num_fds())
