"""The four workloads of issue 5 and the targets they are checked against.

(a) ``CartPole-v1``, N ∈ {4, 16, 64}: PoolVectorEnv (num_workers 1, 2 and the default) against
    gymnasium ``SyncVectorEnv`` and ``AsyncVectorEnv(shared_memory=True)``.
(b) The reference server with latency L ∈ {20, 50} ms per request and a per-env cost, N ∈ {16, 64,
    256}: PoolVectorEnv(HttpEnvSpec) against the challenge client's pattern
    (:mod:`pool_env.bench.remote_baseline`), issue 13's ideal asyncio client with the same W concurrent
    requests (:mod:`pool_env.bench.remote_ideal`) and the formula bound ``slots per request x per-env cost + L``.
    Every env always flies (action 0), so episodes end by engine failure after 6-14 steps.
(c) A local env with 84x84x4 uint8 observations (:mod:`pool_env.bench.envs`) against Sync/Async.
(d) The raw floor (:mod:`pool_env.bench.floor`): a bare zmq ipc round trip plus a shared-memory write
    between two processes, and the same by shared-memory spinning, against PoolVectorEnv with one
    worker over an env that does nothing (so its step time is its round trip).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from pool_env import GymEnvSpec, HttpEnvSpec, PoolVectorEnv
from pool_env.bench.daemon_candidate import DaemonVectorEnv
from pool_env.bench.envs import BIG_OBS_SHAPE, make_big_obs_env, make_null_env
from pool_env.bench.floor import FloorLink
from pool_env.bench.harness import Candidate, Case, Memory, process_memory
from pool_env.bench.remote_baseline import ChallengeClient
from pool_env.bench.remote_ideal import IdealClient
from pool_env.daemon.config import DaemonConfig

__all__ = ["WORKLOADS", "Sizes", "Suite", "evaluate_targets"]

WORKLOADS = ("a", "b", "c", "d")
ACTION_CYCLE = 64
BIG_OBS_ENV = "pool_env.bench.envs:make_big_obs_env"
NULL_ENV = "pool_env.bench.envs:make_null_env"
GYM_REFERENCES = (("sync", "gym sync"), ("async", "gym async (shm)"))


class Sizes:
    """The sizes of a run: the full one of issue 5, or tiny ones for ``--quick``."""

    def __init__(self, quick: bool, per_env_ms: float) -> None:
        self.quick = quick
        self.per_env_ms = per_env_ms
        self.cartpole = (4,) if quick else (4, 16, 64)
        self.latencies = (5.0,) if quick else (20.0, 50.0)
        self.remote = (16,) if quick else (16, 64, 256)
        self.big_obs = (4,) if quick else (16, 64)
        self.floor = (1,) if quick else (1, 16)
        self.env_cost_s = 0.05 if quick else 0.5


# -- candidates ---------------------------------------------------------------------------------


class VectorEnvCandidate(Candidate):
    """Any gymnasium ``VectorEnv`` (PoolVectorEnv, Sync, Async), stepped with a cycle of actions."""

    def __init__(
        self,
        name: str,
        kind: str,
        num_envs: int,
        num_workers: int,
        factory: Callable[[], gym.vector.VectorEnv],
        actions: Callable[[gym.vector.VectorEnv], list[Any]] | None = None,
    ) -> None:
        super().__init__(name, kind, num_envs, num_workers)
        self._factory = factory
        self._make_actions = actions
        self.env: gym.vector.VectorEnv | None = None
        self._actions: list[Any] = []
        self._i = 0

    def _open(self) -> None:
        self.env = self._factory()
        self.env.reset(seed=0)
        if self._make_actions is not None:
            self._actions = self._make_actions(self.env)
        else:
            self.env.action_space.seed(0)
            self._actions = [self.env.action_space.sample() for _ in range(ACTION_CYCLE)]

    def step(self) -> None:
        assert self.env is not None
        self.env.step(self._actions[self._i])
        self._i = (self._i + 1) % len(self._actions)

    def focus(self, active: bool) -> None:
        focus = getattr(self.env, "focus", None)  # DaemonVectorEnv: its competing trainers
        if focus is not None:
            focus(active)

    def memory(self) -> Memory:
        if isinstance(self.env, PoolVectorEnv):
            workers = self.env.stats()["workers"]
            uss = process_memory([w["pid"] for w in workers if w["pid"] is not None]).uss
            return Memory(rss=[w["rss"] for w in workers], uss=uss)
        return super().memory()

    def close(self) -> None:
        env, self.env = self.env, None
        if env is not None:
            env.close()


class HandleCandidate(Candidate):
    """A candidate over one object with ``step(action)`` and ``close()`` (a client, the floor link).

    Subclasses build the object in :meth:`_make`; every step sends the same ``action``.
    """

    handle: Any

    def __init__(self, name: str, kind: str, num_envs: int, num_workers: int, action: Any) -> None:
        super().__init__(name, kind, num_envs, num_workers)
        self.handle = None
        self._action = action

    def _make(self) -> Any:
        raise NotImplementedError

    def _open(self) -> None:
        self.handle = self._make()

    def step(self) -> None:
        assert self.handle is not None
        self.handle.step(self._action)

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.close()


class ClientCandidate(HandleCandidate):
    """The challenge client's pattern (:class:`ChallengeClient`), always flying (action 0)."""

    def __init__(self, name: str, server_url: str, token: str, num_envs: int) -> None:
        super().__init__(name, "client", num_envs, 0, np.zeros(num_envs, dtype=np.int64))
        self._args = (server_url, token, num_envs)

    def _make(self) -> ChallengeClient:
        client = ChallengeClient(*self._args)
        client.reset(seed=0)
        return client


