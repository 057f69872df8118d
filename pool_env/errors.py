"""The pool_env error tree, the typed kinds of the failures the pool survives, and the one place
where an error becomes wire data and back.

```
PoolEnvError
├── UsageError                     wrong call order or arguments (the pool is unaffected)
│   ├── ClosedError                a call on a closed pool                 (also gymnasium's ClosedEnvironmentError)
│   ├── AlreadyPendingError        step_async while a call is pending      (also gymnasium's AlreadyPendingCallError)
│   ├── NoPendingCallError         step_wait without step_async            (also gymnasium's NoAsyncCallError)
│   ├── InvalidActionError         actions of the wrong shape, dtype or outside the space (also ValueError and
│   │                              gymnasium's InvalidAction)
│   ├── InvalidSeedError           a seed list of the wrong length (negative seeds: gymnasium's own Error)
│   ├── SpecError                  a bad env spec or pool configuration (names the field; also ValueError)
│   └── LeaseError                 a daemon refused or does not know a lease (names what is free)
├── WorkerError                    a worker could not be started or did something it must not
│   ├── WorkerStartError           workers did not come up (exit code / stderr tail)
│   └── PoolGaveUpError            every worker of the pool was given up on (last cause)
├── CodecError                     a value that cannot cross a process boundary (names where it sits; also TypeError)
├── ProtocolError                  a malformed or oversized message on a pool_env wire
│   └── VersionMismatchError       a daemon and its client speak different protocol versions
├── TransportError                 talking to a server failed in a way the pool cannot heal
│   ├── HttpStatusError            4xx from the env server: a configuration error (bad token, bad request)
│   │   └── QuotaExceededError     429: the token's server step quota (or the pool's max_server_steps) is spent
│   ├── DaemonUnavailableError     a pool daemon did not answer in time (gone, unreachable or refused us)
│   └── RetriesExhaustedError      an HTTP worker gave up on a request (retries spent); becomes infos["error"]
│       └── CallTimeoutError       an HTTP worker's reset/step call ran out of its call_timeout; ditto
├── EnvCreationError               the env could not be created (unknown id, import string, exception)
│   └── SpaceMismatchError         an env declares other spaces than the pool's
├── EnvError                       a user's env broke its contract or keeps failing (names the slot)
│   ├── InvalidEnvReturnError      a return that breaks the declared spaces/types (also ValueError)
│   ├── EnvRaisedError             the env raised and on_env_error="raise" (remote traceback)
│   └── EnvFailingError            a slot's env raised env_failure_limit times in a row
├── SharedMemoryError              /dev/shm cannot hold the pool's buffers (size needed, --shm-size; also OSError)
└── StepTimeoutError               the whole pool missed a deadline the caller asked for (step_wait(timeout))
```

Failures the pool survives (a worker crash, a connection reset, a server episode error) are
*not* raised: they become a :class:`SlotFailure` per affected slot — ``infos["error"]`` (text for
people), ``infos["error_kind"]`` (an :class:`ErrorKind`) and ``infos["step_fate"]`` (a
:class:`StepFate`) — and counters by kind in ``stats()``. Code reads the enums, never the text.

Errors cross a wire only through :func:`to_wire` and :func:`from_wire` (the worker → coordinator
``fatal`` message and the daemon → client error reply alike), as httpx maps errors in one place
per boundary: msgpack-safe values, the class kept with its fields, never pickle; a class name the
receiver does not know becomes its nearest known base. Every class also survives pickling (tested).

This module imports nothing heavy: HTTP workers import it and must not load gymnasium (≈ 0.2 s
and ≈ 20 MB per worker). The four classes that also derive from gymnasium's errors
(:class:`ClosedError`, :class:`AlreadyPendingError`, :class:`NoPendingCallError`,
:class:`InvalidActionError`) are therefore made on first access (PEP 562 module ``__getattr__``),
which imports ``gymnasium.error``; they are then stored in the module globals, so every access
(and unpickling, and :func:`from_wire`) gets the same class object.
"""

from __future__ import annotations

import builtins
import enum
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

