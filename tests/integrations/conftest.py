"""Integration tests with other stacks (extras ``[sb3]``, ``[torchrl]``, ``[ray]``; marker ``integrations``):
every test checks that it left no process, shm segment or socket dir behind."""

from __future__ import annotations

import pytest

from tests.conftest import LeakSnapshot


@pytest.fixture(autouse=True)
def _check_no_leaks(no_leaks: LeakSnapshot) -> LeakSnapshot:
    return no_leaks