class IdealClientCandidate(HandleCandidate):
    """Issue 13's ideal remote client (:class:`IdealClient`): W concurrent requests from one asyncio loop."""

    def __init__(self, name: str, server_url: str, token: str, num_envs: int, num_groups: int) -> None:
        super().__init__(name, "ideal", num_envs, 0, 0)
        self._args = (server_url, token, num_envs, num_groups)

    def _make(self) -> IdealClient:
        client = IdealClient(*self._args)
        client.reset(seed=0)
        return client


class FloorCandidate(HandleCandidate):
    """The raw floor: :class:`FloorLink` with ``num_envs`` rows per step."""

    def __init__(self, name: str, mode: str, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: str) -> None:
        super().__init__(name, "floor", num_envs, 1, np.zeros(num_envs, dtype=np.int64))
        self._args = (mode, num_envs, obs_shape, obs_dtype)

    def _make(self) -> FloorLink:
        return FloorLink(*self._args)


# -- helpers ------------------------------------------------------------------------------------


def measure_env_cost(make: Callable[[], gym.Env[Any, Any]], seconds: float) -> float:
    """Seconds per ``env.step`` of one env in this process (resets included).

    The minimum of 5 runs: the env's own cost is what it takes undisturbed; other processes on a
    busy machine only ever add to it.
    """
    env = make()
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        actions = [env.action_space.sample() for _ in range(ACTION_CYCLE)]
        per_step = []
        for _ in range(5):
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 5:
                for action in actions:
                    _, _, terminated, truncated, _ = env.step(action)
                    if terminated or truncated:
                        env.reset()
                steps += len(actions)
            per_step.append((time.perf_counter() - start) / steps)
        return min(per_step)
    finally:
        env.close()


def measure_memcpy(nbytes: int, repeats: int = 2000) -> float:
    """Seconds for one ``np.copyto`` of ``nbytes`` (cache-warm, minimum of 5 runs)."""
    source = np.ones(nbytes, dtype=np.uint8)
    target = np.empty_like(source)
    per_copy = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            np.copyto(target, source)
        per_copy.append((time.perf_counter() - start) / repeats)
    return min(per_copy)


def _local_ideal(candidates: Sequence[Candidate], env_cost_s: float) -> list[Candidate]:
    for candidate in candidates:
        candidate.ideal_step_s = math.ceil(candidate.num_envs / candidate.parallelism) * env_cost_s
    return list(candidates)


def _worker_counts(num_envs: int) -> list[int]:
    default = GymEnvSpec("CartPole-v1").default_num_workers(num_envs)
    return sorted({w for w in (1, 2, default) if w <= num_envs})


def _pool_name(workers: int, default: int) -> str:
    return f"pool W={workers}" + (" (default)" if workers == default else "")


def _gym_candidates(make_env: Callable[[], gym.Env[Any, Any]], num_envs: int) -> list[Candidate]:
    fns = [make_env] * num_envs
    return [
        VectorEnvCandidate("gym sync", "sync", num_envs, 0, lambda: gym.vector.SyncVectorEnv(fns)),
        VectorEnvCandidate(
            "gym async (shm)", "async", num_envs, num_envs, lambda: gym.vector.AsyncVectorEnv(fns, shared_memory=True)
        ),
    ]


def _pool_candidate(spec: GymEnvSpec | HttpEnvSpec, num_envs: int, workers: int, default: int, **kw: Any) -> Candidate:
    candidate = VectorEnvCandidate(
        _pool_name(workers, default),
        "pool",
        num_envs,
        workers,
        lambda: PoolVectorEnv(spec, num_envs, workers),
        **kw,
    )
    candidate.extra = {"default_workers": workers == default}
    return candidate


