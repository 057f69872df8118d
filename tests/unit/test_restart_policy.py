"""The restart policy, driven by a fake clock: immediate first restart, backoff, give-up."""

from __future__ import annotations

import random
from collections import deque

from pool_env.commands import split_slots
from pool_env.supervisor import RestartPolicy


def test_first_failure_restarts_at_once_then_backs_off_within_the_cap() -> None:
    policy = RestartPolicy(backoff=0.5, cap=2.0, flap_limit=10, flap_window=60.0)
    failures: deque[float] = deque()
    rng = random.Random(0)
    delays = [policy.next_delay(failures, now=float(t), rng=rng) for t in range(6)]
    assert delays[0] == 0.0
    bounds = [0.5, 1.0, 2.0, 2.0, 2.0]
    for delay, bound in zip(delays[1:], bounds, strict=True):
        assert delay is not None and 0.0 <= delay <= bound


def test_gives_up_after_flap_limit_failures_within_the_window() -> None:
    policy = RestartPolicy(flap_limit=3, flap_window=10.0)
    failures: deque[float] = deque()
    rng = random.Random(1)
    assert policy.next_delay(failures, 0.0, rng) == 0.0
    assert policy.next_delay(failures, 1.0, rng) is not None
    assert policy.next_delay(failures, 2.0, rng) is None


def test_failures_outside_the_window_are_forgotten() -> None:
    policy = RestartPolicy(flap_limit=3, flap_window=10.0)
    failures: deque[float] = deque()
    rng = random.Random(2)
    for t in (0.0, 1.0, 20.0, 21.0):
        assert policy.next_delay(failures, t, rng) is not None
    assert list(failures) == [20.0, 21.0]
    assert policy.next_delay(failures, 100.0, rng) == 0.0


def test_slots_split_evenly_and_contiguously_for_any_worker_count() -> None:
    assert [len(g) for g in split_slots(17, 6)] == [3, 3, 3, 3, 3, 2]
    for n, w in [(1, 1), (8, 8), (16, 3), (1024, 7)]:
        groups = split_slots(n, w)
        assert [s for g in groups for s in g] == list(range(n))
        assert max(map(len, groups)) - min(map(len, groups)) <= 1
