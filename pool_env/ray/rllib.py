"""RLlib's env runners build a pool: :class:`PoolEnvCreator`, an env creator for ``vector_entry_point``.

RLlib (2.40+, new API stack) makes each env runner's vector env with ``gymnasium.make_vec``. For an
env registered with ``ray.tune.register_env`` and ``gym_env_vectorize_mode="vector_entry_point"``,
it registers the creator as the env's ``vector_entry_point`` and calls it once per env runner with
``{"num_envs": num_envs_per_env_runner, **env_config}`` (ray ``rllib/env/single_agent_env_runner.py``),
so each env runner gets one :class:`~pool_env.PoolVectorEnv` of that many slots::

    config = (
        PPOConfig()
        .environment(register_pool_env("pool-cartpole", GymEnvSpec("CartPole-v1"), num_workers=1))
        .env_runners(num_env_runners=2, num_envs_per_env_runner=8, gym_env_vectorize_mode="vector_entry_point")
    )

Autoreset is ``NEXT_STEP``, enforced here: RLlib's env runners read an ended slot's next
observation as the first of a new episode and never look at ``infos["final_obs"]``, so under
``SAME_STEP`` they would learn, silently, from transitions that jump between episodes.

The setups that cannot work fail at once with what to do instead:

* ``.environment(env=PoolVectorEnv)``: RLlib calls the class with its ``env_config`` dict
  (refused by :class:`~pool_env.PoolVectorEnv`, naming this module);
* the default ``gym_env_vectorize_mode="sync"``: RLlib calls the creator without ``num_envs`` to
  make one env per slot (:meth:`PoolEnvCreator.__call__` raises naming the setting);
* a gymnasium id registered only in the driver (``gym.register`` in the training script): the
  creator carries the driver's registration to the env runners (captured when Ray pickles it, at
  ``register_env``, as :class:`~pool_env.GymEnvSpec` carries it to the pool's workers); an id
  registered nowhere the creator was built fails naming where to register it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gymnasium.vector import AutoresetMode

from pool_env.config import PoolOptions
from pool_env.envs import EnvSpec, GymEnvSpec
from pool_env.envs.registry import is_spec
from pool_env.errors import SpecError, UsageError
from pool_env.frontend import autoreset_mode_of
from pool_env.vector_env import PoolVectorEnv

__all__ = ["SYNC_MODE_HINT", "PoolEnvCreator", "register_pool_env", "rllib_autoreset_check"]

SYNC_MODE_HINT = (
    "set .env_runners(gym_env_vectorize_mode='vector_entry_point') so that each env runner builds one "
    "pool of num_envs_per_env_runner slots"
)


def rllib_autoreset_check(mode: AutoresetMode | str) -> AutoresetMode:
    """``mode`` if it is ``NEXT_STEP``, the only autoreset mode RLlib's env runners read correctly.

    Raises:
        SpecError: any other mode (the message says why).
    """
    resolved = autoreset_mode_of(mode)
    if resolved is not AutoresetMode.NEXT_STEP:
        raise SpecError(
            f"autoreset_mode: RLlib's env runners need NEXT_STEP, got {resolved.value}: they read an ended "
            "slot's next observation as the start of a new episode and never read infos['final_obs'], so "
            "SAME_STEP or DISABLED would be learned from silently wrong transitions"
        )
    return resolved


class PoolEnvCreator:
    """An RLlib env creator: ``creator({"num_envs": n, ...})`` is a pool of ``n`` slots of ``spec``.

    Picklable (Ray ships it to each env runner); the pool's workers start in the env runner's
    process, on its node.

    Args:
        spec: what each slot runs (:class:`~pool_env.GymEnvSpec` or :class:`~pool_env.HttpEnvSpec`).
        num_workers: worker processes per env runner (default: the spec's default for its slots).
        options: the pools' :class:`~pool_env.PoolOptions`.
        autoreset_mode: must be ``NEXT_STEP`` (the default); see the module docstring.

    Attributes:
        spec: the env spec.
        num_workers: workers per pool, or ``None`` for the spec's default.
        options: pool options, or ``None`` for the defaults.
        registration: the driver's gymnasium registration of ``spec.env_id`` (a plain id
            registered at run time), carried to the env runners; ``None`` otherwise.

    Raises:
        SpecError: not a spec, a mode other than ``NEXT_STEP``, or an id registered with an entry
            point other processes cannot import.
    """

    spec: EnvSpec
    num_workers: int | None
    options: PoolOptions | None
    registration: dict[str, Any] | None

    def __init__(
        self,
        spec: EnvSpec,
        *,
        num_workers: int | None = None,
        options: PoolOptions | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        if not is_spec(spec):
            raise SpecError(
                f"spec: PoolEnvCreator takes an env spec (GymEnvSpec, HttpEnvSpec), got {type(spec).__name__}"
            )
        rllib_autoreset_check(autoreset_mode)
        spec.check()
        self.spec = spec
        self.num_workers = num_workers
        self.options = options
        self.registration = self._local_registration()

    def _local_registration(self) -> dict[str, Any] | None:
        """This process's registry entry of a plain gym id, in the form workers register it again."""
        if isinstance(self.spec, GymEnvSpec):
            return self.spec.to_wire()["registration"]
        return None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for an env runner: the registration as the driver has it now (it may have come
        after the creator was built)."""
        state = dict(self.__dict__)
        state["registration"] = self._local_registration() or self.registration
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __call__(self, config: Mapping[str, Any]) -> PoolVectorEnv:
        """Build the env runner's pool.

        Args:
            config: RLlib's ``env_config`` with ``num_envs`` added by ``vector_entry_point`` mode.

        Raises:
            UsageError: no ``num_envs`` (RLlib's default ``"sync"`` mode), or ``env_config`` keys
                (the env's parameters belong in the spec).
            SpecError: a gym id that is registered neither here nor where the creator was built.
        """
        if "num_envs" not in config:
            raise UsageError(
                "PoolEnvCreator was called without num_envs: RLlib's default gym_env_vectorize_mode='sync' "
                f"makes one env per slot and vectorizes them itself; {SYNC_MODE_HINT}"
            )
        extra = sorted(str(key) for key in config if key != "num_envs")
        if extra:
            raise UsageError(
                f"PoolEnvCreator: env_config keys {extra} would be ignored; give the env's parameters "
                "to the spec instead (GymEnvSpec(env_id, **kwargs), HttpEnvSpec(...))"
            )
        self._register_here()
        return PoolVectorEnv(
            self.spec,
            num_envs=config["num_envs"],
            num_workers=self.num_workers,
            options=self.options,
            autoreset_mode=AutoresetMode.NEXT_STEP,
        )

    def _register_here(self) -> None:
        """Register the driver's gym id in this process (the env runner) before the pool reads it."""
        spec = self.spec
        if not isinstance(spec, GymEnvSpec) or ":" in spec.env_id:
            return
        import gymnasium as gym

        if spec.env_id in gym.registry:
            return
        if self.registration is None:
            raise SpecError(
                f"env_id: {spec.env_id!r} is not registered in this process nor where the PoolEnvCreator was "
                "built; call gym.register(...) in the driver before building the creator, or name it "
                "'module:EnvId' so that every process imports the module that registers it"
            )
        gym.register(spec.env_id, **self.registration)

    def __repr__(self) -> str:
        return f"PoolEnvCreator({self.spec!r}, num_workers={self.num_workers!r})"


def register_pool_env(
    name: str,
    spec: EnvSpec,
    *,
    num_workers: int | None = None,
    options: PoolOptions | None = None,
) -> str:
    """Register a :class:`PoolEnvCreator` of ``spec`` with Ray under ``name``; returns ``name``.

    For ``AlgorithmConfig.environment(name)`` (RLlib takes a registered name or a class, not a
    creator instance). Call it after ``ray.init`` and after registering any gym id the spec names.

    Raises:
        SpecError: see :class:`PoolEnvCreator`.
    """
    from ray.tune.registry import register_env

    register_env(name, PoolEnvCreator(spec, num_workers=num_workers, options=options))
    return name