def _trainer_slots_candidate(num_envs: int) -> Candidate:
    """The pool with half the slots stepped in this process (``trainer_slots=num_envs // 2``)."""
    k = num_envs // 2
    spec = GymEnvSpec("CartPole-v1")
    workers = spec.default_num_workers(num_envs - k, k)
    candidate = VectorEnvCandidate(
        f"pool W={workers} trainer_slots={k}",
        "pool",
        num_envs,
        workers,
        lambda: PoolVectorEnv(spec, num_envs, workers, trainer_slots=k),
    )
    candidate.extra = {"default_workers": False, "trainer_slots": k}
    return candidate


# -- the suite ----------------------------------------------------------------------------------


class Suite(contextlib.AbstractContextManager["Suite"]):
    """Builds the cases of the selected workloads; owns the reference servers they share.

    Args:
        workloads: a subset of ``"abcd"``.
        sizes: :class:`Sizes`.
    """

    def __init__(self, workloads: Sequence[str], sizes: Sizes) -> None:
        self.workloads = [w for w in WORKLOADS if w in workloads]
        self.sizes = sizes
        self._stack = contextlib.ExitStack()
        self._servers: dict[float, Any] = {}

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def server_url(self, latency_ms: float) -> str:
        """The reference server with ``latency_ms`` (started on first use, stopped on exit)."""
        if latency_ms not in self._servers:
            from pool_env.refserver.process import RefServer

            server = RefServer(
                latency_ms=latency_ms,
                per_env_ms=self.sizes.per_env_ms,
                max_steps_quota=10**12,
                fault_seed=0,
            )
            self._servers[latency_ms] = self._stack.enter_context(server)
        return str(self._servers[latency_ms].url)

    def server_pids(self, latency_ms: float) -> list[int]:
        """Pid of the reference server with ``latency_ms`` (started on first use)."""
        self.server_url(latency_ms)
        return [int(self._servers[latency_ms].pid)]

    def cases(self) -> Iterator[Case]:
        """Every case of the selected workloads, in order."""
        builders = {"a": self._cartpole, "b": self._remote, "c": self._big_obs, "d": self._floor}
        for workload in self.workloads:
            yield from builders[workload]()

    def _local_cases(
        self,
        workload: str,
        label: str,
        sizes: Sequence[int],
        make_candidates: Callable[[Case], list[Candidate]],
        make_env: Callable[[], gym.Env[Any, Any]],
        params: dict[str, Any],
        references: Sequence[tuple[str, str]] = GYM_REFERENCES,
        memcpy_bytes: int | None = None,
    ) -> Iterator[Case]:
        """One case ``"{label} N={n}"`` per size of a local env, each measuring the env's own cost first.

        The setup stores ``env_cost_us`` (and ``memcpy_us`` for ``memcpy_bytes``) in the case's params.
        """

        def setup(case: Case) -> None:
            case.params["env_cost_us"] = round(measure_env_cost(make_env, self.sizes.env_cost_s) * 1e6, 2)
            if memcpy_bytes is not None:
                case.params["memcpy_us"] = round(measure_memcpy(memcpy_bytes) * 1e6, 3)

        for n in sizes:
            yield Case(
                workload,
                f"{label} N={n}",
                n,
                make_candidates,
                references=list(references),
                params=dict(params),
                setup=setup,
            )

    # (a)
    def _cartpole(self) -> Iterator[Case]:
        make = functools.partial(gym.make, "CartPole-v1")
        return self._local_cases(
            "a", "CartPole-v1", self.sizes.cartpole, self._cartpole_candidates, make, {"env": "CartPole-v1"}
        )

    def _cartpole_candidates(self, case: Case) -> list[Candidate]:
        n = case.num_envs
        default = GymEnvSpec("CartPole-v1").default_num_workers(n)
        candidates = _gym_candidates(lambda: gym.make("CartPole-v1"), n)
        candidates += [_pool_candidate(GymEnvSpec("CartPole-v1"), n, w, default) for w in _worker_counts(n)]
        candidates.append(_trainer_slots_candidate(n))
        candidates.append(
            VectorEnvCandidate(
                f"pool via daemon W={default}",
                "daemon",
                n,
                default,
                lambda: DaemonVectorEnv("gym:CartPole-v1", n, default),  # type: ignore[arg-type,return-value]
            )
        )
        if n == 64 or self.sizes.quick:  # issue 13: two trainers sharing one daemon, each at N
            # `pool-env serve`'s own default: one worker per trainer's lease here, so each lease is
            # every slot of a worker and rides the workers' fast path (a lease of part of a worker's
            # slots goes over zmq, and two such leases' commands run one after the other).
            shared = DaemonConfig.num_workers
            two = VectorEnvCandidate(
                f"daemon, 1 of 2 trainers W={shared}",
                "daemon",
                n,
                shared,
                lambda: DaemonVectorEnv("gym:CartPole-v1", n, shared, other_trainers=1),  # type: ignore[arg-type,return-value]
            )
            two.extra = {"trainers": 2}
            candidates.append(two)
        return _local_ideal(candidates, case.params["env_cost_us"] / 1e6)

    # (b)
    def _remote(self) -> Iterator[Case]:
        for latency in self.sizes.latencies:
            for n in self.sizes.remote:
                yield Case(
                    "b",
                    f"refserver L={latency:g}ms N={n}",
                    n,
                    self._remote_candidates,
                    references=[("client", "client pattern"), ("ideal_client", "ideal client")],
                    params={"latency_ms": latency, "per_env_ms": self.sizes.per_env_ms, "step_size": 10},
                    chunk_scale=2.0 if self.sizes.quick else 4.0,
                    ratio_to_ideal=True,
                    watch=functools.partial(self.server_pids, latency),
                )

    def _remote_candidates(self, case: Case) -> list[Candidate]:
        n, latency, per_env = case.num_envs, case.params["latency_ms"], case.params["per_env_ms"]
        url = self.server_url(latency)
        spec = HttpEnvSpec(url, f"bench-pool-{os.getpid()}-{n}-{latency:g}", step_size=10)
        workers = spec.default_num_workers(n)
        fly = [np.zeros(n, dtype=np.int64)]
        pool = _pool_candidate(spec, n, workers, workers, actions=lambda env: fly)
        pool.ideal_step_s = (math.ceil(n / workers) * per_env + latency) / 1e3
        client = ClientCandidate("client pattern", url, f"bench-client-{os.getpid()}-{n}-{latency:g}", n)
        client.ideal_step_s = (n * per_env + latency) / 1e3
        case.params["pool_ideal_steps_per_s"] = round(n / pool.ideal_step_s, 1)
        ideal = IdealClientCandidate("ideal client", url, f"bench-ideal-{os.getpid()}-{n}-{latency:g}", n, workers)
        ideal.ideal_step_s = pool.ideal_step_s
        return [client, ideal, pool]

    # (c)
    def _big_obs(self) -> Iterator[Case]:
        obs_bytes = int(np.prod(BIG_OBS_SHAPE))
        params = {"env": BIG_OBS_ENV, "obs_bytes": obs_bytes}
        return self._local_cases(
            "c",
            "84x84x4 uint8",
            self.sizes.big_obs,
            self._big_obs_candidates,
            make_big_obs_env,
            params,
            references=[*GYM_REFERENCES, ("sync copy=False", "gym sync copy=False")],
            memcpy_bytes=obs_bytes,
        )

    def _big_obs_candidates(self, case: Case) -> list[Candidate]:
        n = case.num_envs
        spec = GymEnvSpec(BIG_OBS_ENV)
        default = spec.default_num_workers(n)
        candidates = [*_gym_candidates(make_big_obs_env, n)]
        candidates += [_pool_candidate(spec, n, w, default) for w in _worker_counts(n)]
        # What copy=False buys on both sides: the trainer's one copy out of the buffers (gymnasium's
        # deepcopy, our copy out of shared memory) is most of a step's trainer time at this size.
        fns = [make_big_obs_env] * n
        sync = VectorEnvCandidate(
            "gym sync copy=False", "sync", n, 0, lambda: gym.vector.SyncVectorEnv(fns, copy=False)
        )
        views = VectorEnvCandidate(
            f"pool W={default} copy=False", "pool", n, default, lambda: PoolVectorEnv(spec, n, default, copy=False)
        )
        views.extra = {"default_workers": False, "copy": False}
        candidates += [sync, views]
        return _local_ideal(candidates, case.params["env_cost_us"] / 1e6)

    # (d)
    def _floor(self) -> Iterator[Case]:
        params = {"env": NULL_ENV, "obs": "float32 (4,)"}
        references = [("floor", "floor zmq+shm")]
        return self._local_cases(
            "d", "floor", self.sizes.floor, self._floor_candidates, make_null_env, params, references
        )

    def _floor_candidates(self, case: Case) -> list[Candidate]:
        n = case.num_envs
        candidates: list[Candidate] = [
            FloorCandidate("floor zmq+shm", "zmq", n, (4,), "float32"),
            FloorCandidate("floor spin+shm", "spin", n, (4,), "float32"),
            _pool_candidate(GymEnvSpec(NULL_ENV), n, 1, GymEnvSpec(NULL_ENV).default_num_workers(n)),
            _gym_candidates(make_null_env, n)[1],
        ]
        for candidate in candidates:
            candidate.ideal_step_s = 0.0
        return candidates


