"""Local gymnasium envs: one env object per slot, each made by its own factory, stepped in a loop.

The factories come from the env kind (:mod:`pool_env.envs.gym` makes every slot from one spec,
:mod:`pool_env.envs.callables` gives each slot the user's own callable).

An exception inside ``env.step``/``env.reset`` is a per-slot failure: the slot comes back with
the traceback as its error (reported truncated) and its env is made anew before its next reset.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

from pool_env.errors import ErrorKind, StepFate
from workers.backends.base import Outcome
from workers.contract import ContractViolation, describe_value

__all__ = ["GymBackend"]


class GymBackend:
    """One local env per slot; slot ``i``'s env is made (and made anew after a failure) by
    ``factories[i]``, which raises :class:`pool_env.errors.EnvCreationError` when it cannot."""

    _factories: list[Callable[[], gym.Env[Any, Any]]]
    _envs: list[gym.Env[Any, Any] | None]

    def __init__(self, factories: Sequence[Callable[[], gym.Env[Any, Any]]]) -> None:
        self._factories = list(factories)
        self._envs = []
        try:
            for factory in self._factories:
                self._envs.append(factory())
        except BaseException:
            self.close()
            raise

    @property
    def observation_space(self) -> gym.Space[Any]:
        """The observation space of the first env."""
        return self._env(0).observation_space

    def declared_spaces(self) -> list[tuple[gym.Space[Any], gym.Space[Any]]]:
        """``(observation_space, action_space)`` of each slot's env, as the env declares them."""
        return [(self._env(i).observation_space, self._env(i).action_space) for i in range(len(self._envs))]

    def _env(self, slot: int) -> gym.Env[Any, Any]:
        env = self._envs[slot]
        if env is None:
            env = self._envs[slot] = self._factories[slot]()
        return env

    def _broken(self, slot: int, what: str) -> Outcome:
        env, self._envs[slot] = self._envs[slot], None
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
        # A step that raised may have changed the env before raising; a reset is no step.
        fate = StepFate.UNKNOWN if what == "step" else StepFate.NOT_APPLIED
        return Outcome.failed(ErrorKind.ENV_RAISED, fate, f"{what} raised in the env:\n{traceback.format_exc()}")

    def reset(self, slots: Sequence[int], seeds: Sequence[int | None], options: dict[str, Any] | None) -> list[Outcome]:
        """Reset each slot with its seed (``None`` continues the env's own RNG)."""
        outcomes = []
        for slot, seed in zip(slots, seeds, strict=True):
            try:
                returned = self._env(slot).reset(seed=seed, options=options)
            except Exception:
                outcomes.append(self._broken(slot, "reset"))
                continue
            if not (isinstance(returned, tuple) and len(returned) == 2):
                outcomes.append(_not_a_tuple("reset", "(obs, info)", returned))
                continue
            outcomes.append(Outcome(obs=returned[0], info=returned[1]))
        return outcomes

    def step(self, slots: Sequence[int], actions: Sequence[Any]) -> list[Outcome]:
        """Step each slot with its action."""
        return [r if isinstance(r, Outcome) else Outcome(*r) for r in self.step_returns(slots, actions)]

    def step_returns(self, slots: Sequence[int], actions: Sequence[Any]) -> list[tuple[Any, ...] | Outcome]:
        """Step each slot with its action; each env's return as it came (a 5-tuple), or an
        :class:`Outcome` for a slot that failed (the env raised, or returned no 5-tuple).

        The worker's lean path (:meth:`workers.results.ResultWriter.write_steps`): no object per clean slot. The
        reward, flags and observation are passed as returned; the worker checks them.
        """
        outcomes: list[tuple[Any, ...] | Outcome] = []
        append = outcomes.append
        envs = self._envs
        for slot, action in zip(slots, actions, strict=True):
            env = envs[slot]
            try:
                returned = (self._env(slot) if env is None else env).step(action)
            except Exception:
                append(self._broken(slot, "step"))
                continue
            if isinstance(returned, tuple) and len(returned) == 5:
                append(returned)
            else:
                append(_not_a_tuple("step", "(obs, reward, terminated, truncated, info)", returned))
        return outcomes

    def call(self, slot: int, name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """``env.get_wrapper_attr(name)``, called with ``args``/``kwargs`` if callable (as
        ``SyncVectorEnv.call`` does).

        Raises:
            Exception: whatever the env raises (``AttributeError`` for an unknown name).
        """
        attribute = self._env(slot).get_wrapper_attr(name)
        return attribute(*args, **kwargs) if callable(attribute) else attribute

    def set_attr(self, slot: int, name: str, value: Any) -> None:
        """``env.set_wrapper_attr(name, value)`` (as ``SyncVectorEnv.set_attr`` does)."""
        self._env(slot).set_wrapper_attr(name, value)

    def rng_state(self, slot: int) -> dict[str, Any] | None:
        """The RNG of ``slot``'s env: gymnasium's ``np_random`` generator and ``np_random_seed``
        (``None`` when the env drew none yet, or was broken and will be made anew)."""
        env = self._envs[slot]
        if env is None:
            return None
        unwrapped = env.unwrapped
        generator = getattr(unwrapped, "_np_random", None)  # not the property: it would seed one
        if generator is None:
            return None
        return {"np_random": generator, "np_random_seed": getattr(unwrapped, "_np_random_seed", None)}

    def set_rng_state(self, slot: int, state: dict[str, Any]) -> None:
        """Continue ``slot``'s env from the RNG :meth:`rng_state` returned in another process."""
        unwrapped = self._env(slot).unwrapped
        unwrapped.np_random = state["np_random"]  # gymnasium's setter (it marks the seed unknown)
        if state.get("np_random_seed") is not None:
            unwrapped._np_random_seed = state["np_random_seed"]

    def close(self) -> None:
        """Close every env, ignoring errors from env.close()."""
        for env in self._envs:
            if env is not None:
                with contextlib.suppress(Exception):
                    env.close()
        self._envs = []


def _not_a_tuple(what: str, expected: str, returned: Any) -> Outcome:
    got = f"a {len(returned)}-tuple" if isinstance(returned, tuple) else describe_value(returned)
    violation = ContractViolation("return value", f"the tuple {expected} of gymnasium's {what}() API", got)
    fate = StepFate.APPLIED if what == "step" else StepFate.NOT_APPLIED  # env.step() did return
    return Outcome.failed(ErrorKind.INVALID_ENV_RETURN, fate, f"{what}() returned an {violation}")
