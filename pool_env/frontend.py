"""What every pool_env vector env shares, whatever is behind it (embedded workers or daemons).

:class:`BatchedVectorEnv` holds the gymnasium conventions and call-order rules once: ``step`` is
``step_async`` + ``step_wait``, ``reset`` is ``reset_async`` + ``reset_wait``; a call on a closed
env raises :class:`ClosedError`; a call while a step is pending raises :class:`AlreadyPendingError`;
seeds follow gymnasium's ``seed + i`` rule; the env is a context manager and warns
(``ResourceWarning``) when collected unclosed.

It also holds what every front end shares of gymnasium's API: the autoreset mode
(``AutoresetMode.NEXT_STEP``, ``SAME_STEP`` or ``DISABLED``, in ``metadata["autoreset_mode"]`` and
``self.autoreset_mode``), seeds checked as ``SyncVectorEnv`` checks them before anything is sent,
``reset(options={"reset_mask": m})`` checked with gymnasium's own errors, reset options checked by
the codec, and a clear ``TypeError`` for ``pickle``/``copy`` (a pool owns processes). ``call``,
``get_attr``, ``set_attr``, ``render`` and ``np_random`` are written once over each front end's
``call_async``/``call_wait`` and ``_set_attr``, with ``SyncVectorEnv``'s argument checks.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
from gymnasium.error import Error as GymnasiumError
from gymnasium.vector import AutoresetMode, VectorEnv

from pool_env import codec
from pool_env.errors import (
    AlreadyPendingError,
    ClosedError,
    InvalidSeedError,
    NoPendingCallError,
    PoolEnvError,
    SlotFailure,
    UsageError,
)

__all__ = [
    "BatchedVectorEnv",
    "autoreset_mode_of",
    "call_results",
    "check_options",
    "check_sendable",
    "reset_mask_of",
    "seed_list",
]


def autoreset_mode_of(value: AutoresetMode | str) -> AutoresetMode:
    """``value`` as an :class:`AutoresetMode` (its value or name accepted: ``"SameStep"``, ``"SAME_STEP"``).

    Raises:
        ValueError: not an autoreset mode.
    """
    if isinstance(value, AutoresetMode):
        return value
    for mode in AutoresetMode:
        if value in (mode.value, mode.name):
            return mode
    raise ValueError(f"autoreset_mode: expected one of {[m.value for m in AutoresetMode]}, got {value!r}")


def _check_seed(seed: Any) -> int | None:
    """One slot's seed as gymnasium's ``seeding.np_random`` checks it (numpy ints accepted)."""
    if seed is None:
        return None
    if isinstance(seed, np.integer):
        seed = int(seed)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise GymnasiumError(f"Seed must be a python integer, actual type: {type(seed)}")
    if seed < 0:
        raise GymnasiumError(f"Seed must be greater or equal to zero, actual value: {seed}")
    return seed


def check_options(options: dict[str, Any] | None, network: bool = False) -> None:
    """Raise a ``TypeError`` naming the key if a reset option cannot reach the workers.

    ``network``: the options go to a daemon, which rebuilds no objects of a class for a network
    peer (it would have to import their modules): only plain data may cross.

    Raises:
        CodecError: a value that cannot cross (names ``options[key]`` and its type).
    """
    if not options:
        return
    codec.pack(options, "options")
    if network:
        for key, value in options.items():
            check_sendable(value, f"options[{key!r}]", network=True, path=(key,))


def check_sendable(value: Any, what: str, network: bool = False, path: tuple[Any, ...] = ()) -> None:
    """Raise a ``TypeError`` naming ``what`` if ``value`` cannot reach the workers.

    ``network``: the value goes to a daemon, which rebuilds no objects of a class for a network
    peer (it would have to import their modules): only plain data may cross.

    Raises:
        CodecError: a value that cannot cross (names ``what``, where in it, and its type).
    """
    data = codec.pack(value, what)
    if network:
        try:
            codec.unpack(data, 1 << 30, classes=False)
        except codec.CodecError:
            raise codec.CodecError(
                f"{what} holds an enum member, object, class or function, which a daemon does not "
                "accept from the network: send plain data (numbers, str, tuples, dicts, numpy arrays)",
                path,
            ) from None


def call_results(values: dict[int, Any], failures: dict[int, SlotFailure], num_envs: int, what: str) -> tuple[Any, ...]:
    """One ``call`` result per slot, in slot order (``set_attr``: ``num_envs=0``, no results).

    Raises:
        PoolEnvError: a slot's worker failed during the call (names the first such slot).
    """
    if failures:
        slot = min(failures)
        raise PoolEnvError(f"{what} failed on slot {slot}: {failures[slot].message}")
    return tuple(values[slot] for slot in range(num_envs))


def reset_mask_of(options: dict[str, Any], num_envs: int) -> np.ndarray:
    """Pop and check ``options["reset_mask"]`` with ``SyncVectorEnv``'s errors and messages.

    Raises:
        TypeError: not a numpy bool array; ValueError: wrong shape or no True value.
    """
    mask = options.pop("reset_mask")
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
    if mask.shape != (num_envs,):
        raise ValueError(f"`options['reset_mask']` must have shape `({num_envs},)`, got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}")
    if not np.any(mask):
        raise ValueError(
            f"`options['reset_mask']` must contain a boolean array with at least one True value, got reset_mask={mask}"
        )
    return mask


def seed_list(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """Per-slot seeds, as gymnasium's vector envs derive them: ``None`` → all None, ``s`` → ``s + i``.

    Every seed is checked here, before anything is sent, as each env's reset would check it in
    ``SyncVectorEnv`` (same error class and text).

    Raises:
        InvalidSeedError: a list whose length is not ``num_envs`` (a ``ValueError``).
        gymnasium.error.Error: a negative seed, or one that is not an integer.
        TypeError: neither None, an int nor a sequence.
    """
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        return [_check_seed(int(seed) + i) for i in range(num_envs)]
    if not isinstance(seed, Sequence | np.ndarray):
        raise TypeError(f"seed: expected None, an int or a list of num_envs={num_envs} ints, got {type(seed).__name__}")
    if len(seed) != num_envs:
        raise InvalidSeedError(
            f"If seeds are passed as a list the length must match num_envs={num_envs} but got length={len(seed)}."
        )
    seeds = [_check_seed(s) for s in seed]
    return seeds


class BatchedVectorEnv(VectorEnv):
    """Base of :class:`~pool_env.PoolVectorEnv` and :class:`~pool_env.RemoteVectorEnv`.

    Subclasses implement ``step_async``/``step_wait``, set ``self._pending`` while a step is in
    flight, and may report other in-flight work through :meth:`_busy_reason`.
    """

    num_envs: int
    autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP
    _pending: Any = None
    _pending_op: str | None = None  # "reset", "step", "call" (or "set_attr" through a daemon) while pending
    _was_reset: bool = False
    _ended: np.ndarray | None = None  # DISABLED: slots whose episode ended and await a reset

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every slot (seed ``s`` gives slot ``i`` the seed ``s + i``, as gymnasium does):
        ``reset_async`` then ``reset_wait``.

        ``options["reset_mask"]`` (a bool array) resets only the masked slots, each exactly once.

        Raises:
            gymnasium.error.Error: a negative or non-integer seed (before anything is sent).
            InvalidSeedError: a seed list of the wrong length.
            CodecError: an option that cannot reach the workers (a ``TypeError`` naming the key).
            TypeError, ValueError: a malformed ``reset_mask`` (gymnasium's messages).
        """
        self.reset_async(seed=seed, options=options)
        return self.reset_wait()

    def reset_async(
        self, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> None:  # pragma: no cover - abstract
        """Start :meth:`reset`; collect it with :meth:`reset_wait`."""
        raise NotImplementedError

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:  # pragma: no cover - abstract
        """Wait for the reset started by :meth:`reset_async`: ``(observations, infos)``."""
        raise NotImplementedError

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every slot: ``step_async(actions)`` then ``step_wait()``."""
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: Any) -> None:  # pragma: no cover - abstract
        """Start a step of every slot."""
        raise NotImplementedError

    def step_wait(
        self, timeout: float | None = None
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:  # pragma: no cover - abstract
        """Wait for the step started by :meth:`step_async`."""
        raise NotImplementedError

    # -- the rest of gymnasium's VectorEnv API, over call_async/call_wait -------------------

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call the method ``name`` of every slot's env with ``args``/``kwargs`` (or get the
        attribute, if it is not callable), as ``SyncVectorEnv.call``: one result per slot.

        Arguments and results cross processes with :mod:`pool_env.codec` (types kept).

        Raises:
            CodecError: an argument or a result that cannot cross (a ``TypeError`` naming it).
            AttributeError, ...: what an env raised (builtin exception types are kept).
        """
        self.call_async(name, *args, **kwargs)
        return self.call_wait()

    def call_async(self, name: str, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - abstract
        """Start :meth:`call`; collect the results with :meth:`call_wait`."""
        raise NotImplementedError

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:  # pragma: no cover - abstract
        """The results of the call started by :meth:`call_async`, one per slot."""
        raise NotImplementedError

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """The attribute ``name`` of every slot's env (``env.get_wrapper_attr``), one per slot."""
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set the attribute ``name`` of every slot's env: a list or tuple gives one value per
        slot, anything else is set on all (as ``SyncVectorEnv.set_attr``).

        Raises:
            ValueError: a list or tuple whose length is not ``num_envs``.
            CodecError: a value that cannot cross (a ``TypeError`` naming it).
        """
        self._check_idle("set_attr")
        if not isinstance(values, list | tuple):
            values = [values for _ in range(self.num_envs)]
        if len(values) != self.num_envs:
            raise ValueError(
                "Values must be a list or tuple with length equal to the number of environments. "
                f"Got `{len(values)}` values for {self.num_envs} environments."
            )
        self._set_attr(name, list(values))

    def _set_attr(self, name: str, values: list[Any]) -> None:  # pragma: no cover - abstract
        """Set ``name`` to ``values[i]`` on slot ``i``'s env (arguments already checked)."""
        raise NotImplementedError

    def render(self) -> tuple[Any, ...] | None:
        """Every slot's frame (``env.render()``), as ``SyncVectorEnv.render``; ``None`` if the
        envs were made without a ``render_mode``... as theirs return."""
        return self.call("render")

    @property  # type: ignore[override]
    def np_random(self) -> tuple[np.random.Generator, ...]:
        """Copies of every slot's env RNG (``env.np_random``), as ``AsyncVectorEnv.np_random``."""
        return self.get_attr("np_random")

    @np_random.setter
    def np_random(self, value: Any) -> None:
        raise AttributeError(
            f"np_random of a {type(self).__name__} lives in the workers: use set_attr('np_random', ...)"
        )

    @property
    def np_random_seed(self) -> tuple[int, ...]:  # type: ignore[override]
        """Every slot's env RNG seed (``env.np_random_seed``)."""
        return self.get_attr("np_random_seed")

    def __enter__(self) -> Self:
        return self

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"cannot pickle a {type(self).__name__}: it owns worker processes, sockets and shared memory. "
            "Pickle its configuration instead and build a new one where needed"
        )

    def __copy__(self) -> Any:
        raise TypeError(f"cannot copy a {type(self).__name__}: it owns worker processes, sockets and shared memory")

    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError(f"cannot deepcopy a {type(self).__name__}: it owns worker processes, sockets and shared memory")

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            warnings.warn(f"unclosed {self!r}; call close()", ResourceWarning, stacklevel=2)
            with contextlib.suppress(Exception):  # may run at interpreter shutdown
                self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedError(f"this {type(self).__name__} is closed")

    def _check_pending(self, *ops: str) -> str:
        """The op in flight; raise unless the env is open and a ``<op>_async`` of one of ``ops`` is
        in flight (the error names the first: ``reset``, ``step`` or ``call``)."""
        self._check_open()
        if self._pending is None or self._pending_op not in ops:
            raise NoPendingCallError(f"{ops[0]}_wait() without a pending {ops[0]}_async()", ops[0])
        return self._pending_op

    def _check_idle(self, name: str) -> None:
        """Raise unless the env is open and nothing is in flight."""
        self._check_open()
        if self._pending is not None:
            raise AlreadyPendingError(f"{name}() while a step is pending; call step_wait() first", "step")
        busy = self._busy_reason()
        if busy is not None:
            raise AlreadyPendingError(f"{name}() while {busy}", "step")

    def _check_can_step(self) -> None:
        """Raise unless ``step_async`` may start: open, idle, reset at least once, and (DISABLED
        autoreset) no slot waiting for its reset."""
        self._check_idle("step_async")
        if not self._was_reset:
            raise UsageError("call reset() before step()")
        if self._ended is not None and self._ended.any():
            ended = np.flatnonzero(self._ended).tolist()
            raise UsageError(
                f"slots {ended} ended and autoreset_mode is DISABLED: reset them first, e.g. "
                "env.reset(options={'reset_mask': terminated | truncated})"
            )

    def _track_step(self, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """DISABLED autoreset: remember which slots ended in a step (they wait for a reset)."""
        if self.autoreset_mode is not AutoresetMode.DISABLED:
            return
        if self._ended is None:
            self._ended = np.zeros(self.num_envs, dtype=np.bool_)
        self._ended |= terminated | truncated

    def _track_reset(self, slots: Sequence[int] | None) -> None:
        """DISABLED autoreset: ``slots`` (all when None) start new episodes."""
        if self._ended is None:
            return
        if slots is None:
            self._ended[:] = False
        else:
            self._ended[list(slots)] = False

    def _busy_reason(self) -> str | None:
        """Why the env is busy besides a pending step (``None``: it is not)."""
        return None

    def _reset_envs_arguments(
        self, indices: Sequence[int], seeds: Sequence[int | None] | None
    ) -> tuple[list[int], list[int | None]]:
        """Check ``reset_envs`` arguments (the env idle, distinct slots in range, one seed each).

        Raises:
            UsageError: bad indices or seeds; AlreadyPendingError, ClosedError: wrong call order.
        """
        self._check_idle("reset_envs")
        chosen = [int(i) for i in indices]
        if not chosen or any(not 0 <= i < self.num_envs for i in chosen) or len(set(chosen)) != len(chosen):
            raise UsageError(f"indices must be distinct slots in 0..{self.num_envs - 1}, got {list(indices)}")
        if seeds is not None and len(seeds) != len(chosen):
            raise UsageError(f"seeds must match indices in length ({len(seeds)} != {len(chosen)})")
        return chosen, list(seeds) if seeds is not None else [None] * len(chosen)

    def _seed_list(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        return seed_list(seed, self.num_envs)
