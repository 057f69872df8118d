"""The pool_env error tree: every error pool_env raises derives from :class:`PoolEnvError`.

```
PoolEnvError
├── UsageError                     wrong call order or arguments (the pool is unaffected)
│   ├── ClosedError                a call on a closed pool
│   ├── AlreadyPendingError        step_async while a call is pending  (also gymnasium's AlreadyPendingCallError)
│   ├── NoPendingCallError         step_wait without step_async        (also gymnasium's NoAsyncCallError)
│   ├── InvalidActionError         actions of the wrong shape, dtype or outside the action space
│   ├── SpecError                  a bad env spec or pool configuration (names the field)
│   └── LeaseError                 a daemon refused or does not know a lease (names what is free)
├── WorkerError                    a worker could not be started or did something it must not
│   └── WorkerStartError           workers did not come up (exit code / stderr tail)
├── ProtocolError                  a malformed or oversized message on a pool_env wire
│   └── VersionMismatchError       a daemon and its client speak different protocol versions
├── TransportError                 talking to a server failed in a way the pool cannot heal
│   ├── HttpStatusError            4xx from the env server: a configuration error (bad token, bad request)
│   ├── DaemonUnavailableError     a pool daemon did not answer in time (gone, unreachable or refused us)
│   └── RetriesExhaustedError      an HTTP worker gave up on a request (retries spent); becomes infos["error"]
│       └── CallTimeoutError       an HTTP worker's reset/step call ran out of its call_timeout; ditto
├── EnvCreationError               the env could not be created (unknown id, import string, exception)
└── StepTimeoutError               the whole pool missed a deadline the caller asked for (step_wait(timeout))
```

Failures the pool survives (a worker crash, a connection reset, a server episode error) are
*not* raised: they become ``infos["error"]`` on the affected slots and counters in ``stats()``.

Every class keeps its constructor arguments so that it survives pickling (tested).

This module imports nothing heavy: HTTP workers import it and must not load gymnasium (≈ 0.2 s
and ≈ 20 MB per worker). The two classes that also derive from gymnasium's errors
(:class:`AlreadyPendingError`, :class:`NoPendingCallError`) are therefore made on first access
(PEP 562 module ``__getattr__``), which imports ``gymnasium.error``; they are then stored in the
module globals, so every access (and unpickling) gets the same class object.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

__all__ = [
    "AlreadyPendingError",
    "CallTimeoutError",
    "ClosedError",
    "DaemonUnavailableError",
    "EnvCreationError",
    "HttpStatusError",
    "InvalidActionError",
    "LeaseError",
    "NoPendingCallError",
    "PoolEnvError",
    "ProtocolError",
    "RetriesExhaustedError",
    "SpecError",
    "StepTimeoutError",
    "TransportError",
    "UsageError",
    "VersionMismatchError",
    "WorkerError",
    "WorkerStartError",
]


class PoolEnvError(Exception):
    """Root of every error raised by pool_env."""


class UsageError(PoolEnvError):
    """The caller used the API wrongly; nothing was sent and the pool still works."""


class ClosedError(UsageError):
    """The pool (or client) is closed."""


class _CallStateError(UsageError):
    """Base of :class:`AlreadyPendingError` and :class:`NoPendingCallError`: a message and the call's ``name``."""

    name: str

    def __init__(self, message: str, name: str = "step") -> None:
        UsageError.__init__(self, message)
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.name))


_GYMNASIUM_ERRORS = ("AlreadyPendingError", "NoPendingCallError")
_gymnasium_lock = threading.Lock()

if TYPE_CHECKING:
    from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

    class AlreadyPendingError(_CallStateError, AlreadyPendingCallError):
        """``step_async``/``reset`` was called while another call is still pending."""

    class NoPendingCallError(_CallStateError, NoAsyncCallError):
        """``step_wait`` was called without a pending ``step_async``."""

