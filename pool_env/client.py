"""``pool_env.connect``: a gymnasium vector env over slots leased from one or several daemons.

The returned :class:`RemoteVectorEnv` has the interface of
:class:`~pool_env.vector_env.PoolVectorEnv` (``reset``/``reset_async``/``reset_wait``, ``step``,
``step_async``/``step_wait``, ``reset_envs``, ``call``/``call_async``/``call_wait``, ``get_attr``,
``set_attr``, ``render``, ``np_random``, ``stats``, ``close``, context manager) and the same
semantics: the lease's autoreset mode, failed slots truncated with ``infos["error"]``, the same
errors for wrong actions and wrong call order. ``call`` arguments and ``set_attr`` values must be
plain data (a daemon imports no classes for a network peer); results keep their types. With
several endpoints, the slots of each daemon follow each other in the order the endpoints are
given; every request goes to all daemons before any reply is awaited, so they step in parallel.

```python
import pool_env

with pool_env.connect("ipc:///run/user/1000/pool-env/pool.sock", num_envs=8) as env:
    obs, infos = env.reset(seed=0)
    obs, rewards, terminated, truncated, infos = env.step(env.action_space.sample())
```
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from pool_env.batch import assemble_infos, merge_same_step_failures, validate_actions
from pool_env.commands import split_slots
from pool_env.daemon import security, space_wire, wire
from pool_env.daemon.observations import LeasedObservations
from pool_env.daemon.session import DaemonSession, Outcome
from pool_env.errors import SlotFailure, SpecError
from pool_env.frontend import (
    BatchedVectorEnv,
    autoreset_mode_of,
    call_results,
    check_options,
    check_sendable,
    reset_mask_of,
)
from pool_env.shm import leaf_value
from pool_env.spaces import leaves_of

__all__ = ["RemoteVectorEnv", "connect"]

_T = TypeVar("_T")


def connect(
    endpoint: str | Sequence[str],
    num_envs: int | Sequence[int] = 8,
    *,
    timeout: float = 30.0,
    handshake_timeout: float | None = None,
    server_key: str | None = None,
    client_secret_key: str | None = None,
    shared_memory: bool | None = None,
    autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
) -> RemoteVectorEnv:
    """Lease ``num_envs`` slots from the daemon at ``endpoint`` (or from each of several).

    Args:
        endpoint: ``ipc://PATH`` or ``tcp://HOST:PORT``, or a list of them.
        num_envs: slots in total (split as evenly as possible over the endpoints) or one count
            per endpoint.
        timeout: seconds without any sign of life from a daemon before a call fails.
        handshake_timeout: seconds to wait for the first answer (a CURVE refusal is silent);
            default ``min(timeout, 10)``, so ``connect(..., timeout=3)`` to a missing socket fails
            in about 3 s.
        server_key: the daemon's public key file (CURVE, needed for ``tcp://``).
        client_secret_key: this client's secret key file (CURVE).
        shared_memory: exchange arrays through the daemon's shared memory (default: on ``ipc://``).
        autoreset_mode: gymnasium's ``AutoresetMode`` for these slots (the daemon's workers follow
            each lease's own mode), as for :class:`~pool_env.PoolVectorEnv`.

    Raises:
        DaemonUnavailableError: a daemon did not answer (not running, unreachable, or refused us).
        VersionMismatchError: a daemon speaks another protocol version.
        LeaseError: a daemon has fewer free slots (the message says how many are free).
        SpecError: bad arguments, or daemons with different spaces.
    """
    mode = autoreset_mode_of(autoreset_mode)
    endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
    if not endpoints:
        raise SpecError("endpoint: give at least one")
    if isinstance(num_envs, int | np.integer):
        if num_envs < len(endpoints):
            raise SpecError(f"num_envs: at least one per endpoint ({len(endpoints)}), got {num_envs}")
        counts = [len(group) for group in split_slots(int(num_envs), len(endpoints))]
    else:
        counts = [int(n) for n in num_envs]
        if len(counts) != len(endpoints) or any(n < 1 for n in counts):
            raise SpecError("num_envs: one positive count per endpoint")
    curve = security.client_keys(server_key, client_secret_key)
    sessions: list[DaemonSession] = []
    try:
        for address, count in zip(endpoints, counts, strict=True):
            if address.startswith("tcp://") and curve is None:
                raise SpecError(f"endpoint: {address} needs CURVE keys (server_key= and client_secret_key=)")
            sessions.append(DaemonSession(address, count, timeout=timeout, handshake_timeout=handshake_timeout,
                                          curve=curve, shared_memory=shared_memory, autoreset=mode.value))  # fmt: skip
        return RemoteVectorEnv(sessions, mode)
    except BaseException:
        for session in sessions:
            session.close()
        raise


class RemoteVectorEnv(BatchedVectorEnv):
    """Slots leased from pool daemons, as one gymnasium vector env (see :func:`connect`)."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, sessions: list[DaemonSession], autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP) -> None:
        self.closed = True
        self.autoreset_mode = autoreset_mode
        first = sessions[0].hello
        single_obs, single_act = sessions[0].observation_space, sessions[0].action_space
        for session in sessions[1:]:
            if session.observation_space != single_obs or session.action_space != single_act:
                raise SpecError(f"endpoint: {session.endpoint} serves other spaces than {sessions[0].endpoint}")
        self._sessions = sessions
        self._offsets = list(np.cumsum([0] + [s.num_envs for s in sessions])[:-1].tolist())
        self.num_envs = sum(s.num_envs for s in sessions)
        self.single_observation_space = single_obs
        self.single_action_space = single_act
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**first.get("metadata", {}), "autoreset_mode": autoreset_mode}
        self.render_mode = first.get("render_mode")
        self.spec = wire.env_spec_from_wire(first.get("env_spec"), self.num_envs)  # as gymnasium.make_vec sets
        self._act_leaves = leaves_of(self.single_action_space)
        self._pending: dict[int, int] | None = None  # session index -> request id still unanswered
        self._pending_op: str | None = None  # "reset", "step", "call" or "set_attr" while pending
        self._call_replies: dict[int, tuple[dict[int, Any], dict[int, SlotFailure]]] = {}
        self._reset_chosen: list[int] = []
        self._outcomes: dict[int, Outcome] = {}
        self._was_reset = False
        self._obs = LeasedObservations(self.single_observation_space, self.num_envs)
        self._act_parts = [leaf_value(self.single_action_space, leaf.path) for leaf in self._act_leaves]
        self._restarts: dict[int, int] = {}
        self._last_slot_infos: dict[int, Any] = {}
        self.closed = False

    # -- gymnasium API ----------------------------------------------------------------------

    def reset_async(
        self, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> None:
        """Start :meth:`reset`; collect it with :meth:`reset_wait` (as ``AsyncVectorEnv``)."""
        self._check_idle("reset_async")
        options = dict(options) if options is not None else None
        seeds = self._seed_list(seed)
        indices = list(range(self.num_envs))
        if options is not None and "reset_mask" in options:
            indices = np.flatnonzero(reset_mask_of(options, self.num_envs)).tolist()
            seeds = [seeds[i] for i in indices]
        self._send_reset(indices, seeds, options)

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        """Wait for the reset started by :meth:`reset_async`: ``(observations, infos)``.

        Raises:
            NoPendingCallError: no :meth:`reset_async` before.
            StepTimeoutError: ``timeout`` passed (the reset stays pending: call again).
        """
        self._check_pending("reset")
        slot_infos, errors = self._collect(timeout, step=False)
        if len(self._reset_chosen) == self.num_envs:
            self._was_reset = True
        self._track_reset(self._reset_chosen)
        return self._observations(), self._assemble(slot_infos, errors)

    def reset_envs(
        self, indices: Sequence[int], seeds: Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset only the slots in ``indices``; the others keep their episodes untouched."""
        self._send_reset(indices, seeds, options)
        return self.reset_wait()

    def _send_reset(
        self, indices: Sequence[int], seeds: Sequence[int | None] | None, options: dict[str, Any] | None
    ) -> None:
        chosen, chosen_seeds = self._reset_envs_arguments(indices, seeds)
        check_options(options, network=True)
        seed_of = dict(zip(chosen, chosen_seeds, strict=True))
        pending = {}
        for k, session in enumerate(self._sessions):
            offset = self._offsets[k]
            positions = [i - offset for i in chosen if offset <= i < offset + session.num_envs]
            if positions:
                pending[k] = session.send_reset(positions, [seed_of[offset + p] for p in positions], options)
        self._pending, self._pending_op, self._outcomes, self._reset_chosen = pending, "reset", {}, chosen

    def step_async(self, actions: Any) -> None:
        """Validate ``actions`` and send each daemon its share.

        Raises:
            InvalidActionError: wrong structure, shape or dtype, or values outside the space.
            AlreadyPendingError, ClosedError, UsageError: wrong call order.
        """
        self._check_can_step()
        arrays = validate_actions(actions, self._act_leaves, self.single_action_space, self.num_envs)
        for i, leaf in enumerate(self._act_leaves):
            if leaf.by_message:  # no fixed shape: plain values in the request's header
                arrays[i] = [space_wire.to_plain(self._act_parts[i], value) for value in arrays[i]]
                where = "".join(f"[{key!r}]" for key in leaf.path)
                check_sendable(arrays[i], f"actions{where}", network=True)
        pending = {}
        for k, session in enumerate(self._sessions):
            rows = slice(self._offsets[k], self._offsets[k] + session.num_envs)
            pending[k] = session.send_step(
                [a[rows] if isinstance(a, list) else np.ascontiguousarray(a[rows]) for a in arrays]
            )
        self._pending, self._pending_op, self._outcomes = pending, "step", {}

    def step_wait(self, timeout: float | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Wait for the pending step (at most ``timeout`` seconds, if given).

        Raises:
            StepTimeoutError: ``timeout`` passed; the step stays pending (call again).
            NoPendingCallError: no ``step_async`` before.
            DaemonUnavailableError: a daemon stopped answering.
        """
        self._check_pending("step")
        reward = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        slot_infos, errors = self._collect(timeout, step=True, flags=(reward, terminated, truncated))
        if errors and self.autoreset_mode is AutoresetMode.SAME_STEP:
            # Failed slots kept their last valid observation in self._obs; reset them now.
            finals = {i: self._obs.slot(i) for i in errors}
            _, reset_infos = self.reset_envs(sorted(errors))
            del reset_infos  # per-slot reset infos are kept by _collect in self._last_slot_infos
            merge_same_step_failures(slot_infos, errors, lambda i: self._restarts.get(i, 0), finals.__getitem__,
                                     self._last_slot_infos)  # fmt: skip
        self._track_step(terminated, truncated)
        return self._observations(), reward, terminated, truncated, self._assemble(slot_infos, errors)

    def call_async(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Start :meth:`call` on every daemon; collect the results with :meth:`call_wait`.

        Raises:
            CodecError: an argument that cannot cross to a daemon (a ``TypeError`` naming it: only
                plain data, no objects of a class); nothing is sent.
            AlreadyPendingError, ClosedError: wrong call order.
        """
        self._check_idle("call_async")
        _check_call_arguments(name, args, kwargs)
        pending = {k: session.send_call(name, list(args), kwargs) for k, session in enumerate(self._sessions)}
        self._pending, self._pending_op, self._call_replies = pending, "call", {}

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:
        """The results of the call started by :meth:`call_async`, one per slot.

        Raises:
            NoPendingCallError: no :meth:`call_async` before.
            StepTimeoutError: ``timeout`` passed (the call stays pending: call again).
            AttributeError, ...: what an env raised (builtin types kept), once every daemon answered.
            PoolEnvError: a slot's worker failed during the call (its error names the slot).
        """
        what = self._check_pending("call", "set_attr")
        values, failures = self._gather_calls(timeout)
        return call_results(values, failures, self.num_envs if what == "call" else 0, what)

    def _gather_calls(self, timeout: float | None) -> tuple[dict[int, Any], dict[int, SlotFailure]]:
        """Every daemon's answer to the pending call, by global slot: values and failures."""
        self._gather(timeout, lambda session, request_id, deadline: session.call_outcome(request_id, deadline),
                     self._call_replies, drain=True)  # fmt: skip
        values: dict[int, Any] = {}
        failures: dict[int, SlotFailure] = {}
        for k, (by_position, failed) in self._call_replies.items():
            values.update({self._offsets[k] + p: value for p, value in by_position.items()})
            failures.update({self._offsets[k] + p: failure for p, failure in failed.items()})
        return values, failures

    def _set_attr(self, name: str, values: list[Any]) -> None:
        for i, value in enumerate(values):
            check_sendable(value, f"set_attr({name!r}) value of slot {i}", network=True, path=(i,))
        pending = {}
        for k, session in enumerate(self._sessions):
            offset = self._offsets[k]
            pending[k] = session.send_set_attr(name, values[offset : offset + session.num_envs])
        self._pending, self._pending_op, self._call_replies = pending, "set_attr", {}
        self.call_wait()

    def call_slots(self, slots: Sequence[int], name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """:meth:`call` on the chosen slots only (SB3's ``env_method(..., indices=)``): one result
        per slot, in the order of ``slots``; the other slots' envs are not touched.

        Raises:
            ValueError: a slot out of range.
            CodecError, AttributeError, ...: as :meth:`call`.
            PoolEnvError: a slot's worker failed during the call.
        """
        self._check_idle("call_slots")
        chosen = [int(s) for s in slots]
        _check_call_arguments(name, args, kwargs)
        return self._call_on(
            chosen, lambda session, _, positions: session.send_call(name, list(args), kwargs, positions), "call"
        )

    def set_slots_attr(self, slots: Sequence[int], name: str, values: Sequence[Any]) -> None:
        """:meth:`set_attr` on the chosen slots only: ``values[k]`` goes to ``slots[k]``.

        Raises:
            ValueError: ``values`` and ``slots`` differ in length, or a slot out of range.
            CodecError: a value that cannot cross to a daemon (a ``TypeError`` naming it).
        """
        self._check_idle("set_slots_attr")
        chosen = [int(s) for s in slots]
        if len(values) != len(chosen):
            raise ValueError(f"set_slots_attr: {len(values)} values for {len(chosen)} slots")
        for i, value in enumerate(values):
            check_sendable(value, f"set_attr({name!r}) value of slot {chosen[i]}", network=True, path=(i,))
        value_of = dict(zip(chosen, values, strict=True))

        def send(session: DaemonSession, offset: int, positions: list[int]) -> int:
            return session.send_set_attr(name, [value_of[offset + p] for p in positions], positions)

        self._call_on(chosen, send, "set_attr")

    def _call_on(
        self, slots: list[int], send: Callable[[DaemonSession, int, list[int]], int], what: str
    ) -> tuple[Any, ...]:
        """Send each daemon its share of ``slots`` (``send(session, offset, positions)``), wait for
        all of them; the results in the order of ``slots``."""
        bad = [s for s in slots if not 0 <= s < self.num_envs]
        if bad:
            raise ValueError(f"{what}: slot {bad[0]} out of range 0..{self.num_envs - 1}")
        pending = {}
        for k, session in enumerate(self._sessions):
            offset = self._offsets[k]
            positions = sorted({s - offset for s in slots if offset <= s < offset + session.num_envs})
            if positions:
                pending[k] = send(session, offset, positions)
        self._pending, self._pending_op, self._call_replies = pending, what, {}
        values, failures = self._gather_calls(None)
        call_results(values, failures, 0, what)
        return tuple(values.get(slot) for slot in slots)

    def close_extras(self, **kwargs: Any) -> None:
        """Release the leases and close the connections (bounded time, idempotent)."""
        self._pending = None
        for session in self._sessions:
            session.close()

    def __repr__(self) -> str:
        where = ", ".join(s.endpoint for s in getattr(self, "_sessions", []))
        return f"RemoteVectorEnv([{where}], num_envs={getattr(self, 'num_envs', '?')})"

    # -- observability ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Each daemon's status document (workers, leases, counters, slot failures by kind) and this env's
        slots; ``counters`` and ``error_kinds`` summed over the daemons (the whole pools', not only this
        env's slots)."""
        self._check_idle("stats")
        daemons = []
        for session in self._sessions:
            daemons.append({**session.status(), "leased_slots": session.slots})
        return {
            "num_envs": self.num_envs,
            "daemons": daemons,
            "workers": [w for d in daemons for w in d["workers"]],
            "counters": {k: sum(d["counters"].get(k, 0) for d in daemons) for d in daemons for k in d["counters"]},
            "error_kinds": dict(sum((Counter(d.get("error_kinds", {})) for d in daemons), Counter())),
        }

    # -- internals --------------------------------------------------------------------------

    def _collect(
        self, timeout: float | None, step: bool, flags: tuple[np.ndarray, ...] = ()
    ) -> tuple[dict[int, Any], dict[int, SlotFailure]]:
        """Wait for every outstanding outcome, then copy it into the batch; per-slot infos and errors."""
        self._gather(timeout, lambda session, request_id, deadline: session.outcome(request_id, deadline, step),
                     self._outcomes)  # fmt: skip
        slot_infos: dict[int, Any] = {}
        errors: dict[int, SlotFailure] = {}
        for k, outcome in sorted(self._outcomes.items()):
            self._apply(k, outcome, step, flags, slot_infos, errors)
        self._last_slot_infos = slot_infos
        return slot_infos, errors

    def _gather(
        self, timeout: float | None, fetch: Callable[[DaemonSession, int, float | None], _T], into: dict[int, _T],
        drain: bool = False,
    ) -> None:  # fmt: skip
        """Wait for every outstanding reply (``fetch``: one session's) into ``into``. ``drain``: an
        error from one daemon is raised once the others answered too (their leases are idle again).

        Raises:
            StepTimeoutError: ``timeout`` passed; what is still outstanding stays pending (wait again).
        """
        assert self._pending is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        first_error: Exception | None = None
        try:
            for k, request_id in list(self._pending.items()):
                try:
                    into[k] = fetch(self._sessions[k], request_id, deadline)
                except TimeoutError:
                    raise
                except Exception as exc:
                    if not drain:
                        raise
                    first_error = first_error or exc
                del self._pending[k]
        except TimeoutError:
            raise  # still pending
        except BaseException:
            self._pending = self._pending_op = None
            raise
        self._pending = self._pending_op = None
        if first_error is not None:
            raise first_error

    def _assemble(self, slot_infos: dict[int, Any], errors: dict[int, SlotFailure]) -> dict[str, Any]:
        return assemble_infos(slot_infos, errors, self.num_envs, lambda i: self._restarts.get(i, 0))

    def _apply(
        self,
        k: int,
        outcome: Outcome,
        step: bool,
        flags: tuple[np.ndarray, ...],
        infos: dict[int, Any],
        errors: dict[int, SlotFailure],
    ) -> None:
        offset = self._offsets[k]
        rows = slice(offset, offset + self._sessions[k].num_envs)
        infos.update({offset + position: info for position, info in outcome.infos.items()})
        errors.update({offset + position: failure for position, failure in outcome.errors.items()})
        self._restarts.update({offset + position: count for position, count in outcome.restarts.items()})
        self._obs.update(offset, outcome.obs, {offset + position for position in outcome.errors} if step else ())
        if step:
            assert outcome.reward is not None and outcome.terminated is not None and outcome.truncated is not None
            for target, value in zip(flags, (outcome.reward, outcome.terminated, outcome.truncated), strict=True):
                target[rows] = value

    def _observations(self) -> Any:
        return self._obs.batch()


def _check_call_arguments(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Refuse (a ``CodecError`` naming it) an argument a daemon does not take: only plain data."""
    for i, arg in enumerate(args):
        check_sendable(arg, f"call({name!r}) argument {i}", network=True, path=(i,))
    for key, value in kwargs.items():
        check_sendable(value, f"call({name!r}) keyword {key!r}", network=True, path=(key,))
