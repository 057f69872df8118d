"""FastAPI app of the reference server: the challenge API under ``/api/v1`` plus ``/control``.

Endpoints are ``async``: state changes run on the event loop without awaiting in between, and the
injected latencies are ``asyncio.sleep`` calls, so many clients are served in parallel.

Every client error is a 4xx with a short ``detail`` (issue 15): bodies are read by
:mod:`pool_env.refserver.bodies` (size limit, strict JSON, list lengths and the quota checked before
models are built), and a request is validated entirely before anything is applied.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp

from pool_env.refserver.accounting import score_metrics
from pool_env.refserver.bodies import list_field, read_json, summarize_errors, validate
from pool_env.refserver.control import add_control_routes
from pool_env.refserver.faults import FaultConfig, FaultInjector
from pool_env.refserver.limits import ServerLimits
from pool_env.refserver.middleware import DROP_HEADER, RefServerMiddleware, RequestStats
from pool_env.refserver.records import MAX_ID_CHARS, MAX_STEP_SIZE, ApiError, EpisodeSettings, StepOutcome, short
from pool_env.refserver.state import ServerState

__all__ = ["LATEST_VERSION", "RefServerContext", "create_app"]

LATEST_VERSION = "0.4"
MAX_SEED = 2**63 - 1
_BIG = 10**9

EpisodeId = Annotated[str, Field(max_length=MAX_ID_CHARS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EnvConfig(_Lenient):
    """``env_config`` / single create body; ``auto_reset`` and ``reward_config`` are ignored."""

    env_type: Annotated[str, Field(max_length=100)] = "DegradationEnv"
    max_steps_per_episode: Annotated[int, Field(ge=1, le=_BIG)] = 1000
    step_size: Annotated[int, Field(ge=1, le=_BIG)] = 10


class GroupCreate(_Lenient):
    """Body of ``POST /vectorized/episodes/create``."""

    env_config: EnvConfig = EnvConfig()
    num_envs: int = 1


class ResetRequest(_Lenient):
    """Body of ``POST /episode/reset``."""

    episode_id: EpisodeId
    seed: Seed | None = None


class StepRequest(_Lenient):
    """Body of ``POST /episode/step`` and one entry of ``vectorized_step``."""

    episode_id: EpisodeId
    action: Annotated[int, Field(ge=0, le=2)]
    step_size: Annotated[int | None, Field(ge=1, le=_BIG)] = None
    return_all_states: bool = False


class VectorizedReset(_Lenient):
    """Body of ``POST /episode/vectorized_reset``."""

    episode_ids: list[EpisodeId]
    seeds: list[Seed | None] | None = None


class VectorizedStep(_Lenient):
    """Body of ``POST /episode/vectorized_step``."""

    episode_actions: list[StepRequest]


class RefServerContext:
    """Everything an endpoint needs: the state, the fault injector and the request counters."""

    faults: FaultInjector
    state: ServerState
    stats: RequestStats
    limits: ServerLimits

    def __init__(self, faults: FaultConfig, limits: ServerLimits | None = None) -> None:
        self.limits = limits or ServerLimits()
        self.faults = FaultInjector(faults, self.limits.num_envs_limit)
        self.state = ServerState(
            quota=faults.max_steps_quota,
            idle_timeout_s=self.limits.idle_timeout_s,
            max_live_episodes=self.limits.max_live_episodes,
        )
        self.stats = RequestStats()

    async def body(self, request: Request, list_key: str | None = None) -> Any:
        """The request's JSON body (see :mod:`pool_env.refserver.bodies`); a list at ``list_key`` is
        capped at ``max_num_envs`` entries. Raises ApiError 400/413/422."""
        data = await read_json(request, self.limits.max_body_bytes)
        if list_key is not None:
            list_field(data, list_key, self.faults.config.max_num_envs)
        return data

    async def before(self, path: str) -> str | None:
        """Decide the request fault; answer 500/503 right away (after the latency), nothing applied."""
        kind = self.faults.request_fault(path)
        if kind in ("500", "503"):
            await self._sleep(self.faults.delay_s(0))
            name = "Internal Server Error" if kind == "500" else "Service Unavailable"
            raise ApiError(int(kind), f"{name} (injected fault)")
        return kind

    async def respond(
        self, content: dict[str, Any], kind: str | None, entries: int, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        """Sleep the latency (and a hang), then answer ``content`` (with ``headers``) or request a drop."""
        await self._sleep(self.faults.delay_s(entries))
        if kind == "hang":
            await self._sleep(self.faults.config.hang_s)
        headers = dict(headers or {})
        if kind == "drop":
            headers[DROP_HEADER.decode()] = "1"
        return JSONResponse(content, headers=headers)

    @staticmethod
    async def _sleep(seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    def settings(self, config: EnvConfig) -> EpisodeSettings:
        """Validate a create body. Raises ApiError 400 for another env type."""
        if config.env_type != "DegradationEnv":
            raise ApiError(400, f"unsupported env_type {short(repr(config.env_type))}")
        return EpisodeSettings(min(config.step_size, MAX_STEP_SIZE), config.max_steps_per_episode)


async def require_token(user_token: Annotated[str | None, Header()] = None) -> str:
    """The ``User-Token`` header; any non-empty value is accepted. Raises ApiError 401."""
    if not user_token:
        raise ApiError(401, "User-Token header is required")
    return user_token


Token = Annotated[str, Depends(require_token)]
SessionHeader = Annotated[str | None, Header()]


class _RefServerApp(FastAPI):
    """FastAPI with :class:`RefServerMiddleware` *outside* Starlette's error middleware, so that it
    receives the server's own ``send`` (needed to abort the connection on an injected drop)."""

    def build_middleware_stack(self) -> ASGIApp:
        """Wrap the usual stack in the counting/dropping middleware."""
        ctx: RefServerContext = self.state.refserver
        return RefServerMiddleware(super().build_middleware_stack(), ctx.stats, ctx.limits.max_body_bytes)


