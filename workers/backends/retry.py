"""The retry policy of the HTTP backend: a frozen value that says how long to wait, never waits.

Modelled on urllib3's ``Retry``: :meth:`RetryPolicy.increment` takes the error that just
happened and returns the policy for the next attempt together with the delay to sleep before it,
or raises :class:`RetriesExhaustedError` (chained to that error) once ``max_retries`` retries
have been spent. Delays use exponential back-off with *full jitter*: the delay before retry
``n`` (0-based) is uniform in ``[0, min(cap, backoff * 2**n))``. The caller sleeps, so tests can
check the exact delays with a scripted random source.

:class:`Deadline` is the other budget: the end of one backend call (``HttpEnvSpec.call_timeout``
seconds after it started) on an injected clock. Past it, no request and no back-off starts; the
client raises :class:`CallTimeoutError` (a :class:`RetriesExhaustedError`) instead.

:class:`RetriesExhaustedError` and :class:`CallTimeoutError` live in :mod:`pool_env.errors`;
they are re-exported here for compatibility.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from pool_env.envs.http import RETRY_DELAY_CAP
from pool_env.errors import CallTimeoutError, ErrorKind, RetriesExhaustedError

__all__ = [
    "DEFAULT_CAP",
    "CallTimeoutError",
    "Deadline",
    "RandomSource",
    "RetriesExhaustedError",
    "RetryPolicy",
    "describe",
]

DEFAULT_CAP = RETRY_DELAY_CAP
"""The longest delay between two attempts, in seconds (the spec's default call_timeout counts on it)."""

_MAX_EXPONENT = 60  # 2**60 * any sane backoff is far above any cap; avoids float overflow


class RandomSource(Protocol):
    """What the policy needs from a random generator (``random.Random`` satisfies it)."""

    def random(self) -> float:
        """A float uniform in ``[0, 1)``."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry one request, and how long to wait before each retry.

    Attributes:
        max_retries: retries allowed after the first attempt (0 = never retry).
        backoff: the ceiling of the first delay, in seconds; it doubles per retry.
        cap: no ceiling exceeds this many seconds.
        retries: retries already granted (0 for a fresh policy).
    """

    max_retries: int
    backoff: float
    cap: float = DEFAULT_CAP
    retries: int = 0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff < 0 or self.cap < 0 or self.retries < 0:
            raise ValueError(f"RetryPolicy fields must be >= 0, got {self!r}")

    @property
    def exhausted(self) -> bool:
        """True when :meth:`increment` would raise."""
        return self.retries >= self.max_retries

    def ceiling(self) -> float:
        """The upper bound (exclusive) of the delay before the next retry."""
        return min(self.cap, self.backoff * 2.0 ** min(self.retries, _MAX_EXPONENT))

    def increment(self, error: BaseException | str, rng: RandomSource) -> tuple[RetryPolicy, float]:
        """Account for one failed attempt.

        Args:
            error: the failure of the attempt (an exception or its description).
            rng: draws the jitter.

        Returns:
            The policy for the next attempt and the delay to sleep before making it.

        Raises:
            RetriesExhaustedError: ``max_retries`` retries were already granted; chained to
                ``error`` when it is an exception, of ``error``'s kind when it has one
                (:class:`~pool_env.errors.ErrorKind`, else ``TRANSPORT``).
        """
        if self.exhausted:
            description = error if isinstance(error, str) else describe(error)
            kind = getattr(error, "kind", None)
            exhausted = RetriesExhaustedError(
                self.retries, description, kind if isinstance(kind, ErrorKind) else ErrorKind.TRANSPORT
            )
            if isinstance(error, BaseException):
                raise exhausted from error
            raise exhausted
        delay = rng.random() * self.ceiling()
        return replace(self, retries=self.retries + 1), delay

    def delays(self, rng: RandomSource) -> Iterator[float]:
        """Every delay this policy would grant, in order (for logs and tests)."""
        policy = self
        while not policy.exhausted:
            policy, delay = policy.increment("", rng)
            yield delay


class Deadline:
    """The end of one call's time budget: ``seconds`` after construction, on ``clock``.

    Attributes:
        seconds: the budget.
        start: the clock reading at construction.
        last_error: the last failure seen during the call (the client records it), for messages.
        retries: retries granted during the call, over all its requests.
        hit: True once :meth:`expired` was called (the call ran out of time).
    """

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self._clock = clock
        self.start = clock()
        self.last_error = ""
        self.retries = 0
        self.hit = False

    def left(self) -> float:
        """Seconds until the deadline (<= 0 once it passed)."""
        return self.start + self.seconds - self._clock()

    def expired(self, last_error: str = "") -> CallTimeoutError:
        """The error that ends the call: ``last_error``, else the last failure recorded."""
        self.hit = True
        return CallTimeoutError(
            self.seconds, self._clock() - self.start, self.retries, last_error or self.last_error or "none"
        )


def describe(error: BaseException, limit: int = 300) -> str:
    """``"TypeName: message"`` of an exception, cut to ``limit`` characters."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
