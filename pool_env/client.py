"""``pool_env.connect``: a gymnasium vector env over slots leased from one or several daemons.

The returned :class:`RemoteVectorEnv` has the interface of
:class:`~pool_env.vector_env.PoolVectorEnv` (``reset``, ``step``, ``step_async``/``step_wait``,
``reset_envs``, ``stats``, ``close``, context manager) and the same semantics: NEXT_STEP
autoreset, failed slots truncated with ``infos["error"]``, the same errors for wrong actions
and wrong call order. With several endpoints, the slots of each daemon follow each other in
the order the endpoints are given; every request goes to all daemons before any reply is
awaited, so the daemons step in parallel.

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
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from pool_env.batch import assemble_infos, merge_same_step_failures, validate_actions
from pool_env.daemon import security
from pool_env.daemon.session import CurveClientKeys, DaemonSession, Outcome
from pool_env.errors import NoPendingCallError, SlotFailure, SpecError
from pool_env.frontend import BatchedVectorEnv, autoreset_mode_of, check_options, reset_mask_of
from pool_env.shm import build_structure
from pool_env.spaces import leaves_of, structure_of_batch, tree_of

__all__ = ["RemoteVectorEnv", "connect"]


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
    if isinstance(num_envs, int):
        if num_envs < len(endpoints):
            raise SpecError(f"num_envs: at least one per endpoint ({len(endpoints)}), got {num_envs}")
        base, extra = divmod(num_envs, len(endpoints))
        counts = [base + (1 if i < extra else 0) for i in range(len(endpoints))]
    else:
        counts = [int(n) for n in num_envs]
        if len(counts) != len(endpoints) or any(n < 1 for n in counts):
            raise SpecError("num_envs: one positive count per endpoint")
    curve = None
    if server_key is not None or client_secret_key is not None:
        if server_key is None or client_secret_key is None:
            raise SpecError("server_key and client_secret_key go together (CURVE)")
        public, secret = security.load_secret_key(client_secret_key)
        curve = CurveClientKeys(security.load_public_key(server_key), public, secret)
    sessions: list[DaemonSession] = []
    try:
        for address, count in zip(endpoints, counts, strict=True):
            if address.startswith("tcp://") and curve is None:
                raise SpecError(f"endpoint: {address} needs CURVE keys (server_key= and client_secret_key=)")
            sessions.append(
                DaemonSession(
                    address,
                    count,
                    timeout=timeout,
                    handshake_timeout=handshake_timeout,
                    curve=curve,
                    shared_memory=shared_memory,
                    autoreset=mode.value,
                )
            )
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
        self._obs_leaves = leaves_of(self.single_observation_space)
        self._obs_tree = tree_of(self.single_observation_space)
        self._act_leaves = leaves_of(self.single_action_space)
        self._pending: dict[int, int] | None = None  # session index -> request id still unanswered
        self._outcomes: dict[int, Outcome] = {}
        self._was_reset = False
        self._obs = [np.zeros((self.num_envs, *leaf.shape), dtype=leaf.dtype) for leaf in self._obs_leaves]
        self._restarts: dict[int, int] = {}
        self._last_slot_infos: dict[int, Any] = {}
        self.closed = False

    # -- gymnasium API ----------------------------------------------------------------------

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every slot (seed ``s`` gives slot ``i`` the seed ``s + i``, as gymnasium does).

        ``options["reset_mask"]`` (a bool array) resets only the masked slots.
        """
        self._check_idle("reset")
        options = dict(options) if options is not None else None
        seeds = self._seed_list(seed)
        if options is not None and "reset_mask" in options:
            indices = np.flatnonzero(reset_mask_of(options, self.num_envs)).tolist()
            return self.reset_envs(indices, seeds=[seeds[i] for i in indices], options=options)
        return self.reset_envs(list(range(self.num_envs)), seeds, options)

    def reset_envs(
        self, indices: Sequence[int], seeds: Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset only the slots in ``indices``; the others keep their episodes untouched."""
        chosen, chosen_seeds = self._reset_envs_arguments(indices, seeds)
        check_options(options, network=True)
        seed_of = dict(zip(chosen, chosen_seeds, strict=True))
        pending = {}
        for k, session in enumerate(self._sessions):
            offset = self._offsets[k]
            positions = [i - offset for i in chosen if offset <= i < offset + session.num_envs]
            if positions:
                pending[k] = session.send_reset(positions, [seed_of[offset + p] for p in positions], options)
        self._pending, self._outcomes = pending, {}
        slot_infos, errors = self._collect(None, step=False)
        if len(chosen) == self.num_envs:
            self._was_reset = True
        self._track_reset(chosen)
        return self._observations(), self._assemble(slot_infos, errors)

    def step_async(self, actions: Any) -> None:
        """Validate ``actions`` and send each daemon its share.

        Raises:
            InvalidActionError: wrong structure, shape or dtype, or values outside the space.
            AlreadyPendingError, ClosedError, UsageError: wrong call order.
        """
        self._check_can_step()
        arrays = validate_actions(actions, self._act_leaves, self.single_action_space, self.num_envs)
        pending = {}
        for k, session in enumerate(self._sessions):
            rows = slice(self._offsets[k], self._offsets[k] + session.num_envs)
            pending[k] = session.send_step([np.ascontiguousarray(a[rows]) for a in arrays])
        self._pending, self._outcomes = pending, {}

    def step_wait(self, timeout: float | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Wait for the pending step (at most ``timeout`` seconds, if given).

        Raises:
            StepTimeoutError: ``timeout`` passed; the step stays pending (call again).
            NoPendingCallError: no ``step_async`` before.
            DaemonUnavailableError: a daemon stopped answering.
        """
        self._check_open()
        if self._pending is None:
            raise NoPendingCallError("step_wait() without a pending step_async()", "step")
        reward = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        slot_infos, errors = self._collect(timeout, step=True, flags=(reward, terminated, truncated))
        if errors and self.autoreset_mode is AutoresetMode.SAME_STEP:
            # Failed slots kept their last valid observation in self._obs; reset them now.
            finals = {i: build_structure(self._obs_leaves, [leaf[i].copy() for leaf in self._obs], self._obs_tree)
                      for i in errors}  # fmt: skip
            _, reset_infos = self.reset_envs(sorted(errors))
            del reset_infos  # per-slot reset infos are kept by _collect in self._last_slot_infos
            merge_same_step_failures(slot_infos, errors, lambda i: self._restarts.get(i, 0), finals.__getitem__,
                                     self._last_slot_infos)  # fmt: skip
        self._track_step(terminated, truncated)
        return self._observations(), reward, terminated, truncated, self._assemble(slot_infos, errors)

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
        assert self._pending is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for k, request_id in list(self._pending.items()):
                self._outcomes[k] = self._sessions[k].outcome(request_id, deadline, step)
                del self._pending[k]
        except TimeoutError:
            raise  # still pending: call step_wait again
        except BaseException:
            self._pending = None
            raise
        self._pending = None
        slot_infos: dict[int, Any] = {}
        errors: dict[int, SlotFailure] = {}
        for k, outcome in sorted(self._outcomes.items()):
            self._apply(k, outcome, step, flags, slot_infos, errors)
        self._last_slot_infos = slot_infos
        return slot_infos, errors

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
        # A failed slot keeps its previous observation, even if its worker wrote a new one
        # before it died or hung.
        failed = [offset + position for position in outcome.errors] if step else []
        kept = [target[failed].copy() for target in self._obs]
        for target, value in zip(self._obs, outcome.obs, strict=True):
            target[rows] = value
        for target, previous in zip(self._obs, kept, strict=True):
            target[failed] = previous
        if step:
            assert outcome.reward is not None and outcome.terminated is not None and outcome.truncated is not None
            for target, value in zip(flags, (outcome.reward, outcome.terminated, outcome.truncated), strict=True):
                target[rows] = value

    def _observations(self) -> Any:
        return structure_of_batch(self._obs_leaves, [array.copy() for array in self._obs], self._obs_tree)
