"""Stable-Baselines3: a pool as SB3's ``VecEnv``, and a ``VecMonitor`` that knows failures.

::

    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from pool_env.sb3 import PoolVecEnv

    venv = make_vec_env("CartPole-v1", n_envs=8, vec_env_cls=PoolVecEnv)   # or PoolVecEnv(spec, num_envs=8)
    PPO("MlpPolicy", venv).learn(10_000)

The pool runs with gymnasium's ``AutoresetMode.SAME_STEP``, the convention SB3's vector envs
follow (``DummyVecEnv.step_wait``: an env that is done is reset within the step and its last
observation goes to ``infos[i]["terminal_observation"]``), so a slot that ends costs no extra
round trip. Values are those of SB3's ``DummyVecEnv`` for the same seeds (tested): float32
rewards, ``TimeLimit.truncated``, ``reset_infos``, ``seed()``/``set_options()`` used once.

A slot cut by an infrastructure failure comes back done, ``TimeLimit.truncated`` true, its last
valid observation as ``terminal_observation`` and the pool's ``error``/``error_kind``/``step_fate``
in its info; :class:`PoolVecMonitor` keeps such episodes out of the episode statistics.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.vec_monitor import VecMonitor

from pool_env.envs import EnvSpec
from pool_env.integrations.infos import unbatch_infos
from pool_env.vector_env import PoolVectorEnv

__all__ = ["PoolVecEnv", "PoolVecMonitor"]

_FINAL_KEYS = ("final_obs", "_final_obs", "final_info", "_final_info")


class PoolVecEnv(VecEnv):
    """A :class:`~pool_env.PoolVectorEnv` behind Stable-Baselines3's ``VecEnv`` interface.

    Args:
        env_fns_or_spec: one callable per env (what ``make_vec_env`` passes, as to ``DummyVecEnv``)
            or an env spec (``GymEnvSpec``, ``HttpEnvSpec``).
        num_envs: the number of envs, for a spec (default 16).
        **pool_kwargs: passed to :class:`~pool_env.PoolVectorEnv` (``num_workers``, ``options``, ...);
            ``autoreset_mode`` is always ``SAME_STEP``.

    Raises:
        SpecError: bad arguments (see :class:`~pool_env.PoolVectorEnv`).
    """

    pool: PoolVectorEnv
    actions: np.ndarray

    def __init__(
        self,
        env_fns_or_spec: Sequence[Callable[[], gym.Env[Any, Any]]] | EnvSpec,
        num_envs: int | None = None,
        **pool_kwargs: Any,
    ) -> None:
        if "autoreset_mode" in pool_kwargs:
            raise TypeError("PoolVecEnv: autoreset_mode is always SAME_STEP (SB3's convention); drop the argument")
        self.pool = PoolVectorEnv(env_fns_or_spec, num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **pool_kwargs)
        self._closed = False
        try:
            super().__init__(self.pool.num_envs, self.pool.single_observation_space, self.pool.single_action_space)
        except BaseException:
            self.pool.close()
            raise

    # -- stepping ------------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Reset every env with the seeds of :meth:`seed` and options of :meth:`set_options` (used once).

        Envs with different options are reset in one call per distinct options dict.
        """
        seeds = list(self._seeds)
        groups: list[tuple[dict[str, Any], list[int]]] = []
        for slot, options in enumerate(self._options):
            for known, slots in groups:
                if known == options:
                    slots.append(slot)
                    break
            else:
                groups.append((options, [slot]))
        if len(groups) == 1:
            options = groups[0][0]
            obs, infos = self.pool.reset(seed=seeds, options=options or None)
            self.reset_infos = unbatch_infos(infos, self.num_envs)
        else:
            for options, slots in groups:
                obs, infos = self.pool.reset_envs(slots, [seeds[s] for s in slots], options or None)
                reset_infos = unbatch_infos(infos, self.num_envs)
                for s in slots:
                    self.reset_infos[s] = reset_infos[s]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Send the actions to the pool (one command per worker)."""
        self.actions = actions
        self.pool.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """The step's ``(obs, rewards, dones, infos)`` as ``DummyVecEnv.step_wait`` returns them."""
        obs, rewards, terminated, truncated, vector_infos = self.pool.step_wait()
        dones = terminated | truncated
        infos = unbatch_infos({k: v for k, v in vector_infos.items() if k not in _FINAL_KEYS}, self.num_envs)
        final_infos = unbatch_infos(vector_infos.get("final_info", {}), self.num_envs)
        final_obs = vector_infos.get("final_obs")
        for i in np.flatnonzero(dones):
            self.reset_infos[i] = infos[i]
            infos[i] = final_infos[i]
            infos[i]["terminal_observation"] = None if final_obs is None else final_obs[i]
        for slot, info in enumerate(infos):
            info["TimeLimit.truncated"] = bool(truncated[slot] and not terminated[slot])
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        """Stop the pool's workers (idempotent)."""
        self._closed = True
        self.pool.close()

    # -- calls into the envs (the pool's call API) ----------------------------------------------

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``env.get_wrapper_attr(attr_name)`` of each chosen env.

        Raises:
            AttributeError: an env has no such attribute.
        """
        if attr_name == "render_mode":  # the pool knows it (HTTP slots have no env object to ask)
            return [self.pool.render_mode for _ in self._get_indices(indices)]
        return self._call(attr_name, indices, getter=True)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` to ``value`` on each chosen env (``env.set_wrapper_attr``)."""
        chosen = list(self._get_indices(indices))
        self.pool.set_slots_attr(chosen, attr_name, [value] * len(chosen))

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call ``method_name(*method_args, **method_kwargs)`` on each chosen env.

        Raises:
            AttributeError: an env has no such method.
        """
        return self._call(method_name, indices, *method_args, **method_kwargs)

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Whether each chosen env is wrapped with ``wrapper_class``.

        The wrapper classes stay in the workers: the check reads each env's wrapper chain from
        ``str(env)`` (gymnasium's ``<Wrapper<...<Env>>>``) and matches class names, so a subclass
        of ``wrapper_class`` with another name does not count (SB3's ``is_wrapped`` would).
        """
        chains = self._call("__str__", indices)
        return [wrapper_class.__name__ in re.findall(r"<(\w+)", str(chain)) for chain in chains]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each env's ``render()`` frame (``rgb_array`` render mode), as ``DummyVecEnv.get_images``."""
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return list(self.pool.render() or [None] * self.num_envs)

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seeds for the next :meth:`reset`: env ``i`` gets ``seed + i`` (SB3's rule)."""
        return super().seed(seed)

    def __enter__(self) -> PoolVecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, name: str, indices: VecEnvIndices, *args: Any, getter: bool = False, **kwargs: Any) -> list[Any]:
        chosen = list(self._get_indices(indices))
        if getter:
            return list(self.pool.call_slots(chosen, name))
        return list(self.pool.call_slots(chosen, name, *args, **kwargs))

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int | np.integer):
            return [int(indices)]
        return [int(i) for i in indices]


