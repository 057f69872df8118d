"""The local gymnasium env kind: an env id or an import string, made in each worker.

Everything the pool knows about this kind is here: the spec, how an env is made from it (in the
trainer to read its spaces, in the workers to run it), the default worker count, the start-up
check, and the worker backend (:class:`workers.backends.gym.GymBackend`).

Names a spec accepts, in the order they are tried:

* ``"package.module:EnvId"``, gymnasium's own form: the module is imported (it registers the id),
  then ``gymnasium.make("EnvId")``;
* ``"package.module:make_env"``: a callable (a function or an ``Env`` class) called with the kwargs;
* ``"EnvId"``: ``gymnasium.make``. An id registered at run time in the trainer (``gym.register``
  in the training script, SB3#1869) is registered again in each worker from the trainer's
  registry entry, whose entry point must be importable there: a string, or a class or function
  at the top level of a module. One defined in the training script itself is imported from the
  script as ``multiprocessing`` does (the script then needs its ``if __name__ == "__main__":``
  guard); anything else is refused at construction, naming the fixes.

gymnasium is imported only when an env is made, never at import time (HTTP workers import this
module through the registry).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from pool_env.envs.base import Probe, require
from pool_env.errors import EnvCreationError, SpecError

if TYPE_CHECKING:
    import gymnasium as gym

    from workers.backends.base import Backend

__all__ = [
    "SLOTS_FOR_EVERY_CORE",
    "GymEnvSpec",
    "extend_sys_path",
    "import_user_module",
    "local_num_workers",
    "make_gym_env",
    "vector_env_spec",
]

_REGISTRATION_FIELDS = (
    "reward_threshold",
    "nondeterministic",
    "max_episode_steps",
    "order_enforce",
    "disable_env_checker",
)


SLOTS_FOR_EVERY_CORE = 32
"""Slots per worker from which local envs get a worker on every core (see :func:`local_num_workers`)."""


def local_num_workers(num_envs: int, trainer_slots: int = 0) -> int:
    """Workers for ``num_envs`` local slots: one per core but one, the trainer's — or one per core
    once every worker would get :data:`SLOTS_FOR_EVERY_CORE` slots.

    The trainer is a busy process too: it runs the policy and the learner between steps, steps its
    own slots with ``trainer_slots``, and on the fast path (:mod:`pool_env.fastpath`) it spins
    while it waits as long as a core is free for it — with ``cores - 1`` workers neither side ever
    blocks, so a step pays no wake-up. That is worth a core while the trainer's share of a step is
    large: few slots per worker. With many, the trainer's core idles through most of every step,
    and one more worker pays for the two wake-ups blocking costs (≈ 50 µs per batch here): at 32
    CartPole slots per worker a worker's share is ≈ 300 µs.

    Measured on this project's 2-core machine, CartPole, one run after the other (load ≈ 0.7):
    one worker 0.54x / 0.75x / 0.89x ``SyncVectorEnv`` at N=4 / 16 / 64 against 0.2x / 0.43x /
    0.8x for two blocking workers; quiet bench runs had two workers ahead at N=64 (1.22x against
    1.00x; 84x84x4 frames 106k against 99k steps/s) and one worker ahead at N=4 / 16 by 2x / 1.3x.
    With ``trainer_slots`` the trainer steps slots of its own and keeps its core at any count (with
    32 of 64 slots in the trainer one worker beat two by 2x: three busy processes on two cores).
    The price of the spare core: an env whose step costs ≥ ≈ 100 µs steps slower on few cores
    with few slots (a 300 µs busy-loop env, N=16: two workers 1.4x one, loaded machine) — pass
    ``num_workers=os.cpu_count()`` for such envs on a small machine.
    """
    cores = os.cpu_count() or 1
    if not trainer_slots and num_envs >= SLOTS_FOR_EVERY_CORE * cores:
        return cores
    return max(1, min(num_envs, cores - 1))


def extend_sys_path(paths: Sequence[str]) -> None:
    """Append the trainer's ``sys.path`` entries this process lacks (after its own).

    A worker starts as ``python -m workers`` without the training script's directory on its
    path; ``multiprocessing``'s spawn hands the parent's ``sys.path`` to the child the same way.
    Appended, not prepended: the worker's own packages are never shadowed by a user's file.
    """
    for path in paths:
        if isinstance(path, str) and path not in sys.path:
            sys.path.append(path)


def _main_module_name() -> str | None:
    """The importable name of the training script (``__main__``), if it has one."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)  # python -m package.module
    path = getattr(main, "__file__", None)
    if not path or not path.endswith(".py"):
        return None  # an interactive session, a notebook, a frozen app
    return os.path.splitext(os.path.basename(path))[0]


