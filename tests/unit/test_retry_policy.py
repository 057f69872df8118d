"""RetryPolicy: exact delay bounds (full jitter), the cap, exhaustion, and that it is a value."""

from __future__ import annotations

import pickle

import pytest

from pool_env.errors import TransportError
from workers.backends.retry import RetriesExhaustedError, RetryPolicy, describe


class FixedRandom:
    """A random source that always returns ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


ALMOST_ONE = 1.0 - 2.0**-53  # the largest value random.random() can return


def test_ceilings_double_from_backoff_until_the_cap() -> None:
    policy = RetryPolicy(max_retries=8, backoff=0.2, cap=5.0)
    ceilings = []
    while not policy.exhausted:
        ceilings.append(policy.ceiling())
        policy, _ = policy.increment("boom", FixedRandom(0.0))
    assert ceilings == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, ALMOST_ONE])
def test_delay_is_the_draw_times_the_ceiling(draw: float) -> None:
    delays = list(RetryPolicy(max_retries=4, backoff=0.5, cap=2.0).delays(FixedRandom(draw)))
    assert delays == pytest.approx([draw * 0.5, draw * 1.0, draw * 2.0, draw * 2.0])


def test_delays_stay_below_their_ceiling_with_a_real_generator() -> None:
    import random

    rng = random.Random(0)
    policy = RetryPolicy(max_retries=50, backoff=0.1, cap=1.0)
    while not policy.exhausted:
        ceiling = policy.ceiling()
        policy, delay = policy.increment("boom", rng)
        assert 0.0 <= delay < ceiling <= 1.0


def test_the_default_cap_is_five_seconds() -> None:
    policy = RetryPolicy(max_retries=100, backoff=1.0, retries=30)
    assert policy.ceiling() == 5.0


def test_increment_returns_a_new_policy_and_leaves_the_old_one_alone() -> None:
    policy = RetryPolicy(max_retries=2, backoff=1.0)
    after, _ = policy.increment("boom", FixedRandom(0.5))
    assert (policy.retries, after.retries) == (0, 1)
    with pytest.raises(AttributeError):
        policy.retries = 5  # type: ignore[misc]


def test_exhaustion_raises_after_max_retries_chained_to_the_last_error() -> None:
    policy = RetryPolicy(max_retries=2, backoff=0.1)
    error = ConnectionError("refused")
    policy, _ = policy.increment(error, FixedRandom(0.5))
    policy, _ = policy.increment(error, FixedRandom(0.5))
    assert policy.exhausted
    with pytest.raises(RetriesExhaustedError) as info:
        policy.increment(error, FixedRandom(0.5))
    assert info.value.__cause__ is error
    assert info.value.retries == 2
    assert "ConnectionError: refused" in str(info.value)
    assert isinstance(info.value, TransportError)


def test_zero_retries_gives_up_at_the_first_failure() -> None:
    policy = RetryPolicy(max_retries=0, backoff=1.0)
    assert list(policy.delays(FixedRandom(0.5))) == []
    with pytest.raises(RetriesExhaustedError, match="after 0 retries; last error: lost"):
        policy.increment("lost", FixedRandom(0.5))


def test_huge_retry_counts_do_not_overflow() -> None:
    assert RetryPolicy(max_retries=10_000, backoff=0.5, retries=5_000).ceiling() == 5.0


@pytest.mark.parametrize("field", ["max_retries", "backoff", "cap", "retries"])
def test_negative_fields_are_refused(field: str) -> None:
    values = {"max_retries": 1, "backoff": 1.0, "cap": 1.0, "retries": 0, field: -1}
    with pytest.raises(ValueError, match="must be >= 0"):
        RetryPolicy(**values)  # type: ignore[arg-type]


def test_exhausted_error_survives_pickling() -> None:
    error = RetriesExhaustedError(3, "ReadTimeout: slow")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.retries, copy.last_error, str(copy)) == (
        RetriesExhaustedError,
        3,
        "ReadTimeout: slow",
        str(error),
    )


def test_describe_names_the_type_and_cuts_long_messages() -> None:
    assert describe(ValueError("bad")) == "ValueError: bad"
    long = describe(RuntimeError("x" * 1000), limit=50)
    assert len(long) == 50 and long.endswith("...")
