"""Worker processes: spawn, watch (exit, start-up, heartbeat), restart policy, stop, stats.

Modules:

* :mod:`~pool_env.supervisor.states`: ``WorkerState``, the legal transitions, ``RestartPolicy``,
  ``WorkerHandle``;
* :mod:`~pool_env.supervisor.supervise`: ``Supervisor`` and its one ``change_state()``;
* :mod:`~pool_env.supervisor.process`: the process seam (``Launcher``/``WorkerProcess``) and the
  real ``python -P -m workers`` processes in sessions of their own;
* :mod:`~pool_env.supervisor.liveness`: the heartbeat board and thread (frozen vs busy);
* :mod:`~pool_env.supervisor.rundir`: the pool's private directory (short ipc path, owner lock,
  sweep of the directories of dead trainers).
"""

from __future__ import annotations

from pool_env.supervisor.process import Launcher, WorkerProcess
from pool_env.supervisor.states import ALIVE, TRANSITIONS, RestartPolicy, WorkerHandle, WorkerState
from pool_env.supervisor.supervise import Supervisor

__all__ = [
    "ALIVE",
    "TRANSITIONS",
    "Launcher",
    "RestartPolicy",
    "Supervisor",
    "WorkerHandle",
    "WorkerProcess",
    "WorkerState",
]
