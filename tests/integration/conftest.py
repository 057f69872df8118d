"""Every integration test checks that it left no process, shm segment or socket dir behind; the
reference server a test module shares (``server``; a module that needs other settings defines its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pool_env.refserver.process import RefServer
from tests.conftest import LeakSnapshot


@pytest.fixture(autouse=True)
def _check_no_leaks(no_leaks: LeakSnapshot) -> LeakSnapshot:
    return no_leaks


@pytest.fixture(scope="module")
def server() -> Iterator[RefServer]:
    """A reference server with the default settings, one per test module."""
    with RefServer() as ref:
        yield ref