__all__ = [
    "AlreadyPendingError",
    "CallTimeoutError",
    "ClosedError",
    "CodecError",
    "DaemonUnavailableError",
    "EnvCreationError",
    "EnvError",
    "EnvFailingError",
    "EnvRaisedError",
    "ErrorKind",
    "HttpStatusError",
    "InvalidActionError",
    "InvalidEnvReturnError",
    "InvalidSeedError",
    "LeaseError",
    "NoPendingCallError",
    "PoolEnvError",
    "PoolGaveUpError",
    "ProtocolError",
    "QuotaExceededError",
    "RetriesExhaustedError",
    "SharedMemoryError",
    "SlotFailure",
    "SpaceMismatchError",
    "SpecError",
    "StepFate",
    "StepTimeoutError",
    "TransportError",
    "UsageError",
    "VersionMismatchError",
    "WorkerError",
    "WorkerStartError",
    "from_wire",
    "to_wire",
]


# -- failures the pool survives: typed data ---------------------------------------------------


class ErrorKind(enum.StrEnum):
    """Why a slot failed: the closed set of every per-slot failure the pool reports.

    The values are what ``infos["error_kind"]`` holds (a ``StrEnum``: compare with members or
    with their strings) and the keys of ``stats()["error_kinds"]``.
    """

    WORKER_DIED = "worker_died"
    """The slot's worker process exited (killed by a signal, crashed) or became unreachable."""
    WORKER_HUNG = "worker_hung"
    """The worker did not answer within ``step_timeout``, froze (no heartbeat for ``freeze_timeout``) or
    did not get ready within ``start_timeout``; killed."""
    WORKER_RESTARTING = "worker_restarting"
    """The slot's worker is being replaced (back-off after a failure); the command was not sent."""
    GAVE_UP = "gave_up"
    """The pool gave up on the slot's worker (too many failures within ``flap_window``)."""
    EPISODE_LOST = "episode_lost"
    """The slot's episode died with a worker that failed during another command; reported on its next step."""
    PROTOCOL = "protocol"
    """The worker sent a malformed message; it was replaced."""
    ENV_RAISED = "env_raised"
    """A local env raised inside ``reset``/``step`` (the text has the traceback)."""
    INVALID_ENV_RETURN = "invalid_env_return"
    """A local env returned what its contract forbids (an observation of another shape, a non-scalar reward)."""
    SERVER_EPISODE_ERROR = "server_episode_error"
    """The env server reported an error for this episode (a per-entry error payload)."""
    EPISODE_GONE = "episode_gone"
    """The env server no longer knows the episode (404: it restarted or expired it)."""
    SERVER_5XX = "server_5xx"
    """The env server kept answering 5xx until the retries were spent."""
    TRANSPORT = "transport"
    """Connecting to or reading from the env server kept failing (refused, reset, timed out), retries spent."""
    BAD_RESPONSE = "bad_response"
    """The env server's answers kept being unreadable (not JSON, malformed) until the retries were spent,
    or its answer for this episode was (a missing or NaN observation, a bad reward)."""
    CALL_TIMEOUT = "call_timeout"
    """The worker's call ran out of ``call_timeout`` before the server answered."""
    LOST_RESPONSE = "lost_response"
    """The step's answer was lost on the way back (its fate says whether the server applied it)."""


class StepFate(enum.StrEnum):
    """What became of a failed slot's step (for a reset: of the reset; no step was taken).

    ``infos["step_fate"]`` holds it; accounting (quotas, the chaos ledger) reads it.
    """

    APPLIED = "applied"
    """The env applied the step exactly once; only its result was lost."""
    NOT_APPLIED = "not_applied"
    """The env did not apply the step (never sent, refused, or known not applied)."""
    UNKNOWN = "unknown"
    """The step may or may not have been applied (the worker died or the server stopped answering mid-step)."""


@dataclass(frozen=True, slots=True)
class SlotFailure:
    """One slot's failure: its kind, the fate of its step, and a message for people.

    Attributes:
        kind: why the slot failed.
        fate: whether the env applied the slot's step.
        message: what happened, for people (never parsed).
    """

    kind: ErrorKind
    fate: StepFate
    message: str

    def to_wire(self) -> list[str]:
        """``[kind, fate, message]``: plain strings for msgpack."""
        return [self.kind.value, self.fate.value, self.message]

    @classmethod
    def from_wire(cls, data: Any) -> SlotFailure:
        """Inverse of :meth:`to_wire`.

        Raises:
            ProtocolError: not a ``[kind, fate, message]`` triple of known values.
        """
        try:
            kind, fate, message = data
            return cls(ErrorKind(kind), StepFate(fate), str(message))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"bad slot failure on the wire: {data!r} ({exc})") from exc