def create_app(faults: FaultConfig | None = None, limits: ServerLimits | None = None) -> FastAPI:
    """Build the reference server app with the given fault switches and start-up limits.

    The app's ``state.refserver`` is the :class:`RefServerContext` (state, faults, counters).

    Raises:
        ValueError: If ``faults.max_num_envs`` is above ``limits.num_envs_limit``.
    """
    app = _RefServerApp(title="pool_env reference server", version=LATEST_VERSION)
    ctx = RefServerContext(faults or FaultConfig(), limits)
    app.state.refserver = ctx

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": short(exc.detail, 500)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": summarize_errors(list(exc.errors()))}, status_code=422)

    @app.get("/api/v1/version")
    async def version(_token: Token) -> dict[str, str]:
        return {"latest_version": LATEST_VERSION}

    @app.post("/api/v1/session/create")
    async def create_session(token: Token) -> dict[str, str]:
        return {"session_id": ctx.state.create_session(token)}

    @app.post("/api/v1/episode/create")
    async def create_episode(request: Request, token: Token, session_id: SessionHeader = None) -> JSONResponse:
        data = await ctx.body(request)
        settings = ctx.settings(EnvConfig() if data is None else validate(EnvConfig, data))
        ctx.state.check_session(session_id)
        ctx.state.check_capacity(token, 1)
        kind = await ctx.before(request.url.path)
        _, (episode,) = ctx.state.create_episodes(token, session_id, settings, 1, group=False)
        content = {"episode_id": episode.episode_id, "initial_observation": episode.env.last_observation}
        return await ctx.respond(content, kind, 1)

    @app.post("/api/v1/vectorized/episodes/create")
    async def create_group(request: Request, token: Token, session_id: SessionHeader = None) -> JSONResponse:
        data = await ctx.body(request)
        body = GroupCreate() if data is None else validate(GroupCreate, data)
        settings = ctx.settings(body.env_config)
        limit = ctx.faults.config.max_num_envs
        if not 1 <= body.num_envs <= limit:
            raise ApiError(422, f"num_envs must be between 1 and {limit}, got {short(body.num_envs, 30)}")
        ctx.state.check_session(session_id)
        ctx.state.check_capacity(token, body.num_envs)
        kind = await ctx.before(request.url.path)
        group_id, episodes = ctx.state.create_episodes(token, session_id, settings, body.num_envs, group=True)
        content = {"episode_ids": [e.episode_id for e in episodes], "vectorized_group_id": group_id}
        return await ctx.respond(content, kind, body.num_envs)

    @app.post("/api/v1/episode/reset")
    async def reset(request: Request, token: Token) -> JSONResponse:
        body = validate(ResetRequest, await ctx.body(request))
        kind = await ctx.before(request.url.path)
        episode, _ = ctx.state.reset(token, body.episode_id, body.seed)
        content = {"observation": episode.env.last_observation, "new_episode_id": episode.episode_id}
        return await ctx.respond(content, kind, 1)

    @app.post("/api/v1/episode/vectorized_reset")
    async def vectorized_reset(request: Request, token: Token) -> JSONResponse:
        body = validate(VectorizedReset, await ctx.body(request, "episode_ids"))
        seeds = body.seeds if body.seeds is not None else [None] * len(body.episode_ids)
        if len(seeds) != len(body.episode_ids):
            raise ApiError(422, f"got {len(seeds)} seeds for {len(body.episode_ids)} episode_ids")
        kind = await ctx.before(request.url.path)
        observations: list[list[float]] = []
        infos: list[dict[str, Any]] = []
        new_ids: list[str | None] = []
        for episode_id, seed in zip(body.episode_ids, seeds, strict=True):
            try:
                episode, is_new = ctx.state.reset(token, episode_id, seed)
            except ApiError as exc:
                observations.append([])
                infos.append(
                    {
                        "episode_id": episode_id,
                        "step": 0,
                        "terminated": True,
                        "truncated": False,
                        "error": exc.detail,
                    }
                )
                new_ids.append(None)
                continue
            observations.append(episode.env.last_observation)
            infos.append({"step": 0, "episode_id": episode.episode_id, "terminated": False, "truncated": False})
            new_ids.append(episode.episode_id if is_new else None)
        content = {"observations": observations, "infos": infos, "new_episode_ids": new_ids}
        return await ctx.respond(content, kind, len(body.episode_ids))

    @app.post("/api/v1/episode/step")
    async def step(request: Request, token: Token) -> JSONResponse:
        body = validate(StepRequest, await ctx.body(request))
        path = request.url.path
        kind = await ctx.before(path)
        episode = ctx.state.resolve(body.episode_id)
        ctx.state.check_quota(token, 1)
        step_size = body.step_size or episode.settings.step_size
        out = ctx.state.step(
            token,
            body.episode_id,
            body.action,
            step_size,
            body.return_all_states,
            ctx.faults.episode_error(path),
        )
        info: dict[str, Any] = {"info": out.info}
        if out.reason is not None:
            info["reason"] = out.reason
        if out.error is not None:
            info["error"] = out.error
        content = {
            "observation": out.observation,
            "reward": out.reward,
            "terminated": out.terminated,
            "truncated": out.truncated,
            "step": out.step,
            "info": info,
        }
        return await ctx.respond(content, kind, 1, ctx.state.quota_headers(token))

    @app.post("/api/v1/episode/vectorized_step")
    async def vectorized_step(request: Request, token: Token) -> JSONResponse:
        data = await ctx.body(request, "episode_actions")
        ctx.state.check_quota_left(token, list_field(data, "episode_actions", ctx.faults.config.max_num_envs))
        body = validate(VectorizedStep, data)
        path = request.url.path
        entries = body.episode_actions
        kind = await ctx.before(path)
        ctx.state.check_quota(token, len(entries))
        outcomes: list[StepOutcome] = []
        for entry in entries:
            try:
                episode = ctx.state.resolve(entry.episode_id)
                step_size = entry.step_size or episode.settings.step_size
                outcomes.append(
                    ctx.state.step(
                        token,
                        entry.episode_id,
                        entry.action,
                        step_size,
                        entry.return_all_states,
                        ctx.faults.episode_error(path),
                    )
                )
            except ApiError as exc:
                info = {
                    "episode_id": entry.episode_id,
                    "step": 0,
                    "terminated": True,
                    "truncated": False,
                    "error": exc.detail,
                }
                outcomes.append(StepOutcome([], 0.0, True, False, 0, info, "error", exc.detail))
        content = {
            "observations": [o.observation for o in outcomes],
            "rewards": [o.reward for o in outcomes],
            "terminateds": [o.terminated for o in outcomes],
            "truncateds": [o.truncated for o in outcomes],
            "infos": [o.info for o in outcomes],
        }
        return await ctx.respond(content, kind, len(entries), ctx.state.quota_headers(token))

    @app.get("/api/v1/episode/{episode_id}")
    async def get_episode(request: Request, _token: Token, episode_id: str) -> JSONResponse:
        kind = await ctx.before(request.url.path)
        return await ctx.respond(ctx.state.episode_info(episode_id), kind, 1)

    @app.get("/api/v1/episode/{episode_id}/state/latest")
    async def latest_state(request: Request, _token: Token, episode_id: str) -> JSONResponse:
        kind = await ctx.before(request.url.path)
        return await ctx.respond(ctx.state.latest_state(episode_id), kind, 1)

    @app.get("/api/v1/user/{user_token}/score")
    async def score(user_token: str, limit: Annotated[int, Query(ge=0, le=_BIG)] = 100) -> dict[str, Any]:
        return score_metrics(ctx.state, user_token, limit)

    add_control_routes(app, ctx)
    return app
