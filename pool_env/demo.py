"""The main job: a pool stepping DegradationEnv episodes against the bundled reference server.

It starts the reference server on a free localhost port with light fault injection, runs a
pool with a simple maintenance policy for a fixed number of steps (showing a progress bar),
kills one worker half way to show self-healing, and ends with a summary: steps/s, episodes
finished, faults seen, restarts, slots recovered, and what was left behind (nothing).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pool_env import shm
from pool_env.config import PoolOptions
from pool_env.envs import HttpEnvSpec
from pool_env.envs.degradation import FLY, REPAIR
from pool_env.errors import ErrorKind
from pool_env.vector_env import PoolVectorEnv

__all__ = ["DemoSummary", "maintenance_policy", "run_demo"]

HPC_TOUT = 0
"""Observation index of the HPC outlet temperature, which falls as the engine wears."""

REPAIR_BELOW_K = 789.5


def maintenance_policy(obs: np.ndarray) -> np.ndarray:
    """Fly, and repair an engine whose HPC outlet temperature has dropped below a threshold."""
    return np.where(obs[:, HPC_TOUT] < REPAIR_BELOW_K, REPAIR, FLY).astype(np.int64)


@dataclass
class DemoSummary:
    """What the demo measured."""

    steps: int = 0
    env_steps: int = 0
    seconds: float = 0.0
    episodes_finished: int = 0
    episode_returns: list[float] = field(default_factory=list)
    faults: Counter[ErrorKind] = field(default_factory=Counter)
    restarts: int = 0
    slots_recovered: int = 0
    leaked_processes: int = 0
    leaked_segments: int = 0

    @property
    def steps_per_second(self) -> float:
        """Env steps (slot steps) per second."""
        return self.env_steps / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        """The summary as text lines."""
        mean_return = float(np.mean(self.episode_returns)) if self.episode_returns else float("nan")
        faults = ", ".join(f"{kind.value} {n}" for kind, n in sorted(self.faults.items())) or "none"
        return [
            f"steps            {self.steps} pool steps, {self.env_steps} env steps in {self.seconds:.1f} s",
            f"throughput       {self.steps_per_second:,.0f} env steps/s",
            f"episodes         {self.episodes_finished} finished, mean return {mean_return:,.1f}",
            f"faults seen      {faults}",
            f"worker restarts  {self.restarts}",
            f"slots recovered  {self.slots_recovered}",
            f"left behind      {self.leaked_processes} processes, {self.leaked_segments} shm segments",
        ]


def run_demo(
    num_envs: int = 16,
    num_workers: int = 4,
    steps: int = 300,
    seed: int = 0,
    faults: dict[str, Any] | None = None,
    kill_worker_at: float | None = 0.5,
    progress: bool = True,
) -> DemoSummary:
    """Run the demo and return its summary (see the module docstring)."""
    from pool_env.refserver.process import RefServer

    faults = {"p_episode_error": 0.01, "p_http_503": 0.005, "p_drop": 0.005, "latency_ms": 2.0, **(faults or {})}
    summary = DemoSummary()
    ours = f"{shm.SEGMENT_PREFIX}{os.getpid()}_"  # other pools on this machine are not our business
    with RefServer(fault_seed=seed, **faults) as server:
        spec = HttpEnvSpec(server.url, "demo-token", step_size=10, request_timeout=5.0)
        with PoolVectorEnv(spec, num_envs, num_workers, options=PoolOptions(step_timeout=20.0)) as env:
            obs, _ = env.reset(seed=seed)
            kill_step = int(steps * kill_worker_at) if kill_worker_at is not None else -1
            start = time.perf_counter()
            with logging_redirect_tqdm():
                summary_steps = tqdm(range(steps), desc="stepping", unit="step", disable=not progress)
                _run_steps(env, summary, summary_steps, obs, kill_step)
            summary.seconds = time.perf_counter() - start
            summary.restarts = sum(w["restarts"] for w in env.stats()["workers"])
            pids = env.worker_pids
    summary.leaked_processes = sum(1 for pid in pids if psutil.pid_exists(pid))
    summary.leaked_segments = sum(1 for name in shm.list_segments() if name.startswith(ours))
    return summary


def _run_steps(env: PoolVectorEnv, summary: DemoSummary, steps: Any, obs: np.ndarray, kill_step: int) -> None:
    num_envs = env.num_envs
    returns = np.zeros(num_envs)
    waiting_for_reset = np.zeros(num_envs, dtype=bool)
    no_errors = np.zeros(num_envs, dtype=bool)
    for t in steps:
        if t == kill_step:
            os.kill(env.worker_pids[0], signal.SIGKILL)
        obs, rewards, terminated, truncated, infos = env.step(maintenance_policy(obs))
        summary.steps += 1
        summary.env_steps += num_envs
        recovered = waiting_for_reset & ~truncated
        summary.slots_recovered += int(recovered.sum())
        waiting_for_reset &= ~recovered
        returns += rewards
        for slot in np.flatnonzero(infos.get("_error", no_errors)):
            summary.faults[ErrorKind(infos["error_kind"][slot])] += 1
            waiting_for_reset[slot] = True
        ended = terminated | (truncated & ~infos.get("_error", no_errors))
        summary.episodes_finished += int(ended.sum())
        summary.episode_returns.extend(returns[ended].tolist())
        returns[terminated | truncated] = 0.0