# -- the tree ---------------------------------------------------------------------------------


class PoolEnvError(Exception):
    """Root of every error raised by pool_env.

    ``_wire_args`` names the constructor's arguments (``"message"`` is ``str(self)``, the others
    attributes of the same name): pickling and :func:`to_wire` rebuild an error from them.
    """

    _wire_args: ClassVar[tuple[str, ...]] = ("message",)

    def wire_fields(self) -> dict[str, Any]:
        """The constructor's arguments by name (see ``_wire_args``)."""
        return {name: str(self) if name == "message" else getattr(self, name) for name in self._wire_args}

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(self.wire_fields().values()), self.__dict__ or None)


class UsageError(PoolEnvError):
    """The caller used the API wrongly; nothing was sent and the pool still works."""


class _CallStateError(UsageError):
    """Base of :class:`AlreadyPendingError` and :class:`NoPendingCallError`: a message and the call's ``name``."""

    _wire_args: ClassVar[tuple[str, ...]] = ("message", "name")
    name: str

    def __init__(self, message: str, name: str = "step") -> None:
        UsageError.__init__(self, message)
        self.name = name


class _ClosedError(UsageError):
    """Base of :class:`ClosedError` (without gymnasium)."""


class _InvalidActionError(UsageError, ValueError):
    """Base of :class:`InvalidActionError` (without gymnasium)."""


_GYMNASIUM_ERRORS = ("AlreadyPendingError", "ClosedError", "InvalidActionError", "NoPendingCallError")
_gymnasium_lock = threading.Lock()


def _define_gymnasium_errors() -> None:
    """Make the classes that also derive from gymnasium's errors (imports gymnasium)."""
    from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, InvalidAction, NoAsyncCallError

    class ClosedError(_ClosedError, ClosedEnvironmentError):
        """The pool (or client) is closed."""

    class AlreadyPendingError(_CallStateError, AlreadyPendingCallError):
        """``step_async``/``reset`` was called while another call is still pending."""

    class NoPendingCallError(_CallStateError, NoAsyncCallError):
        """``step_wait`` was called without a pending ``step_async``."""

    class InvalidActionError(_InvalidActionError, InvalidAction):
        """Actions of the wrong shape or dtype, or outside the action space."""

    for cls in (ClosedError, AlreadyPendingError, NoPendingCallError, InvalidActionError):
        cls.__qualname__ = cls.__name__  # pickle finds classes by module and qualname
        globals()[cls.__name__] = cls


def _gymnasium_error(name: str) -> Any:
    """One of the gymnasium-derived classes, made (once, thread-safely) on first use."""
    with _gymnasium_lock:
        if name not in globals():
            _define_gymnasium_errors()
    return globals()[name]


if TYPE_CHECKING:
    from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, InvalidAction, NoAsyncCallError

    class ClosedError(_ClosedError, ClosedEnvironmentError):
        """The pool (or client) is closed."""

    class AlreadyPendingError(_CallStateError, AlreadyPendingCallError):
        """``step_async``/``reset`` was called while another call is still pending."""

    class NoPendingCallError(_CallStateError, NoAsyncCallError):
        """``step_wait`` was called without a pending ``step_async``."""

    class InvalidActionError(_InvalidActionError, InvalidAction):
        """Actions of the wrong shape or dtype, or outside the action space."""

else:

    def __getattr__(name: str) -> Any:
        if name in _GYMNASIUM_ERRORS:
            return _gymnasium_error(name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*globals(), *_GYMNASIUM_ERRORS})


class InvalidSeedError(UsageError, ValueError):
    """A seed list whose length is not ``num_envs`` (a ``ValueError``, as in ``SyncVectorEnv``)."""


class SpecError(UsageError, ValueError):
    """An env spec or pool option is invalid; the message names the field."""


class LeaseError(UsageError):
    """A pool daemon refused a lease (not enough free slots) or does not know the lease id."""


class WorkerError(PoolEnvError):
    """A worker misbehaved in a way that is not a per-slot failure."""


class WorkerStartError(WorkerError):
    """Workers could not be started; carries the exit code and the tail of stderr when known."""


