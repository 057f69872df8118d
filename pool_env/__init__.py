"""pool_env: many RL env episodes in parallel behind one self-healing, gymnasium-compatible vector env.

```python
import pool_env

with pool_env.PoolVectorEnv(pool_env.GymEnvSpec("CartPole-v1"), num_envs=16, num_workers=2) as env:
    obs, infos = env.reset(seed=0)
    obs, rewards, terminated, truncated, infos = env.step(env.action_space.sample())
```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pool_env.config import PoolOptions
from pool_env.envs import GymEnvSpec, HttpEnvSpec
from pool_env.errors import (
    CallTimeoutError,
    CodecError,
    DaemonUnavailableError,
    EnvCreationError,
    EnvError,
    EnvFailingError,
    EnvRaisedError,
    ErrorKind,
    HttpStatusError,
    InvalidEnvReturnError,
    InvalidSeedError,
    LeaseError,
    PoolEnvError,
    PoolGaveUpError,
    ProtocolError,
    QuotaExceededError,
    RetriesExhaustedError,
    SharedMemoryError,
    SlotFailure,
    SpaceMismatchError,
    SpecError,
    StepFate,
    StepTimeoutError,
    TransportError,
    UsageError,
    VersionMismatchError,
    WorkerError,
    WorkerStartError,
)

# Names whose modules import gymnasium (and zmq): loaded on first access (PEP 562), so that
# ``import pool_env.<light module>`` — what every worker does — stays light. An HTTP worker
# must not pay for gymnasium (≈ 0.2 s and ≈ 20 MB per worker).
_LAZY = {
    "AlreadyPendingError": "pool_env.errors",
    "ClosedError": "pool_env.errors",
    "InvalidActionError": "pool_env.errors",
    "NoPendingCallError": "pool_env.errors",
    "PoolVectorEnv": "pool_env.vector_env",
    "RemoteVectorEnv": "pool_env.client",
    "connect": "pool_env.client",
}

if TYPE_CHECKING:
    from pool_env.client import RemoteVectorEnv, connect
    from pool_env.errors import AlreadyPendingError, ClosedError, InvalidActionError, NoPendingCallError
    from pool_env.vector_env import PoolVectorEnv
else:

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_LAZY})


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
    "GymEnvSpec",
    "HttpEnvSpec",
    "HttpStatusError",
    "InvalidActionError",
    "InvalidEnvReturnError",
    "InvalidSeedError",
    "LeaseError",
    "NoPendingCallError",
    "PoolEnvError",
    "PoolGaveUpError",
    "PoolOptions",
    "PoolVectorEnv",
    "ProtocolError",
    "QuotaExceededError",
    "RemoteVectorEnv",
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
    "connect",
]

__version__ = "0.1.0"