# -- targets ------------------------------------------------------------------------------------


def _find(cases: Sequence[dict[str, Any]], workload: str, num_envs: int, **params: Any) -> dict[str, Any] | None:
    for case in cases:
        if (
            case["workload"] == workload
            and case["num_envs"] == num_envs
            and all(case["params"].get(k) == v for k, v in params.items())
        ):
            return case
    return None


def _row(case: dict[str, Any] | None, *, kind: str, default: bool | None = None, impl: str | None = None) -> Any:
    if case is None:
        return None
    for row in case["results"]:
        if row["kind"] != kind or (impl is not None and row["impl"] != impl):
            continue
        if default is None or row.get("default_workers") == default:
            return row
    return None


def _target(name: str, measured: float | None, goal: float, higher_is_better: bool, unit: str = "x") -> dict[str, Any]:
    met = None if measured is None else (measured >= goal if higher_is_better else measured <= goal)
    return {
        "target": name,
        "measured": None if measured is None else round(measured, 3),
        "goal": f"{'≥' if higher_is_better else '≤'} {goal:g}{unit}",
        "met": met,
    }


def evaluate_targets(cases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 5's targets, checked against the measured cases (only those that ran); JSON ``targets`` only."""
    targets = []
    a16 = _find(cases, "a", 16)
    pool = _row(a16, kind="pool", default=True)
    if pool is not None:
        best = max((r for r in a16["results"] if r["kind"] == "pool"), key=lambda r: r["steps_per_s"])  # type: ignore[index]
        targets.append(_target(f"(a) N=16 {pool['impl']} vs AsyncVectorEnv", pool["ratios"].get("async"), 2, True))
        targets.append(_target(f"(a) N=16 {pool['impl']} vs SyncVectorEnv", pool["ratios"].get("sync"), 1.5, True))
        if best is not pool:
            targets.append(
                _target(f"(a) N=16 best: {best['impl']} vs SyncVectorEnv", best["ratios"].get("sync"), 1.5, True)
            )
    for case in cases:
        if case["workload"] != "b" or case["num_envs"] != 64:
            continue
        pool = _row(case, kind="pool")
        if pool is not None:
            latency = case["params"]["latency_ms"]
            targets.append(_target(f"(b) L={latency:g}ms N=64 pool vs ideal", pool["ratios"].get("ideal"), 0.9, True))
            targets.append(_target(f"(b) L={latency:g}ms N=64 pool vs client", pool["ratios"].get("client"), 3, True))
    c16, pool_a = _find(cases, "c", 16), _row(a16, kind="pool", default=True)
    pool_c = _row(c16, kind="pool", default=True)
    if c16 is not None and pool_c is not None and pool_a is not None:
        # predicted step: the big env's ideal + (a)'s overhead at the same N + one memcpy per observation
        predicted = pool_c["ideal_step_us"] + pool_a["overhead_us"] + 16 * c16["params"]["memcpy_us"]
        targets.append(
            _target("(c) N=16 pool vs (a)-overhead + one memcpy", predicted / pool_c["step_us_mean"], 0.9, True)
        )
    for case in cases:
        if case["workload"] != "d":
            continue
        pool, floor = _row(case, kind="pool"), _row(case, kind="floor", impl="floor zmq+shm")
        if pool is not None and floor is not None:
            ratio = pool["step_us_mean"] / floor["step_us_mean"]
            targets.append(_target(f"(d) N={case['num_envs']} pool round trip / floor", ratio, 2, False))
    rss = [
        r["rss_max_worker_mib"] for c in cases for r in c["results"] if r["kind"] == "pool" and r["rss_max_worker_mib"]
    ]
    if rss:
        targets.append(_target("RSS per pool worker (max over cases)", max(rss), 50, False, " MiB"))
    for case in cases:
        if case["workload"] == "b" and case["num_envs"] == 256:
            pool = _row(case, kind="pool")
            if pool is not None and pool["rss_total_mib"] is not None:
                name = f"(b) L={case['params']['latency_ms']:g}ms 256 slots, pool workers' total RSS"
                targets.append(_target(name, pool["rss_total_mib"], 1024, False, " MiB"))
    return targets