class PoolVecMonitor(VecMonitor):
    """SB3's ``VecMonitor`` that keeps episodes cut by an infrastructure failure out of the statistics.

    A done env whose info carries ``error_kind`` (the pool's failure kind: worker died or hung,
    server error, lost response, ...) gets no ``info["episode"]`` and no results-file row; its
    return and length restart at 0 and it counts in :attr:`failed_episode_count`. Episodes that
    ended on their own are recorded exactly as SB3's ``VecMonitor.step_wait`` records them.

    Args:
        venv: the vectorized env (a :class:`PoolVecEnv`, possibly wrapped).
        filename, info_keywords: as SB3's ``VecMonitor``.
    """

    failed_episode_count: int

    def __init__(self, venv: VecEnv, filename: str | None = None, info_keywords: tuple[str, ...] = ()) -> None:
        super().__init__(venv, filename, info_keywords)
        self.failed_episode_count = 0

    def step_wait(self) -> VecEnvStepReturn:
        """Step, and add ``info["episode"]`` (``r``, ``l``, ``t``) to episodes that really ended."""
        obs, rewards, dones, infos = self.venv.step_wait()
        self.episode_returns += rewards
        self.episode_lengths += 1
        new_infos = list(infos)
        for i in np.flatnonzero(dones):
            failed = infos[i].get("error_kind") is not None
            if failed:
                self.failed_episode_count += 1
            else:
                info = dict(infos[i])
                episode_info = {
                    "r": self.episode_returns[i],
                    "l": self.episode_lengths[i],
                    "t": round(time.time() - self.t_start, 6),
                }
                for key in self.info_keywords:
                    episode_info[key] = info[key]
                info["episode"] = episode_info
                self.episode_count += 1
                if self.results_writer:
                    self.results_writer.write_row(episode_info)
                new_infos[i] = info
            self.episode_returns[i] = 0
            self.episode_lengths[i] = 0
        return obs, rewards, dones, new_infos
