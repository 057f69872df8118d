"""pool_env: many RL env episodes in parallel behind one self-healing, gymnasium-compatible vector env.

```python
import pool_env

with pool_env.PoolVectorEnv(pool_env.GymEnvSpec("CartPole-v1"), num_envs=16, num_workers=2) as env:
    obs, infos = env.reset(seed=0)
    obs, rewards, terminated, truncated, infos = env.step(env.action_space.sample())
```
"""

from __future__ import annotations

from pool_env.client import RemoteVectorEnv, connect
from pool_env.config import GymEnvSpec, HttpEnvSpec, PoolOptions
from pool_env.errors import (
    AlreadyPendingError,
    ClosedError,
    DaemonUnavailableError,
    EnvCreationError,
    HttpStatusError,
    InvalidActionError,
    LeaseError,
    NoPendingCallError,
    PoolEnvError,
    ProtocolError,
    SpecError,
    StepTimeoutError,
    TransportError,
    UsageError,
    VersionMismatchError,
    WorkerError,
    WorkerStartError,
)
from pool_env.vector_env import PoolVectorEnv

__all__ = [
    "AlreadyPendingError",
    "ClosedError",
    "DaemonUnavailableError",
    "EnvCreationError",
    "GymEnvSpec",
    "HttpEnvSpec",
    "HttpStatusError",
    "InvalidActionError",
    "LeaseError",
    "NoPendingCallError",
    "PoolEnvError",
    "PoolOptions",
    "PoolVectorEnv",
    "ProtocolError",
    "RemoteVectorEnv",
    "SpecError",
    "StepTimeoutError",
    "TransportError",
    "UsageError",
    "VersionMismatchError",
    "WorkerError",
    "WorkerStartError",
    "connect",
]

__version__ = "0.1.0"
