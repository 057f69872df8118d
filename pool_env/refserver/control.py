"""The ``/control`` routes of the reference server: fault switches, counters and step accounting.

They are for the test harness, not for challenge clients: switched off entirely with ``--no-control``
(404) or guarded by ``--control-token`` (403 without the matching ``X-Control-Token`` header). The
fault values they accept are bounded (:class:`~pool_env.refserver.faults.FaultConfig`), and
``max_num_envs`` cannot go above the start-up ``--num-envs-limit``.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, Request

from pool_env.refserver.accounting import episodes_snapshot, tokens_snapshot
from pool_env.refserver.records import ApiError, short

if TYPE_CHECKING:
    from pool_env.refserver.app import RefServerContext

__all__ = ["add_control_routes"]


def add_control_routes(app: FastAPI, ctx: RefServerContext) -> None:
    """``/control/*``: fault switches, counters and per-episode step accounting.

    Off (404) when the server started with ``--no-control``; with ``--control-token`` every call needs
    the ``X-Control-Token`` header (403 otherwise).
    """

    async def control_access(x_control_token: Annotated[str | None, Header()] = None) -> None:
        if not ctx.limits.control:
            raise ApiError(404, "the /control API is disabled on this server (started with --no-control)")
        expected = ctx.limits.control_token
        if expected is not None and not hmac.compare_digest((x_control_token or "").encode(), expected.encode()):
            raise ApiError(403, "the /control API needs the X-Control-Token header given at start (--control-token)")

    guarded = [Depends(control_access)]

    @app.get("/control/faults", dependencies=guarded)
    async def get_faults() -> dict[str, Any]:
        return {**ctx.faults.snapshot(), "limits": ctx.limits.to_dict()}

    @app.post("/control/faults", dependencies=guarded)
    async def set_faults(request: Request) -> dict[str, Any]:
        changes = await ctx.body(request)
        try:
            ctx.faults.update(changes)
        except (TypeError, ValueError) as exc:
            raise ApiError(422, short(exc, 300)) from None
        ctx.state.quota = ctx.faults.config.max_steps_quota
        return {**ctx.faults.snapshot(), "limits": ctx.limits.to_dict()}

    @app.get("/control/stats", dependencies=guarded)
    async def stats() -> dict[str, Any]:
        with ctx.state.lock:
            ctx.state.sweep()
            memory = {
                "live_episodes": len(ctx.state.live),
                "episode_records": len(ctx.state.episodes),
                "episode_ids": len(ctx.state.slots),
                "sessions": len(ctx.state.sessions),
                "evicted_slots": ctx.state.evictions,
            }
        return {
            **ctx.stats.snapshot(),
            **memory,
            "faults_injected": dict(ctx.faults.injected),
            "tokens": tokens_snapshot(ctx.state),
        }

    @app.get("/control/episodes", dependencies=guarded)
    async def episodes() -> dict[str, Any]:
        return episodes_snapshot(ctx.state)
