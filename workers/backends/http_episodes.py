"""Which server episode each slot of an HTTP backend has, and making new ones when needed.

:class:`EpisodeTable` keeps, per slot, the server episode id and the step counter of its last
answer (the value a retried step is checked against), plus the server session the episodes were
created in. Slots without an episode get new ones in vectorized groups of at most 64
(``/vectorized/episodes/create``), after a ``/session/create`` when there is no session.
Creation is retried blindly: an attempt whose answer was lost leaves orphan episodes on the
server, which the protocol has no call to close (the server's TTL collects them).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from functools import partial

from pool_env.envs.http import HttpEnvSpec
from pool_env.errors import HttpStatusError, RetriesExhaustedError, SlotFailure, StepFate
from workers.backends.http_client import HttpClient, NotFoundError
from workers.backends.http_payload import parse_create, parse_session

__all__ = ["GROUP_CREATE", "MAX_GROUP_SIZE", "SESSION_CREATE", "EpisodeTable"]

log = logging.getLogger(__name__)

MAX_GROUP_SIZE = 64
"""Most episodes created by one ``/vectorized/episodes/create`` request."""

SESSION_CREATE = "/api/v1/session/create"
GROUP_CREATE = "/api/v1/vectorized/episodes/create"


class EpisodeTable:
    """Episode id and last seen step counter per slot, and the server session.

    Attributes:
        episode_ids: per slot, the live episode's id, or None (make one at the next reset).
        last_step: per slot, the ``step`` counter (flights) of the episode's last answer, or None
            when unknown (not reset yet, or the server did not send it).
        session_id: the server session new episodes are created in, or None.
    """

    episode_ids: list[str | None]
    last_step: list[int | None]
    session_id: str | None

    def __init__(self, spec: HttpEnvSpec, num_slots: int, client: HttpClient, counters: Counter[str]) -> None:
        self._spec = spec
        self._client = client
        self._counters = counters
        self.episode_ids = [None] * num_slots
        self.last_step = [None] * num_slots
        self.session_id = None

    def drop(self, slot: int) -> None:
        """Forget the slot's episode: its next reset makes a new one."""
        self.episode_ids[slot] = None
        self.last_step[slot] = None

    def forget_session(self) -> None:
        """Forget the server session (lost or suspect): the next creation makes a new one."""
        self.session_id = None

    def ensure(self, slots: Sequence[int], positions: Sequence[int]) -> dict[int, SlotFailure]:
        """Give every slot of ``slots`` without an episode a new one.

        Args:
            slots: slot ids.
            positions: the caller's index of each slot, used as the key of the result.

        Returns:
            ``{position: failure}`` for the slots that could not get an episode (retries spent,
            or the call's deadline passed; nothing was applied to them).

        Raises:
            HttpStatusError: a 4xx other than 404, or a 404 even with a brand-new session.
        """
        missing = [(slot, i) for slot, i in zip(slots, positions, strict=True) if self.episode_ids[slot] is None]
        errors: dict[int, SlotFailure] = {}
        for start in range(0, len(missing), MAX_GROUP_SIZE):
            group = missing[start : start + MAX_GROUP_SIZE]
            try:
                ids = self._create_group(len(group))
            except RetriesExhaustedError as exc:
                self.forget_session()
                failure = SlotFailure(exc.kind, StepFate.NOT_APPLIED, f"could not create an episode: {exc}")
                errors.update((i, failure) for _, i in group)
                continue
            for (slot, _), episode_id in zip(group, ids, strict=True):
                self.episode_ids[slot] = episode_id
                self.last_step[slot] = None
        return errors

    def _create_group(self, num_envs: int) -> list[str]:
        """Create ``num_envs`` episodes, first the server session if there is none.

        Raises:
            RetriesExhaustedError: the retry budget ran out (or the call's deadline passed:
                :class:`~pool_env.errors.CallTimeoutError`).
            HttpStatusError: a 4xx, or a 404 even for a brand-new session.
        """
        spec = self._spec
        body = {
            "env_config": {
                "env_type": spec.env_type,
                "max_steps_per_episode": spec.max_steps_per_episode,
                "auto_reset": True,
                "step_size": spec.step_size,
                "reward_config": {},
            },
            "num_envs": num_envs,
        }
        parse = partial(parse_create, num_envs=num_envs)
        for attempt in range(2):
            if self.session_id is None:
                self.session_id = self._client.call_idempotent("POST", SESSION_CREATE, parse=parse_session)
                log.info("new server session %s", self.session_id)
            try:
                ids = self._client.call_idempotent("POST", GROUP_CREATE, body, session_id=self.session_id, parse=parse)
            except NotFoundError as exc:
                log.warning("server session %s is gone (%s); making a new one", self.session_id, exc.detail)
                self.forget_session()
                if attempt == 1:
                    raise HttpStatusError(404, exc.detail, exc.url) from exc
                continue
            self._counters["episodes_created"] += num_envs
            return ids
        raise AssertionError("unreachable")  # pragma: no cover
