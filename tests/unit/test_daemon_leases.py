"""The lease table with a fake clock: grants, refusals that name what is free, heartbeats, expiry."""

from __future__ import annotations

import pytest

from pool_env.daemon.leases import LeaseTable, describe_slots
from pool_env.errors import LeaseError, UsageError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_grants_the_lowest_free_slots_to_each_lease(clock: FakeClock) -> None:
    table = LeaseTable(8, timeout=1.0, clock=clock)
    first, second = table.grant(3), table.grant(2)
    assert first.slots == [0, 1, 2] and second.slots == [3, 4]
    assert table.free_slots() == [5, 6, 7]
    assert first.lease_id != second.lease_id and len(first.lease_id) == 32


def test_refusal_names_how_many_and_which_slots_are_free(clock: FakeClock) -> None:
    table = LeaseTable(8, timeout=1.0, clock=clock)
    table.grant(6)
    with pytest.raises(LeaseError, match=r"asked for 3 slots but only 2 of 8 are free \[6-7\]") as info:
        table.grant(3)
    assert isinstance(info.value, UsageError)


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2"])
def test_refuses_a_lease_of_a_non_positive_or_non_int_size(clock: FakeClock, bad: object) -> None:
    with pytest.raises(LeaseError, match="positive int"):
        LeaseTable(4, 1.0, clock).grant(bad)  # type: ignore[arg-type]


def test_a_request_counts_as_heartbeat_and_silence_expires_the_lease(clock: FakeClock) -> None:
    table = LeaseTable(4, timeout=1.0, clock=clock)
    lease = table.grant(2)
    clock.now += 0.9
    table.get(lease.lease_id)
    clock.now += 0.9
    assert table.expire() == []
    clock.now += 0.2
    assert table.expire() == [lease]
    with pytest.raises(LeaseError, match="unknown lease"):
        table.get(lease.lease_id)


def test_ended_leases_drain_before_their_slots_are_free_again(clock: FakeClock) -> None:
    table = LeaseTable(4, timeout=1.0, clock=clock)
    lease = table.grant(4)
    table.release(lease.lease_id)
    assert table.draining == {0, 1, 2, 3}
    with pytest.raises(LeaseError, match=r"only 0 of 4 are free \[\] \(4 finishing a command of an ended lease\)"):
        table.grant(1)
    table.drained([0, 1, 2, 3])
    assert table.free_slots() == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", [None, 7, b"x", "0" * 32])
def test_unknown_or_malformed_lease_ids_are_refused(clock: FakeClock, bad: object) -> None:
    with pytest.raises(LeaseError, match="unknown lease"):
        LeaseTable(4, 1.0, clock).get(bad)


def test_slot_lists_are_compact() -> None:
    assert describe_slots([0, 1, 2, 3, 7, 9, 10]) == "[0-3, 7, 9-10]"
    assert describe_slots([]) == "[]"


def test_a_lease_smaller_than_a_worker_spreads_over_the_workers(clock: FakeClock) -> None:
    table = LeaseTable(16, timeout=1.0, clock=clock, groups=[list(range(8)), list(range(8, 16))])

    first = table.grant(4)
    second = table.grant(6)

    assert first.slots == [0, 1, 8, 9]  # 2 on each worker, not all 4 on worker 0
    assert second.slots == [2, 3, 4, 10, 11, 12]
    assert table.free_slots() == [5, 6, 7, 13, 14, 15]


def test_a_lease_takes_whole_free_workers_first(clock: FakeClock) -> None:
    table = LeaseTable(16, timeout=1.0, clock=clock, groups=[list(range(8)), list(range(8, 16))])

    first = table.grant(8)
    second = table.grant(8)

    assert first.slots == list(range(8))  # all of worker 0 (its steps ride the fast path), not 4 + 4
    assert second.slots == list(range(8, 16))


def test_a_lease_takes_the_whole_workers_it_fills_then_spreads_the_rest(clock: FakeClock) -> None:
    table = LeaseTable(12, timeout=1.0, clock=clock, groups=[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    table.grant(1)  # slot 0: worker 0 is no longer wholly free

    assert table.grant(6).slots == [1, 4, 5, 6, 7, 8]  # all of worker 1, then one each from 2 and 0


def test_a_lease_takes_first_from_the_worker_with_most_free_slots(clock: FakeClock) -> None:
    table = LeaseTable(9, timeout=1.0, clock=clock, groups=[[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    table.grant(2)  # slots 0 and 3
    assert table.grant(2).slots == [1, 6]  # worker 2 has 3 free: it gives first


def test_an_expired_lease_comes_back_when_its_slots_are_still_free(clock: FakeClock) -> None:
    table = LeaseTable(4, timeout=1.0, clock=clock)
    starved = table.grant(2)
    starved.was_reset = True
    clock.now += 1.5
    assert table.expire() == [starved]
    table.drained(starved.slots)

    assert table.get(starved.lease_id) is starved  # its trainer was alive after all

    assert table.pop_revived() == [starved] and table.pop_revived() == []
    assert starved.was_reset and table.free_slots() == [2, 3]


def test_an_expired_lease_whose_slots_were_taken_stays_gone(clock: FakeClock) -> None:
    table = LeaseTable(2, timeout=1.0, clock=clock)
    starved = table.grant(2)
    clock.now += 1.5
    table.expire()
    with pytest.raises(LeaseError, match="unknown lease"):
        table.get(starved.lease_id)  # still draining: not revived
    table.drained(starved.slots)
    table.grant(1)
    with pytest.raises(LeaseError, match="unknown lease"):
        table.get(starved.lease_id)  # one of its slots belongs to another trainer now


def test_a_pause_credits_every_lease_the_time_the_daemon_could_not_run(clock: FakeClock) -> None:
    table = LeaseTable(2, timeout=1.0, clock=clock)
    lease = table.grant(1)
    clock.now += 5.0
    table.pause(5.0)
    assert table.expire() == []
    clock.now += 1.5
    assert table.expire() == [lease]
