"""The ideal remote client of issue 13: W concurrent vectorized requests from one asyncio loop.

What a perfect client could reach on the same server with the same split as the pool: the
``num_envs`` episodes in ``W`` groups (:func:`pool_env.commands.split_slots`, the pool's own
split), one ``httpx.AsyncClient`` with a keep-alive connection per group, and per step every
group's ``/episode/vectorized_step`` in flight at once (``asyncio.gather``); a group whose episodes
ended resets them with one ``/episode/vectorized_reset`` before the step returns, as a pool worker
does (the server never resets by itself). No processing beyond what the server needs: bodies are
built from precomputed per-episode parts, replies are parsed by ``json`` and only the flags are
read (no observation array is built). No retries: the benchmark's server injects no faults.

The asyncio client pattern follows httpx's own documentation (``AsyncClient`` with ``Limits``
sized to the concurrency); the pool is judged against it in ``pool-env bench`` workload (b).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pool_env.commands import split_slots

__all__ = ["IdealClient"]

API = "/api/v1"
MAX_GROUP = 64  # episodes per create request (the server's limit)


class IdealClient:
    """``num_envs`` DegradationEnv episodes in ``num_groups`` groups, stepped concurrently.

    Args:
        server_url: base URL of the (reference) server.
        user_token: sent as ``User-Token``.
        num_envs: episodes.
        num_groups: concurrent requests per step (the pool's ``num_workers``).
        step_size: flights per decision step.
        timeout: seconds per request.

    Raises:
        RuntimeError: httpx is not installed (``pip install 'pool-env[bench]'``).
    """

    num_envs: int
    _groups: list[list[int]]
    _episode_ids: list[str]
    _loop: asyncio.AbstractEventLoop
    _client: Any

    def __init__(
        self,
        server_url: str,
        user_token: str,
        num_envs: int,
        num_groups: int,
        step_size: int = 10,
        timeout: float = 60.0,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - the [bench] and [dev] extras carry it
            raise RuntimeError("the ideal client needs httpx: pip install 'pool-env[bench]'") from exc
        self.num_envs = num_envs
        self._step_size = step_size
        self._groups = [g for g in split_slots(num_envs, num_groups) if g]
        self._episode_ids = []
        self._loop = asyncio.new_event_loop()
        limits = httpx.Limits(max_connections=len(self._groups), max_keepalive_connections=len(self._groups))
        self._client = httpx.AsyncClient(
            base_url=server_url.rstrip("/") + API,
            headers={"User-Token": user_token, "Content-Type": "application/json"},
            limits=limits,
            timeout=timeout,
        )

    def _run(self, coroutine: Any) -> Any:
        return self._loop.run_until_complete(coroutine)

    async def _post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        response = await self._client.post(path, json=body, headers=headers)
        response.raise_for_status()
        return response.json()

    def reset(self, seed: int | None = None) -> None:
        """Create the episodes (first call) and reset them all (episode ``i`` with ``seed + i``)."""
        self._run(self._reset_all(seed))

    async def _reset_all(self, seed: int | None) -> None:
        if not self._episode_ids:
            session_id = (await self._post("/session/create"))["session_id"]
            config = {"env_type": "DegradationEnv", "step_size": self._step_size, "max_steps_per_episode": 1000}
            while len(self._episode_ids) < self.num_envs:
                count = min(MAX_GROUP, self.num_envs - len(self._episode_ids))
                reply = await self._post(
                    "/vectorized/episodes/create",
                    {"env_config": config, "num_envs": count},
                    headers={"Session-ID": session_id},
                )
                self._episode_ids.extend(reply["episode_ids"])
        await asyncio.gather(*(self._reset(group, seed) for group in self._groups))

    async def _reset(self, indices: list[int], seed: int | None) -> None:
        seeds = None if seed is None else [seed + i for i in indices]
        reply = await self._post(
            "/episode/vectorized_reset", {"episode_ids": [self._episode_ids[i] for i in indices], "seeds": seeds}
        )
        for i, new_id in zip(indices, reply["new_episode_ids"], strict=True):
            if new_id:
                self._episode_ids[i] = new_id

    def step(self, action: int = 0) -> None:
        """One step of every episode with ``action``: W requests at once, plus resets of ended ones."""
        self._run(self._step_all(action))

    async def _step_all(self, action: int) -> None:
        await asyncio.gather(*(self._step(group, action) for group in self._groups))

    async def _step(self, indices: list[int], action: int) -> None:
        ids = self._episode_ids
        size = self._step_size
        body = {
            "episode_actions": [
                {"episode_id": ids[i], "action": action, "step_size": size, "return_all_states": True} for i in indices
            ]
        }
        reply = await self._post("/episode/vectorized_step", body)
        ended = [i for i, t, u in zip(indices, reply["terminateds"], reply["truncateds"], strict=True) if t or u]
        if ended:
            await self._reset(ended, None)

    def close(self) -> None:
        """Close the connections and the event loop. Idempotent."""
        if self._loop.is_closed():
            return
        self._run(self._client.aclose())
        self._loop.close()