else:

    def _define_gymnasium_errors() -> None:
        """Make the two classes that also derive from gymnasium's errors (imports gymnasium)."""
        from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

        class AlreadyPendingError(_CallStateError, AlreadyPendingCallError):
            """``step_async``/``reset`` was called while another call is still pending."""

        class NoPendingCallError(_CallStateError, NoAsyncCallError):
            """``step_wait`` was called without a pending ``step_async``."""

        for cls in (AlreadyPendingError, NoPendingCallError):
            cls.__qualname__ = cls.__name__  # pickle finds classes by module and qualname
            globals()[cls.__name__] = cls

    def __getattr__(name: str) -> Any:
        if name in _GYMNASIUM_ERRORS:
            with _gymnasium_lock:
                if name not in globals():
                    _define_gymnasium_errors()
            return globals()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*globals(), *_GYMNASIUM_ERRORS})


class InvalidActionError(UsageError, ValueError):
    """Actions of the wrong shape or dtype, or outside the action space."""


class SpecError(UsageError, ValueError):
    """An env spec or pool option is invalid; the message names the field."""


class LeaseError(UsageError):
    """A pool daemon refused a lease (not enough free slots) or does not know the lease id."""


class WorkerError(PoolEnvError):
    """A worker misbehaved in a way that is not a per-slot failure."""


class WorkerStartError(WorkerError):
    """Workers could not be started; carries the exit code and the tail of stderr when known."""


class ProtocolError(PoolEnvError):
    """A malformed, oversized or unexpected message on a pool_env wire."""


class VersionMismatchError(ProtocolError):
    """The daemon speaks another protocol version than this client.

    Attributes:
        client_version: the version this client speaks.
        server_version: the version the daemon speaks.
    """

    def __init__(self, client_version: int, server_version: int, endpoint: str = "") -> None:
        super().__init__(
            f"protocol version mismatch{f' with the daemon at {endpoint}' if endpoint else ''}: "
            f"this client speaks version {client_version}, the daemon speaks version {server_version}; "
            "install the same pool_env version on both sides"
        )
        self.client_version = client_version
        self.server_version = server_version
        self.endpoint = endpoint

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.client_version, self.server_version, self.endpoint))


class TransportError(PoolEnvError):
    """Talking to a remote server failed in a way the pool cannot heal by itself."""


class DaemonUnavailableError(TransportError):
    """A pool daemon did not answer within the client's timeout: it is gone, unreachable, or
    (with CURVE) it refused this client's key. The client's socket was recreated."""


class RetriesExhaustedError(TransportError):
    """Every retry of an HTTP request failed; ``last_error`` describes the final failure.

    The HTTP backend never lets this reach the trainer: it turns it into per-slot errors.
    """

    def __init__(self, retries: int, last_error: str) -> None:
        super().__init__(f"gave up after {retries} retries; last error: {last_error}")
        self.retries = retries
        self.last_error = last_error

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.retries, self.last_error))


class CallTimeoutError(RetriesExhaustedError):
    """An HTTP backend call (one worker's reset or step) ran out of ``HttpEnvSpec.call_timeout``.

    Raised instead of starting a request or a back-off that the deadline leaves no time for; like
    its base, it becomes per-slot errors and never reaches the trainer.

    Attributes:
        call_timeout: the call's time budget in seconds.
        elapsed: seconds the call had run when it gave up.
        retries: retries made during the call, over all its requests.
        last_error: the last failure of the call, or what could not be started.
    """

    def __init__(self, call_timeout: float, elapsed: float, retries: int, last_error: str) -> None:
        TransportError.__init__(
            self, f"gave up after {elapsed:.3g} s (call_timeout={call_timeout:g} s); last error: {last_error}"
        )
        self.call_timeout = call_timeout
        self.elapsed = elapsed
        self.retries = retries
        self.last_error = last_error

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.call_timeout, self.elapsed, self.retries, self.last_error))


class HttpStatusError(TransportError):
    """The env server answered 4xx: a configuration error, never retried.

    Attributes:
        status: the HTTP status code.
        detail: the server's ``detail`` field (FastAPI style), or the body text.
        url: the request URL.
    """

    def __init__(self, status: int, detail: str, url: str = "") -> None:
        super().__init__(f"env server answered HTTP {status} for {url or 'a request'}: {detail}")
        self.status = status
        self.detail = detail
        self.url = url

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.detail, self.url))


class EnvCreationError(PoolEnvError):
    """An env could not be created in a worker (unknown id, bad import string, constructor raised)."""


class StepTimeoutError(PoolEnvError, TimeoutError):
    """``step_wait(timeout=...)`` ran out before every worker answered.

    The pending call stays pending; call ``step_wait`` again to keep waiting.
    """
