"""DegradationEnv episodes on a challenge-compatible HTTP server, one vectorized request per call.

Slot ``i`` of the backend is one server episode. Episodes live in vectorized groups created on
demand (``/vectorized/episodes/create``, at most 64 per request) inside one server session; both
are created lazily on the first reset and again whenever they were lost. ``reset`` sends one
``/episode/vectorized_reset`` and ``step`` one ``/episode/vectorized_step`` for all their slots.

Failure handling (every request may be retried ``spec.max_retries`` times, and every ``reset`` or
``step`` call as a whole has ``spec.call_timeout`` seconds, see below):

* transport error, 5xx or malformed body → drop the keep-alive session, back off, retry. Session
  and episode creation and resets are retried blindly (a retried create may leave an orphan
  episode on the server, which the protocol cannot close). A step is retried only for the
  episodes whose step counter (``GET .../state/latest``) has not moved since the last answer we
  saw; a moved counter means the step was applied and its answer lost, so that slot reports an
  error instead of being stepped twice.
* retries spent → the remaining slots report an error; their episodes are dropped and the next
  reset makes new ones (in a new server session), so the backend recovers once the server does.
  A step that failed for the last time is still checked, so its error says "not applied" or
  "response was lost"; only when the state requests fail too does it say "may have been applied".
* 404 for an episode → it is gone (server restarted): that slot reports an error and gets a new
  episode at its next reset.
* per-entry error payload, missing/NaN observation, non-numeric reward → that slot reports an
  error and gets a new episode at its next reset.
* 429 → :class:`pool_env.errors.QuotaExceededError`: the token's step quota is spent. Never
  retried: one request per call, the worker stays up (no retry storm, no restart), resets still
  work, and stepping works again if the server's quota is raised. ``server_steps_sent`` counts
  the step entries sent (retries included: an upper bound of what the server counts).
* any other 4xx → :class:`pool_env.errors.HttpStatusError` (a configuration error, never retried).
* the call's deadline (``spec.effective_call_timeout()`` after the call began) → no request or
  back-off starts past it, and each request's timeout is cut to the time left, so a call ends
  within ``call_timeout + request_timeout``. The slots still unresolved report an error saying
  "gave up after X s (call_timeout=...)", like spent retries: a step never sent, or known not
  applied, says "not applied"; a step whose fate the deadline left unknown says "may have been
  applied". Nothing is ever sent twice to find out.

Resets of episodes that ended can be sent ahead (:meth:`HttpBackend.reset_early`, on a second
keep-alive connection, :mod:`workers.backends.http_side`) and collected later
(:meth:`HttpBackend.finish_reset`): the worker sends them right after answering a step, so the
next step's request flies while the reset's answer comes back. Collecting is :meth:`reset`
exactly, except that its first attempt's answer is the one sent ahead; a failed or late one (more
than ``request_timeout``) is retried on the main connection, blindly, as every reset is.

Observations are float32: the last row ``(9,)`` with ``observation="last"``, or the chunk padded
with zeros to ``(step_size, 9)`` with ``observation="chunk"`` (real row count in ``info["rows"]``).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import requests

from pool_env import errors
from pool_env.envs.degradation import OBS_FIELDS
from pool_env.envs.http import HttpEnvSpec
from pool_env.errors import ErrorKind, HttpStatusError, RetriesExhaustedError, SlotFailure, SpecError, StepFate
from workers.backends.base import Outcome
from workers.backends.http_client import COUNTER_NAMES, GAUGE_NAMES, HttpClient, NotFoundError, RetryableError
from workers.backends.http_episodes import EpisodeTable
from workers.backends.http_payload import (
    parse_reset,
    parse_rows,
    parse_state,
    parse_step,
    step_entry,
)
from workers.backends.http_side import SideRequest
from workers.backends.retry import RandomSource, RetryPolicy

__all__ = ["BACKEND_COUNTER_NAMES", "EarlyReset", "HttpBackend"]

log = logging.getLogger(__name__)

BACKEND_COUNTER_NAMES = (
    *COUNTER_NAMES,
    "episode_errors",
    "lost_responses",
    "episodes_created",
    "server_steps_sent",
    *GAUGE_NAMES,
)
"""Every key of :meth:`HttpBackend.counters`."""

VECTORIZED_RESET = "/api/v1/episode/vectorized_reset"
VECTORIZED_STEP = "/api/v1/episode/vectorized_step"


@dataclass(frozen=True)
class EarlyReset:
    """A reset sent ahead by :meth:`HttpBackend.reset_early`: its slots, the server seeds sent, the request."""

    slots: list[int]
    seeds: list[int | None]
    request: SideRequest


class HttpBackend:
    """The episodes of one worker's slots on one HTTP server (see the module docstring).

    Args:
        spec: server, token, step size, observation mode, retry settings.
        num_slots: slots ``0..num_slots-1``.
        session_factory: makes the ``requests.Session`` (tests mount a fake transport on it).
        sleep: sleeps a retry delay (tests pass a recorder).
        rng: draws the retry jitter (default: a fresh ``random.Random``).
        clock: monotonic seconds for the call deadline (tests pass a fake clock).

    The constructor does no network I/O.
    """

    prefetches_resets = True
    """Reset ended slots right after replying (NEXT_STEP): takes a round trip off the next step."""

    _spec: HttpEnvSpec
    _num_slots: int
    _counters: Counter[str]
    _client: HttpClient
    _episodes: EpisodeTable
    _seed_streams: list[random.Random | None]
    _closed: bool

    def __init__(
        self,
        spec: HttpEnvSpec,
        num_slots: int,
        *,
        session_factory: Callable[[], requests.Session] = requests.Session,
        sleep: Callable[[float], None] = time.sleep,
        rng: RandomSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if num_slots < 1:
            raise SpecError(f"num_slots: must be >= 1, got {num_slots}")
        self._spec = spec
        self._num_slots = num_slots
        self._counters = Counter()
        self._client = HttpClient(
            spec.server_url,
            spec.user_token,
            spec.request_timeout,
            session_factory=session_factory,
            sleep=sleep,
            rng=rng if rng is not None else random.Random(),
            counters=self._counters,
            policy=RetryPolicy(spec.max_retries, spec.retry_backoff),
            clock=clock,
        )
        self._episodes = EpisodeTable(spec, num_slots, self._client, self._counters)
        self._seed_streams = [None] * num_slots
        self._closed = False

    # -- public -----------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Totals since construction, keyed by :data:`BACKEND_COUNTER_NAMES`."""
        return {name: self._counters[name] for name in BACKEND_COUNTER_NAMES}

    @property
    def num_slots(self) -> int:
        """Slots ``0..num_slots-1``."""
        return self._num_slots

    @property
    def episode_ids(self) -> list[str | None]:
        """The server episode id of each slot (None: made at the slot's next reset)."""
        return list(self._episodes.episode_ids)

    def rng_state(self, slot: int) -> dict[str, Any] | None:
        """The slot's seed stream (``random.Random`` state), for recycling (workers/handover.py)."""
        stream = self._seed_streams[slot]
        return None if stream is None else {"seed_stream": stream.getstate()}

    def set_rng_state(self, slot: int, state: dict[str, Any]) -> None:
        """Continue the seed stream :meth:`rng_state` returned in another process."""
        stream = random.Random()
        stream.setstate(state["seed_stream"])
        self._seed_streams[slot] = stream

    def reset(
        self, slots: Sequence[int], seeds: Sequence[int | None], options: dict[str, Any] | None = None
    ) -> list[Outcome]:
        """Start a new episode in each slot with its seed.

        A ``None`` seed continues the slot's seed stream, as a gymnasium env continues its RNG:
        the server gets a seed drawn from a generator seeded by the slot's last explicit seed,
        so seeded runs stay reproducible across autoresets. A slot never seeded sends ``null``
        (fresh server entropy). ``options`` is ignored: the protocol has no reset options.

        Raises:
            HttpStatusError: the server answered a 4xx other than 404.
            ClosedError: the backend is closed.
        """
        self._check_open()
        seeds = [self._next_seed(slot, seed) for slot, seed in zip(slots, seeds, strict=True)]
        with self._client.deadline(self._spec.effective_call_timeout()):
            return self._reset(slots, seeds)

    def reset_early(self, slots: Sequence[int], seeds: Sequence[int | None]) -> EarlyReset | None:
        """Send the reset of ``slots`` now, on a second connection, and return at once;
        :meth:`finish_reset` gives its outcomes later (:mod:`workers.backends.http_side`).

        ``None`` (nothing sent) when some slot has no live episode: :meth:`reset` makes it one.

        Raises:
            ClosedError: the backend is closed.
        """
        self._check_open()
        if not slots or any(self._episodes.episode_ids[slot] is None for slot in slots):
            return None
        seeds = [self._next_seed(slot, seed) for slot, seed in zip(slots, seeds, strict=True)]
        body = {"episode_ids": [self._episodes.episode_ids[slot] for slot in slots], "seeds": seeds}
        return EarlyReset(list(slots), seeds, self._client.send_ahead("POST", VECTORIZED_RESET, body))

    def finish_reset(self, early: EarlyReset) -> list[Outcome]:
        """The outcomes of the reset :meth:`reset_early` sent: :meth:`reset` exactly, except that its
        first attempt's answer is the one sent ahead (a failed one is retried as usual).

        Raises:
            HttpStatusError: the server answered a 4xx other than 404.
            ClosedError: the backend is closed.
        """
        self._check_open()
        collect = partial(self._client.collect, "POST", VECTORIZED_RESET, early.request)
        with self._client.deadline(self._spec.effective_call_timeout()):
            return self._reset(early.slots, early.seeds, first=collect)

    def step(self, slots: Sequence[int], actions: Sequence[Any]) -> list[Outcome]:
        """Apply ``actions[i]`` (0 fly, 1 repair, 2 sell) to ``slots[i]``; never twice.

        Raises:
            QuotaExceededError: the server answered 429 (the token's step quota is spent).
            HttpStatusError: the server answered another 4xx other than 404 (e.g. 422).
            ClosedError: the backend is closed.
        """
        self._check_open()
        with self._client.deadline(self._spec.effective_call_timeout()):
            return self._step(slots, actions)

    def call(self, slot: int, name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """HTTP episodes have no Python env object to call into.

        Raises:
            AttributeError: always, naming the attribute.
        """
        raise AttributeError(f"an HTTP env slot has no attribute {name!r} (call/get_attr need local envs)")

    def set_attr(self, slot: int, name: str, value: Any) -> None:
        """See :meth:`call`.

        Raises:
            AttributeError: always, naming the attribute.
        """
        raise AttributeError(f"an HTTP env slot has no attribute {name!r} (set_attr needs local envs)")

    def close(self) -> None:
        """Close the HTTP session (idempotent); the server's episodes are left to its TTL."""
        self._closed = True
        self._client.close()

    # -- calls ------------------------------------------------------------------------------

    def _reset(
        self, slots: Sequence[int], seeds: Sequence[int | None], first: Callable[[Any], Any] | None = None
    ) -> list[Outcome]:
        """Reset ``slots``; ``first``: the first request's answer, sent ahead (``reset_early``)."""
        outcomes: list[Outcome | None] = [None] * len(slots)
        pending = list(range(len(slots)))
        for attempt in range(2):  # slots whose episode fails to reset get a new episode, once
            final = attempt == 1
            for i, failure in self._episodes.ensure([slots[i] for i in pending], pending).items():
                outcomes[i] = Outcome.failed(failure.kind, failure.fate, failure.message)
            pending = [i for i in pending if outcomes[i] is None]
            if not pending:
                break
            body = {
                "episode_ids": [self._episodes.episode_ids[slots[i]] for i in pending],
                "seeds": [seeds[i] for i in pending],
            }
            ahead, first = first, None  # only the first request was sent ahead
            try:
                reply = self._client.call_idempotent(
                    "POST", VECTORIZED_RESET, body, parse=partial(parse_reset, num_envs=len(pending)), first=ahead
                )
            except RetriesExhaustedError as exc:
                self._fail(slots, pending, outcomes, exc.kind, StepFate.NOT_APPLIED, f"reset failed: {exc}")
                break
            except NotFoundError as exc:  # the server forgot (some of) these episodes: a restart
                log.warning("reset: %s; making new episodes for %d slots", exc, len(pending))
                self._episodes.forget_session()
                if final:
                    self._fail(
                        slots,
                        pending,
                        outcomes,
                        ErrorKind.EPISODE_GONE,
                        StepFate.NOT_APPLIED,
                        f"reset: episode not found: {exc.detail}",
                    )
                for i in pending:
                    self._episodes.drop(slots[i])
                continue
            retry = []
            for j, i in enumerate(pending):
                outcome = self._reset_entry(slots[i], reply, j)  # an error drops the episode
                if outcome.error is None or final:
                    outcomes[i] = outcome
                else:
                    retry.append(i)
            pending = retry
        return _complete(outcomes)

    def _step(self, slots: Sequence[int], actions: Sequence[Any]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(slots)
        pending = []
        for i, slot in enumerate(slots):
            if self._episodes.episode_ids[slot] is None:
                outcomes[i] = Outcome.failed(
                    ErrorKind.EPISODE_GONE, StepFate.NOT_APPLIED, "no live episode in this slot; reset it first"
                )
            else:
                pending.append(i)
        policy = self._client.policy
        gave_up: RetriesExhaustedError | None = None  # the step request failed for the last time
        must_check, after_404, stuck_404 = False, False, False
        verified: set[int] = set()  # positions whose step is known not applied since the last send
        while pending:
            if must_check:  # which steps of the failed request did the server apply?
                before = len(pending)
                try:
                    pending = self._unapplied(slots, pending, outcomes, verified)
                except RetriesExhaustedError as exc:
                    unknown = [i for i in pending if outcomes[i] is None and i not in verified]
                    self._fail(
                        slots,
                        unknown,
                        outcomes,
                        exc.kind,
                        StepFate.UNKNOWN,
                        f"step failed, may have been applied: {exc}",
                    )
                    last = gave_up or exc
                    self._fail(
                        slots,
                        list(verified),
                        outcomes,
                        last.kind,
                        StepFate.NOT_APPLIED,
                        f"step failed, not applied: {last}",
                    )
                    break
                # A 404 for the step although no episode is gone: the server lacks the endpoint.
                stuck_404, after_404, must_check = after_404 and len(pending) == before, False, False
                if gave_up is not None:
                    self._fail(
                        slots,
                        pending,
                        outcomes,
                        gave_up.kind,
                        StepFate.NOT_APPLIED,
                        f"step failed, not applied: {gave_up}",
                    )
                    break
                continue
            verified.clear()
            try:
                reply = self._send_step(slots, actions, pending)
            except RetriesExhaustedError as exc:  # the deadline passed: nothing was sent
                self._fail(slots, pending, outcomes, exc.kind, StepFate.NOT_APPLIED, f"step failed, not applied: {exc}")
                break
            except RetryableError as exc:
                must_check = True
                try:
                    policy = self._client.backoff(policy, exc)
                except RetriesExhaustedError as exhausted:
                    gave_up = exhausted  # one last check tells applied steps from the others
                continue
            except NotFoundError as exc:  # some episode is gone: find which by their states
                if stuck_404:
                    raise HttpStatusError(404, exc.detail, exc.url) from exc
                after_404, must_check = True, True
                continue
            for j, i in enumerate(pending):
                outcomes[i] = self._step_entry(slots[i], reply, j)
            break
        return _complete(outcomes)

    # -- episodes ---------------------------------------------------------------------------

    def _next_seed(self, slot: int, seed: int | None) -> int | None:
        if seed is not None:
            self._seed_streams[slot] = random.Random(int(seed))
            return int(seed)
        stream = self._seed_streams[slot]
        return None if stream is None else stream.randrange(2**31)

    def _check_open(self) -> None:
        if self._closed:
            raise errors.ClosedError("the HTTP backend is closed")  # a misuse: may load gymnasium

    def _fail(
        self,
        slots: Sequence[int],
        pending: list[int],
        outcomes: list[Outcome | None],
        kind: ErrorKind,
        fate: StepFate,
        error: str,
    ) -> None:
        """Give up on ``pending``: each reports ``error`` and gets a new episode at its next reset."""
        self._episodes.forget_session()
        for i in pending:
            self._episodes.drop(slots[i])
            outcomes[i] = Outcome.failed(kind, fate, error)

    def _send_step(self, slots: Sequence[int], actions: Sequence[Any], pending: list[int]) -> dict[str, list[Any]]:
        step_size = self._spec.step_size
        self._counters["server_steps_sent"] += len(pending)
        body = {
            "episode_actions": [
                {
                    "episode_id": self._episodes.episode_ids[slots[i]],
                    "action": int(actions[i]),
                    "step_size": step_size,
                    "return_all_states": True,
                }
                for i in pending
            ]
        }
        return self._client.request("POST", VECTORIZED_STEP, body, parse=lambda p: parse_step(p, len(pending)))

    def _unapplied(
        self, slots: Sequence[int], pending: list[int], outcomes: list[Outcome | None], verified: set[int]
    ) -> list[int]:
        """After a failed step request: settle the slots whose step was applied or whose episode is gone.

        Returns the positions still to step. An interrupted check keeps what it learnt: settled
        positions keep their outcome, positions added to ``verified`` are not asked again.

        Raises:
            RetriesExhaustedError: a state request kept failing.
        """
        for i in pending:
            if outcomes[i] is not None or i in verified:
                continue
            slot = slots[i]
            episode_id = self._episodes.episode_ids[slot]
            try:
                step, ended = self._client.call_idempotent(
                    "GET", f"/api/v1/episode/{episode_id}/state/latest", parse=parse_state
                )
            except NotFoundError as exc:
                self._counters["episode_errors"] += 1
                self._episodes.drop(slot)
                outcomes[i] = Outcome.failed(
                    ErrorKind.EPISODE_GONE, StepFate.NOT_APPLIED, f"episode {episode_id} is gone: {exc.detail}"
                )
                continue
            last = self._episodes.last_step[slot]
            if last is None or step is None:
                outcomes[i] = Outcome.failed(
                    ErrorKind.LOST_RESPONSE,
                    StepFate.UNKNOWN,
                    "the step's response was lost and the server's step counter is unknown",
                )
            elif step == last and ended:
                # Not stepped, yet ended: the server failed the episode while handling the request
                # whose answer was lost (an error entry is not applied). Stepping it again would
                # step an ended episode.
                self._counters["episode_errors"] += 1
                self._episodes.drop(slot)
                outcomes[i] = Outcome.failed(
                    ErrorKind.SERVER_EPISODE_ERROR,
                    StepFate.NOT_APPLIED,
                    f"episode {episode_id} failed on the server while the step's answer was lost; not applied",
                )
            elif step == last:
                verified.add(i)
            else:
                self._counters["lost_responses"] += 1
                log.warning(
                    "episode %s: step applied (counter %d -> %d) but its response was lost",
                    episode_id,
                    last,
                    step,
                )
                outcomes[i] = Outcome.failed(
                    ErrorKind.LOST_RESPONSE,
                    StepFate.APPLIED,
                    f"step applied but its response was lost (step counter {last} -> {step})",
                )
        return [i for i in pending if outcomes[i] is None]

    # -- results ----------------------------------------------------------------------------

    def _entry_error(self, slot: int, failure: SlotFailure) -> Outcome:
        self._counters["episode_errors"] += 1
        log.warning("slot %d, episode %s: %s", slot, self._episodes.episode_ids[slot], failure.message)
        self._episodes.drop(slot)
        return Outcome.failed(failure.kind, failure.fate, failure.message)

    def _reset_entry(self, slot: int, reply: dict[str, list[Any]], j: int) -> Outcome:
        info = reply["infos"][j]
        new_id = reply["new_episode_ids"][j]
        if isinstance(new_id, str) and new_id:
            self._episodes.episode_ids[slot] = new_id
        if info.get("error"):
            error = f"server error on reset: {info['error']}"
            return self._entry_error(slot, SlotFailure(ErrorKind.SERVER_EPISODE_ERROR, StepFate.NOT_APPLIED, error))
        rows = parse_rows(reply["observations"][j], 1)
        if isinstance(rows, str):
            error = f"bad reset observation: {rows}"
            return self._entry_error(slot, SlotFailure(ErrorKind.BAD_RESPONSE, StepFate.NOT_APPLIED, error))
        step = info.get("step", 0)
        self._episodes.last_step[slot] = step if isinstance(step, int) and not isinstance(step, bool) else 0
        obs, extra = self._shape(rows)
        return Outcome(obs=obs, info=extra)

    def _step_entry(self, slot: int, reply: dict[str, list[Any]], j: int) -> Outcome:
        entry = step_entry(reply, j, self._spec.step_size)
        if isinstance(entry, SlotFailure):
            return self._entry_error(slot, entry)
        rows, reward, terminated, truncated, info = entry
        self._episodes.last_step[slot] = info.get("step")
        obs, extra = self._shape(rows)
        info.update(extra)
        return Outcome(obs=obs, reward=reward, terminated=terminated, truncated=truncated, info=info)

    def _shape(self, rows: Any) -> tuple[Any, dict[str, Any]]:
        """The observation in the spec's mode, and the info it needs (``rows`` for chunks)."""
        if self._spec.observation == "last":
            return rows[-1].copy(), {}
        chunk = np.zeros((self._spec.step_size, OBS_FIELDS), dtype=np.float32)
        chunk[: len(rows)] = rows
        return chunk, {"rows": len(rows)}


def _complete(outcomes: list[Outcome | None]) -> list[Outcome]:
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]
