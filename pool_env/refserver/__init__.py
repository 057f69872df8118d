"""Reference implementation of the RL aircraft challenge server, with fault injection.

Needs the ``[server]`` extra (FastAPI, uvicorn) to serve; :mod:`pool_env.refserver.process` and
:mod:`pool_env.refserver.faults` import neither, so a parent process can launch and steer a server
without them.

* :func:`create_app` — the FastAPI app (``/api/v1`` as in PROTOCOL.md, plus ``/control``).
* :func:`serve` — run it with uvicorn in this process.
* :class:`RefServer` — run it as a child process (tests, demos), with restart/kill and fault control.
* :class:`FaultConfig` — the fault switches (bounded; changeable at run time via ``/control/faults``).
* :class:`ServerLimits` — limits fixed at start (body size, idle eviction, live episodes, ``/control``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pool_env.refserver.faults import FailNext, FaultConfig, fault_config_from_options
from pool_env.refserver.limits import ServerLimits
from pool_env.refserver.process import RefServer, RefServerError

if TYPE_CHECKING:
    from pool_env.refserver.app import create_app
    from pool_env.refserver.serve import serve

__all__ = [
    "FailNext",
    "FaultConfig",
    "RefServer",
    "RefServerError",
    "ServerLimits",
    "create_app",
    "fault_config_from_options",
    "serve",
]


def __getattr__(name: str) -> Any:
    """Import the web parts (FastAPI, uvicorn) only when asked for."""
    if name == "create_app":
        from pool_env.refserver.app import create_app

        return create_app
    if name == "serve":
        from pool_env.refserver.serve import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
