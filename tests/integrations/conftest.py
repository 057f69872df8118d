"""Integration tests with other stacks (extras ``[sb3]``, ``[torchrl]``, ``[ray]``; marker ``integrations``):
every test checks that it left no process, shm segment or socket dir behind.

Ray's own processes (GCS, raylet, its workers) are children of the test process for as long as
Ray runs, so the per-test check cannot tell them from a leak: tests on a Ray runtime (the
``local_ray`` fixture, or a module's ``cluster``) are checked per module instead, once Ray is
shut down (whatever the tests started is gone: Ray, the env runners' pools and their workers).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import LeakSnapshot

RAY_FIXTURES = frozenset({"local_ray", "cluster"})
RAY_SHUTDOWN_GRACE = 30.0
"""Seconds for Ray's processes and the env runners' pools to exit after ``ray.shutdown()``."""


@pytest.fixture(autouse=True)
def _check_no_leaks(request: pytest.FixtureRequest) -> LeakSnapshot | None:
    if RAY_FIXTURES & set(request.fixturenames):
        return None  # checked when the module's Ray runtime is shut down
    snapshot: LeakSnapshot = request.getfixturevalue("no_leaks")
    return snapshot


def fail_on_leaks(snapshot: LeakSnapshot, what: str) -> None:
    """Wait for ``snapshot`` to be back (Ray's grace); fail naming what was left, after cleaning it up."""
    leaks = snapshot.wait_for_no_leaks(RAY_SHUTDOWN_GRACE)
    if leaks:
        description = leaks.describe()
        leaks.clean_up()
        pytest.fail(f"{what} left resources behind (now cleaned up):\n{description}", pytrace=False)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """``ray.init`` on this machine (2 CPUs, no dashboard) for the module; nothing left afterwards."""
    import ray

    snapshot = LeakSnapshot()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()
        fail_on_leaks(snapshot, "the Ray tests")