def import_user_module(name: str) -> ModuleType:
    """``importlib.import_module(name)``, except that in the trainer the running script is reused.

    ``"train:MyEnv"`` named from ``python train.py`` must not execute ``train.py`` a second time
    in the trainer (it would build a second pool); the workers do import it as a module, as
    ``multiprocessing`` does.
    """
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main is not None and main_file and name not in sys.modules and name == _main_module_name():
        found = importlib.util.find_spec(name)
        origin = found.origin if found is not None else None
        if origin and os.path.exists(origin) and os.path.samefile(origin, main_file):
            return main
    return importlib.import_module(name)


def _import_path(entry_point: Any, env_id: str) -> str:
    """The ``"module:name"`` a worker imports ``entry_point`` (a class or function) by.

    Raises:
        SpecError: it cannot be imported by name in another process (the message names the fixes).
    """
    module = getattr(entry_point, "__module__", None)
    qualname = getattr(entry_point, "__qualname__", None)
    fixes = (
        f"define it at the top level of a module and register it by import string "
        f"(gym.register({env_id!r}, entry_point='my_envs:{getattr(entry_point, '__name__', 'MyEnv')}')), "
        f"or pass the env factories instead: PoolVectorEnv([partial(gym.make, gym.spec({env_id!r}))] * num_envs)"
    )
    if not module or not qualname or "." in qualname:
        raise SpecError(
            f"env_id: {env_id!r} is registered with entry point {entry_point!r}, which worker processes "
            f"cannot import (not a top-level class or function of a module); {fixes}"
        )
    if module == "__main__":
        name = _main_module_name()
        if name is None:
            raise SpecError(
                f"env_id: {env_id!r} is registered with entry point {qualname!r} defined in __main__ of an "
                f"interactive session, which worker processes cannot import; {fixes}"
            )
        module = name
    return f"{module}:{qualname}"


@dataclass(frozen=True)
class GymEnvSpec:
    """A local gymnasium env, made in each worker.

    Attributes:
        env_id: a registered id (``"CartPole-v1"``), gymnasium's ``"module:EnvId"`` form, or an
            import string ``"package.module:make_env"`` naming a callable that returns an env
            (called with ``kwargs``). See the module docstring for ids registered at run time.
        kwargs: keyword arguments for ``gymnasium.make`` or the callable (msgpack-able values).
        imports: modules imported in the worker first (to register custom ids).

    Raises:
        SpecError: ``env_id`` is not a non-empty string.
    """

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    imports: tuple[str, ...] = ()
    # Filled in workers only: the trainer's registry entry of env_id, and the trainer's sys.path.
    registration: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    sys_path: tuple[str, ...] = field(default=(), compare=False, repr=False)

    kind: ClassVar[str] = "gym"
    carries_code: ClassVar[bool] = False

    def __init__(self, env_id: str, imports: tuple[str, ...] | list[str] = (), **kwargs: Any) -> None:
        require(isinstance(env_id, str) and bool(env_id), "env_id", f"must be a non-empty string, got {env_id!r}")
        object.__setattr__(self, "env_id", env_id)
        object.__setattr__(self, "kwargs", dict(kwargs))
        object.__setattr__(self, "imports", tuple(imports))
        object.__setattr__(self, "registration", None)
        object.__setattr__(self, "sys_path", ())

    # -- wire -------------------------------------------------------------------------------

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> GymEnvSpec:
        """Rebuild the spec from :meth:`to_wire` output.

        Raises:
            SpecError: missing or bad fields.
        """
        if "env_id" not in fields:
            raise SpecError("gym spec: env_id missing")
        spec = cls(fields["env_id"], imports=tuple(fields.get("imports") or ()), **(fields.get("kwargs") or {}))
        object.__setattr__(spec, "registration", fields.get("registration"))
        object.__setattr__(spec, "sys_path", tuple(fields.get("sys_path") or ()))
        return spec

    def to_wire(self, slots: Sequence[int] | None = None) -> dict[str, Any]:
        """A msgpack-able dict: the spec, the trainer's registry entry of ``env_id`` and ``sys.path``.

        Raises:
            SpecError: ``env_id`` is registered with an entry point workers cannot import.
        """
        return {
            "kind": self.kind,
            "env_id": self.env_id,
            "kwargs": self.kwargs,
            "imports": list(self.imports),
            "registration": self._trainer_registration(),
            "sys_path": [p for p in sys.path if isinstance(p, str)],
        }

    def _trainer_registration(self) -> dict[str, Any] | None:
        """This process's registry entry of ``env_id`` in a form a worker can register again."""
        if ":" in self.env_id or "gymnasium" not in sys.modules:
            return None  # the module registers it; or nothing was registered here at all
        import gymnasium as gym

        entry = gym.registry.get(self.env_id)
        if entry is None:
            return None
        entry_point = entry.entry_point
        if entry_point is None:
            return None
        if not isinstance(entry_point, str):
            entry_point = _import_path(entry_point, self.env_id)
        registration = {name: getattr(entry, name) for name in _REGISTRATION_FIELDS}
        registration.update(entry_point=entry_point, kwargs=dict(entry.kwargs))
        return registration

    # -- the pool's questions ---------------------------------------------------------------

    def label(self) -> str:
        """``gym:<env_id>``, the daemon's spec string."""
        return f"gym:{self.env_id}"

    def worst_case_step_seconds(self) -> float:
        """Local envs have no natural bound; the pool default applies."""
        return math.inf

    def default_num_workers(self, num_envs: int, trainer_slots: int = 0) -> int:
        """See :func:`local_num_workers`."""
        return local_num_workers(num_envs, trainer_slots)

    def check(self) -> None:
        """Refuse, before any worker starts, an id whose registration workers could not repeat.

        Raises:
            SpecError: ``env_id`` is registered with an entry point workers cannot import.
        """
        self._trainer_registration()

    def probe(self) -> Probe:
        """Make one env here (as ``AsyncVectorEnv`` makes its dummy env), read it and close it.

        Raises:
            EnvCreationError: the env cannot be made.
        """
        env = make_gym_env(self)
        try:
            return Probe(env.observation_space, env.action_space, dict(env.metadata), env.render_mode)
        finally:
            env.close()

    def make_backend(self, slots: Sequence[int]) -> Backend:
        """One env per slot, each made by :func:`make_gym_env`."""
        from workers.backends.gym import GymBackend

        extend_sys_path(self.sys_path)
        factory: Callable[[], gym.Env[Any, Any]] = partial(make_gym_env, self)
        return GymBackend([factory] * len(slots))