class CodecError(PoolEnvError, TypeError):
    """A value that cannot cross a process boundary (names where it sits and its type).

    Attributes:
        path: the keys and indices leading to the value (``("event", 0)``).
    """

    _wire_args: ClassVar[tuple[str, ...]] = ("message", "path")
    path: tuple[Any, ...]

    def __init__(self, message: str, path: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.path = tuple(path)


class ProtocolError(PoolEnvError):
    """A malformed, oversized or unexpected message on a pool_env wire."""


class VersionMismatchError(ProtocolError):
    """The daemon speaks another protocol version than this client.

    Attributes:
        client_version: the version this client speaks.
        server_version: the version the daemon speaks.
        endpoint: the daemon's address ("" when unknown).
    """

    _wire_args = ("client_version", "server_version", "endpoint")

    def __init__(self, client_version: int, server_version: int, endpoint: str = "") -> None:
        super().__init__(
            f"protocol version mismatch{f' with the daemon at {endpoint}' if endpoint else ''}: "
            f"this client speaks version {client_version}, the daemon speaks version {server_version}; "
            "install the same pool_env version on both sides"
        )
        self.client_version = client_version
        self.server_version = server_version
        self.endpoint = endpoint


class TransportError(PoolEnvError):
    """Talking to a remote server failed in a way the pool cannot heal by itself."""


class DaemonUnavailableError(TransportError):
    """A pool daemon did not answer within the client's timeout: it is gone, unreachable, or
    (with CURVE) it refused this client's key. The client's socket was recreated."""


class RetriesExhaustedError(TransportError):
    """Every retry of an HTTP request failed; ``last_error`` describes the final failure.

    The HTTP backend never lets this reach the trainer: it turns it into per-slot failures whose
    kind is ``kind``, the kind of the final failure.

    Attributes:
        retries: retries made.
        last_error: the final failure, for people.
        kind: the final failure's kind (:attr:`ErrorKind.SERVER_5XX`, ``TRANSPORT``, ``BAD_RESPONSE``).
    """

    _wire_args: ClassVar[tuple[str, ...]] = ("retries", "last_error", "kind")

    def __init__(self, retries: int, last_error: str, kind: ErrorKind | str = ErrorKind.TRANSPORT) -> None:
        super().__init__(f"gave up after {retries} retries; last error: {last_error}")
        self.retries = retries
        self.last_error = last_error
        self.kind = ErrorKind(kind)


class CallTimeoutError(RetriesExhaustedError):
    """An HTTP backend call (one worker's reset or step) ran out of ``HttpEnvSpec.call_timeout``.

    Raised instead of starting a request or a back-off that the deadline leaves no time for; like
    its base, it becomes per-slot failures (of kind :attr:`ErrorKind.CALL_TIMEOUT`) and never
    reaches the trainer.

    Attributes:
        call_timeout: the call's time budget in seconds.
        elapsed: seconds the call had run when it gave up.
        retries: retries made during the call, over all its requests.
        last_error: the last failure of the call, or what could not be started.
    """

    _wire_args = ("call_timeout", "elapsed", "retries", "last_error")

    def __init__(self, call_timeout: float, elapsed: float, retries: int, last_error: str) -> None:
        TransportError.__init__(
            self, f"gave up after {elapsed:.3g} s (call_timeout={call_timeout:g} s); last error: {last_error}"
        )
        self.call_timeout = call_timeout
        self.elapsed = elapsed
        self.retries = retries
        self.last_error = last_error
        self.kind = ErrorKind.CALL_TIMEOUT


class HttpStatusError(TransportError):
    """The env server answered 4xx: a configuration error, never retried.

    Attributes:
        status: the HTTP status code.
        detail: the server's ``detail`` field (FastAPI style), or the body text.
        url: the request URL.
    """

    _wire_args: ClassVar[tuple[str, ...]] = ("status", "detail", "url")

    def __init__(self, status: int, detail: str, url: str = "") -> None:
        super().__init__(f"env server answered HTTP {status} for {url or 'a request'}: {detail}")
        self.status = status
        self.detail = detail
        self.url = url


class QuotaExceededError(HttpStatusError):
    """The token's step quota on the env server is spent (HTTP 429), or the pool's own
    ``HttpEnvSpec.max_server_steps`` budget would be passed (then nothing was sent, ``url`` is empty).

    Never retried: one request per worker and call, the workers stay up (no retry storm, no
    restart); reset and close still work.

    Attributes:
        steps_used: steps counted against the quota (the server's count where it gives one, else
            the pool's), or None if unknown.
        limit: the quota (or budget), or None if unknown.
    """

    _wire_args: ClassVar[tuple[str, ...]] = ("detail", "url", "steps_used", "limit")

    def __init__(self, detail: str, url: str = "", steps_used: int | None = None, limit: int | None = None) -> None:
        super().__init__(429, detail, url)
        self.steps_used = steps_used
        self.limit = limit
        used = "?" if steps_used is None else f"{steps_used:,}"
        cap = "?" if limit is None else f"{limit:,}"
        source = f"env server ({url})" if url else "pool (HttpEnvSpec.max_server_steps)"
        Exception.__init__(
            self,
            f"server step quota spent: {used} of {cap} steps used, refused by the {source}: {detail}. "
            "Stop stepping with this token (reset/close still work) or use another token.",
        )


class EnvCreationError(PoolEnvError):
    """An env could not be created in a worker (unknown id, bad import string, constructor raised)."""


class SpaceMismatchError(EnvCreationError):
    """A worker's env declares an observation or action space other than the pool's.

    Every env of a pool must declare the same spaces, as gymnasium's ``AsyncVectorEnv`` checks
    at start-up: the batch arrays are laid out from them.
    """


class EnvError(PoolEnvError):
    """A user's env broke its declared contract or keeps failing.

    Attributes:
        slot: the pool slot whose env it is (``-1`` when unknown).
    """

    _wire_args = ("message", "slot")
    slot: int

    def __init__(self, message: str, slot: int = -1) -> None:
        super().__init__(message)
        self.slot = slot


class InvalidEnvReturnError(EnvError, ValueError):
    """``reset``/``step`` returned a value that breaks the env's declared contract: an observation
    of another shape or dtype than its space, a reward that is not a real scalar, a flag that is not
    a bool, an info that is not a dict. A bug in the env, never transient (``SyncVectorEnv`` raises
    ``ValueError`` for these); the message names the slot, the field, what was expected and what came.
    """


class EnvRaisedError(EnvError):
    """The env raised inside ``reset``/``step`` and the pool was built with ``on_env_error="raise"``
    (``AsyncVectorEnv``'s behaviour). The message holds the slot, worker pid, episode, step and the
    remote traceback."""


class EnvFailingError(EnvError):
    """A slot's env raised ``PoolOptions.env_failure_limit`` times in a row without one successful
    step: a deterministic bug, not bad luck. The message names the slot, the env and the last cause."""


class PoolGaveUpError(WorkerError):
    """Every worker of the pool was given up on (each failed ``flap_limit`` times within
    ``flap_window``): no step can return experience. The message names the env and the last cause."""


class SharedMemoryError(PoolEnvError, OSError):
    """``/dev/shm`` cannot hold the pool's buffers; the message names the size needed and the fix.

    Attributes:
        needed: bytes the segment needs.
        free: bytes free in the shared-memory file system when it failed (``-1`` if unknown).
    """

    _wire_args = ("message", "needed", "free")
    needed: int
    free: int

    def __init__(self, message: str, needed: int = 0, free: int = -1) -> None:
        PoolEnvError.__init__(self, message)
        self.needed = needed
        self.free = free


class StepTimeoutError(PoolEnvError, TimeoutError):
    """``step_wait(timeout=...)`` ran out before every worker answered.

    The pending call stays pending; call ``step_wait`` again to keep waiting.
    """


# -- the wire ---------------------------------------------------------------------------------

_WIRE_SAFE = (str, int, float, bool, type(None))
_UNSAFE = object()


def _wire_safe(value: Any) -> Any:
    """``value`` if msgpack carries it as is (a scalar, or a tuple/list of scalars as a list), else ``_UNSAFE``."""
    if isinstance(value, _WIRE_SAFE):
        return value
    if isinstance(value, tuple | list) and all(isinstance(item, _WIRE_SAFE) for item in value):
        return list(value)
    return _UNSAFE


def to_wire(exc: BaseException, traceback: str = "", *, builtin: bool = False) -> dict[str, Any]:
    """``exc`` as msgpack-safe data: its class, its bases up to the root, its message and fields.

    Args:
        exc: any exception; one outside our tree travels as a :class:`PoolEnvError` whose
            message names its type.
        traceback: the formatted remote traceback, shown to whoever raises it (default: the one a
            :func:`from_wire` noted on ``exc``, so it follows the error over the next wire too).
        builtin: an exception of a builtin type (``AttributeError``, ``ValueError``, ...) keeps its
            type (``"builtin": true``): what an env raised in ``call``, re-raised as
            ``AsyncVectorEnv`` does.

    Returns:
        ``{"class", "bases", "message", "fields"[, "builtin"][, "traceback"]}``; ``bases`` lists the
        class's ancestors inside the tree, nearest first, so a receiver that lacks the class can pick one.
    """
    traceback = traceback or _noted_traceback(exc)
    if builtin and type(exc).__module__ == "builtins" and isinstance(exc, Exception):
        data: dict[str, Any] = {"class": type(exc).__name__, "builtin": True, "bases": [], "message": str(exc),
                                "fields": {}}  # fmt: skip
    elif isinstance(exc, PoolEnvError):
        bases = [c.__name__ for c in type(exc).__mro__[1:] if issubclass(c, PoolEnvError) and c.__name__[0] != "_"]
        message = str(exc)
        fields = {k: v.value if isinstance(v, enum.Enum) else v for k, v in exc.wire_fields().items() if k != "message"}
        fields = {k: _wire_safe(v) for k, v in fields.items() if _wire_safe(v) is not _UNSAFE}
        data = {"class": type(exc).__name__, "bases": bases, "message": message, "fields": fields}
    else:
        data = {"class": "PoolEnvError", "bases": [], "message": f"{type(exc).__name__}: {exc}", "fields": {}}
    if traceback:
        data["traceback"] = traceback
    return data


_TRACEBACK_NOTE = "remote traceback:\n"


def _noted_traceback(exc: BaseException) -> str:
    """The remote traceback :func:`from_wire` noted on ``exc``, or ``""``."""
    notes = getattr(exc, "__notes__", None) or []
    return next((n[len(_TRACEBACK_NOTE) :] for n in notes if n.startswith(_TRACEBACK_NOTE)), "")


def _builtin_class(name: Any) -> type[Exception] | None:
    """The builtin exception type called ``name`` (``builtins`` only: nothing is imported)."""
    cls = getattr(builtins, name, None) if isinstance(name, str) else None
    return cls if isinstance(cls, type) and issubclass(cls, Exception) else None


def _known_class(name: Any) -> type[PoolEnvError] | None:
    """The class of our tree called ``name`` (never an import of a peer-named module)."""
    if not isinstance(name, str) or name not in __all__:
        return None
    cls = _gymnasium_error(name) if name in _GYMNASIUM_ERRORS else globals().get(name)
    return cls if isinstance(cls, type) and issubclass(cls, PoolEnvError) else None


def from_wire(data: Any) -> Exception:
    """The error :func:`to_wire` described, of the same class with the same fields.

    A class this side does not know (a newer peer's, or one outside the tree) becomes the
    nearest of its ``bases`` that can be made from the message alone, else :class:`PoolEnvError`;
    the message is kept. A builtin exception sent with ``builtin=True`` is its builtin type again
    (or a :class:`PoolEnvError` naming it, if the type cannot be made from a message). A remote
    traceback becomes a note on the error (PEP 678).

    Args:
        data: a map made by :func:`to_wire` (from a peer: any value is tolerated).
    """
    if not isinstance(data, dict):
        return PoolEnvError(f"an error the peer described badly: {data!r}")
    message = str(data.get("message", ""))
    raw_fields = data.get("fields")
    fields: dict[Any, Any] = raw_fields if isinstance(raw_fields, dict) else {}
    error: Exception | None = None
    cls = _known_class(data.get("class"))
    builtin = _builtin_class(data.get("class")) if data.get("builtin") is True else None
    if builtin is not None:
        try:
            error = builtin(message)
        except Exception:  # a builtin type with another constructor (UnicodeDecodeError, ...)
            error = PoolEnvError(f"{data['class']}: {message}")
    elif cls is not None:
        try:
            error = cls(*[message if name == "message" else fields[name] for name in cls._wire_args])
        except (KeyError, TypeError, ValueError):
            error = None
    if error is None:
        raw_bases = data.get("bases")
        for name in raw_bases if isinstance(raw_bases, list) else []:
            base = _known_class(name)
            if base is not None and base._wire_args == ("message",):
                error = base(message)
                break
        else:
            error = PoolEnvError(message)
    traceback = data.get("traceback")
    if isinstance(traceback, str) and traceback:
        error.add_note(f"{_TRACEBACK_NOTE}{traceback.rstrip()}")
    return error
