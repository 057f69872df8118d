"""``gymnasium.make_vec`` gives a pool: ids with a ``vector_entry_point`` that builds a :class:`PoolVectorEnv`.

gymnasium ≥ 1.0 loads no plugins, so import this module once (``gym.register_envs`` keeps the
import from looking unused, as for ``ale_py``)::

    import gymnasium as gym
    import pool_env.integrations.make_vec as pool_ids

    gym.register_envs(pool_ids)
    envs = gym.make_vec("pool_env/Pool-v0", num_envs=16, env_id="CartPole-v1", num_workers=2)
    envs = gym.make_vec("pool_env/DegradationEnv-v0", num_envs=16, server_url=url, user_token=token)
    pool_ids.register("CartPole-v1")                     # then: gym.make_vec("pool_env/CartPole-v1", 16)

Keyword arguments of ``make_vec`` that :class:`PoolVectorEnv` takes (``num_workers``, ``options``,
``autoreset_mode``, ``batch_size``, ``log_level``, ``check_action_bounds``) go to the pool; the
rest go to the env (``gymnasium.make`` in the workers, or :class:`HttpEnvSpec`).

Registered ids: ``pool_env/Pool-v0`` (any gymnasium id or import string as ``env_id=``),
``pool_env/DegradationEnv-v0`` (the challenge server over HTTP), and whatever :func:`register` adds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym

from pool_env.envs import GymEnvSpec, HttpEnvSpec
from pool_env.errors import SpecError
from pool_env.vector_env import PoolVectorEnv

__all__ = ["POOL_ARGUMENTS", "make_degradation_pool", "make_pool", "register"]

POOL_ARGUMENTS = ("num_workers", "options", "autoreset_mode", "batch_size", "log_level", "check_action_bounds")
"""``make_vec`` keyword arguments that configure the pool rather than the env."""

_HTTP_FIELDS = frozenset(f.name for f in dataclasses.fields(HttpEnvSpec))


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pool = {key: kwargs.pop(key) for key in POOL_ARGUMENTS if key in kwargs}
    return pool, kwargs


def make_pool(num_envs: int = 1, env_id: str | None = None, **kwargs: Any) -> PoolVectorEnv:
    """The vector entry point of ``pool_env/Pool-v0``: a pool of ``env_id`` envs.

    Args:
        num_envs: slots (``make_vec``'s ``num_envs``).
        env_id: a gymnasium id, ``"module:EnvId"`` or an import string (:class:`GymEnvSpec`).
        **kwargs: pool arguments (:data:`POOL_ARGUMENTS`), the rest for ``gymnasium.make``.

    Raises:
        SpecError: no ``env_id``, or bad pool arguments.
    """
    if env_id is None:
        raise SpecError(
            "pool_env/Pool-v0 needs env_id=: gym.make_vec('pool_env/Pool-v0', num_envs=8, env_id='CartPole-v1')"
        )
    pool, env_kwargs = _split(kwargs)
    return PoolVectorEnv(GymEnvSpec(env_id, **env_kwargs), num_envs, **pool)


def make_degradation_pool(num_envs: int = 1, **kwargs: Any) -> PoolVectorEnv:
    """The vector entry point of ``pool_env/DegradationEnv-v0``: DegradationEnv episodes over HTTP.

    Args:
        num_envs: slots.
        **kwargs: pool arguments (:data:`POOL_ARGUMENTS`) and :class:`HttpEnvSpec` fields
            (``server_url`` and ``user_token`` are required).

    Raises:
        SpecError: a missing or unknown field (named), or bad pool arguments.
    """
    pool, http = _split(kwargs)
    http.pop("max_episode_steps", None)  # make_vec adds the registered limit; the server has its own
    unknown = sorted(set(http) - _HTTP_FIELDS)
    if unknown:
        raise SpecError(
            f"pool_env/DegradationEnv-v0: unknown argument {unknown[0]!r}; HttpEnvSpec takes {sorted(_HTTP_FIELDS)}"
        )
    missing = [name for name in ("server_url", "user_token") if name not in http]
    if missing:
        raise SpecError(f"pool_env/DegradationEnv-v0 needs {missing[0]}= (and server_url=/user_token= both)")
    return PoolVectorEnv(HttpEnvSpec(**http), num_envs, **pool)


def register(env_id: str, pool_id: str | None = None, **defaults: Any) -> str:
    """Register ``pool_env/<env_id>`` (or ``pool_id``) so that ``gym.make_vec(pool_id, n)`` builds a pool.

    Args:
        env_id: what each slot runs (as :class:`GymEnvSpec`).
        pool_id: the id to register; default ``"pool_env/" + env_id`` without a namespace of its own.
        **defaults: default keyword arguments (pool or env), overridable in ``make_vec``.

    Returns:
        The registered id.
    """
    name = pool_id or f"pool_env/{env_id.rsplit('/', 1)[-1].rsplit(':', 1)[-1]}"
    kwargs = {"env_id": env_id, **defaults}
    known = gym.registry.get(name)
    if known is None or known.vector_entry_point is not make_pool or known.kwargs != kwargs:
        gym.register(name, vector_entry_point=make_pool, kwargs=kwargs)  # gymnasium warns on a change
    return name


if "pool_env/Pool-v0" not in gym.registry:
    gym.register("pool_env/Pool-v0", vector_entry_point=make_pool)
    gym.register("pool_env/DegradationEnv-v0", vector_entry_point=make_degradation_pool)