def make_gym_env(spec: GymEnvSpec) -> gym.Env[Any, Any]:
    """Make one env of ``spec`` (see the module docstring for the names accepted).

    Raises:
        EnvCreationError: unknown id, bad import string, or the constructor raised; the message
            names the cause and, for an import that fails, the fixes.
    """
    import gymnasium as gym

    try:
        for module_name in spec.imports:
            import_user_module(module_name)
        if ":" in spec.env_id:
            module_name, _, name = spec.env_id.partition(":")
            module = import_user_module(module_name)
            # gymnasium's "module:EnvId" (the import registered it), else a callable's import string
            registered = name in gym.registry
            env = gym.make(name, **spec.kwargs) if registered else getattr(module, name)(**spec.kwargs)
        else:
            if spec.registration is not None and spec.env_id not in gym.registry:
                gym.register(spec.env_id, **spec.registration)
            env = gym.make(spec.env_id, **spec.kwargs)
    except ImportError as exc:
        raise EnvCreationError(
            f"cannot create env {spec.env_id!r}: {type(exc).__name__}: {exc} (in pid {os.getpid()}); "
            "make the module importable in the worker processes (install its package, or put its "
            "directory on PYTHONPATH)"
        ) from exc
    except Exception as exc:
        raise EnvCreationError(f"cannot create env {spec.env_id!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(env, gym.Env):
        raise EnvCreationError(f"{spec.env_id!r} returned {type(env).__name__}, not a gymnasium.Env")
    return env


def vector_env_spec(spec: Any, num_envs: int) -> Any:
    """``env.spec`` of a pool, as gymnasium's vector envs expose it: for a registered id, what
    ``gymnasium.make_vec(id, num_envs, vectorization_mode="async", **kwargs)`` sets (a copy of the
    registry entry whose kwargs add the env's kwargs, ``num_envs`` and ``vectorization_mode``, so
    ``gymnasium.make_vec(pool.spec)`` makes the equivalent ``AsyncVectorEnv``); ``None`` otherwise,
    as ``AsyncVectorEnv(env_fns)`` has none (callables, import strings, HTTP envs).
    """
    if getattr(spec, "kind", None) != "gym":
        return None
    import copy

    import gymnasium as gym

    try:
        registered = gym.spec(spec.env_id)
    except Exception:  # an import string "package.module:make_env" names no registered id
        return None
    copied = copy.deepcopy(registered)
    copied.kwargs = {**registered.kwargs, **spec.kwargs, "num_envs": num_envs, "vectorization_mode": "async"}
    return copied
