"""The callables env kind: ``PoolVectorEnv(env_fns)``, one factory per slot, as ``AsyncVectorEnv``.

CleanRL-style scripts build ``[make_env(env_id, i, ...) for i in range(n)]``, each factory with
its own parameters; this kind runs them as they are. The factories reach the workers pickled
with ``cloudpickle`` (what gymnasium's ``AsyncVectorEnv`` and SB3's ``SubprocVecEnv`` use), and
only in the ``init`` message of an embedded pool, on its private owner-only ipc channel: the
trust of ``multiprocessing`` between a trainer and its own children (DESIGN.md, "Trust
boundaries"). Workers accept it only when started with ``--accept-pickle``, which a daemon never
passes; the daemon's network wire stays msgpack and takes specs.

Each factory is pickled once, at construction, so a factory that cannot be pickled fails there,
naming its slot; a restarted worker gets the same bytes again.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from pool_env.envs.base import Probe
from pool_env.envs.gym import extend_sys_path, local_num_workers
from pool_env.errors import EnvCreationError, SpecError

if TYPE_CHECKING:
    import gymnasium as gym

    from workers.backends.base import Backend

__all__ = ["EnvFnsSpec", "call_factory"]

EnvFactory = Callable[[], Any]


def call_factory(factory: EnvFactory, slot: int) -> gym.Env[Any, Any]:
    """``factory()``, checked to be a ``gymnasium.Env``.

    Raises:
        EnvCreationError: the factory raised, or returned something else (the slot is named).
    """
    import gymnasium as gym

    try:
        env = factory()
    except Exception as exc:
        raise EnvCreationError(f"env_fns[{slot}]() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(env, gym.Env):
        raise EnvCreationError(f"env_fns[{slot}]() returned {type(env).__name__}, not a gymnasium.Env")
    return env


@dataclass(frozen=True, eq=False)
class EnvFnsSpec:
    """One callable per slot, each returning a ``gymnasium.Env``.

    Attributes:
        env_fns: the factories, slot ``i`` runs ``env_fns[i]()`` (in the trainer: the
            callables given; in a worker: those of its slots, unpickled).
        payloads: ``cloudpickle`` bytes of each factory (in the trainer; empty in a worker).
        slots: the global slot of each factory.
        sys_path: the trainer's ``sys.path`` (for factories pickled by reference).

    Raises:
        SpecError: not a non-empty sequence of callables, or a factory cannot be pickled.
    """

    env_fns: tuple[EnvFactory, ...]
    payloads: tuple[bytes, ...] = field(repr=False)
    slots: tuple[int, ...] = field(repr=False)
    sys_path: tuple[str, ...] = field(default=(), repr=False)

    kind: ClassVar[str] = "env_fns"
    carries_code: ClassVar[bool] = True

    @classmethod
    def from_callables(cls, env_fns: Sequence[EnvFactory]) -> EnvFnsSpec:
        """The spec of ``env_fns`` in the trainer: each factory checked and pickled once.

        Raises:
            SpecError: ``env_fns`` is empty or not a sequence, or a factory is not callable or
                cannot be pickled.
        """
        import cloudpickle

        if isinstance(env_fns, str | bytes) or not isinstance(env_fns, Sequence) or not env_fns:
            raise SpecError(f"env_fns: expected a non-empty list of callables, got {type(env_fns).__name__}")
        payloads = []
        for slot, factory in enumerate(env_fns):
            if not callable(factory):
                raise SpecError(f"env_fns[{slot}]: expected a callable returning an env, got {type(factory).__name__}")
            try:
                payloads.append(cloudpickle.dumps(factory))
            except Exception as exc:
                raise SpecError(
                    f"env_fns[{slot}]: {factory!r} cannot be sent to a worker process "
                    f"({type(exc).__name__}: {exc}); build what it holds inside the factory instead"
                ) from exc
        return cls(tuple(env_fns), tuple(payloads), tuple(range(len(env_fns))), tuple(sys.path))

    @property
    def num_envs(self) -> int:
        """One slot per factory."""
        return len(self.env_fns)

    def __repr__(self) -> str:
        return f"EnvFnsSpec(<{len(self.slots)} callables>)"

    def label(self) -> str:
        """``env_fns[<n>]``."""
        return f"env_fns[{len(self.slots)}]"

    # -- wire -------------------------------------------------------------------------------

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> EnvFnsSpec:
        """Unpickle the factories of a worker's slots (the registry lets only trusted workers here).

        Raises:
            SpecError: malformed fields, or a factory cannot be unpickled in this process
                (a module it refers to is not importable here, say).
        """
        import cloudpickle

        pairs = fields.get("env_fns")
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise SpecError("env_fns spec: expected a list of [slot, payload] pairs")
        extend_sys_path(fields.get("sys_path") or ())
        factories = []
        for slot, payload in pairs:
            try:
                factories.append(cloudpickle.loads(payload))
            except Exception as exc:
                raise SpecError(
                    f"env_fns[{slot}]: cannot be unpickled in the worker ({type(exc).__name__}: {exc}); "
                    "make the modules it refers to importable there (install them, or put them on PYTHONPATH)"
                ) from exc
        return cls(tuple(factories), (), tuple(int(s) for s, _ in pairs), tuple(fields.get("sys_path") or ()))

    def to_wire(self, slots: Sequence[int] | None = None) -> dict[str, Any]:
        """The pickled factories of ``slots`` (all when ``None``) with the trainer's ``sys.path``."""
        chosen = range(len(self.payloads)) if slots is None else slots
        return {
            "kind": self.kind,
            "env_fns": [[int(s), self.payloads[s]] for s in chosen],
            "sys_path": list(self.sys_path),
        }

    # -- the pool's questions ---------------------------------------------------------------

    def worst_case_step_seconds(self) -> float:
        """Local envs have no natural bound; the pool default applies."""
        return math.inf

    def default_num_workers(self, num_envs: int, trainer_slots: int = 0) -> int:
        """As for any local env, see :func:`pool_env.envs.gym.local_num_workers`."""
        return local_num_workers(num_envs, trainer_slots)

    def check(self) -> None:
        """Nothing to check beyond construction (every factory was pickled there)."""

    def probe(self) -> Probe:
        """Call ``env_fns[0]()`` here, read its spaces and close it, as ``AsyncVectorEnv`` does.

        Raises:
            EnvCreationError: the factory raised or returned no env.
        """
        env = call_factory(self.env_fns[0], self.slots[0])
        try:
            return Probe(env.observation_space, env.action_space, dict(env.metadata), env.render_mode)
        finally:
            env.close()

    def make_backend(self, slots: Sequence[int]) -> Backend:
        """One env per slot from its own factory.

        Raises:
            SpecError: ``slots`` are not the slots whose factories this worker received.
        """
        from workers.backends.gym import GymBackend

        by_slot = dict(zip(self.slots, self.env_fns, strict=True))
        missing = [s for s in slots if s not in by_slot]
        if missing:
            raise SpecError(f"env_fns: no factory for slots {missing}")
        return GymBackend([partial(call_factory, by_slot[s], s) for s in slots])
