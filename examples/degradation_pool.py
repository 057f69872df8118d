"""A pool of DegradationEnv episodes against the bundled reference server, with faults on.

Starts the reference server (pip install 'pool_env[server]'), makes 1 % of server steps fail and
drops a few connections, and shows that only the affected slots are truncated while the run
goes on. Against the real challenge server, pass its URL and your token instead.

    python examples/degradation_pool.py --envs 16 --steps 200
"""

from __future__ import annotations

import argparse

import numpy as np

import pool_env
from pool_env.demo import maintenance_policy
from pool_env.refserver.process import RefServer


def main(argv: list[str] | None = None) -> None:
    """Run the pool and count the errors it absorbed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    errors = 0
    with RefServer(p_episode_error=0.01, p_drop=0.01, fault_seed=0) as server:
        spec = pool_env.HttpEnvSpec(server.url, user_token="example", step_size=10, request_timeout=5.0)
        with pool_env.PoolVectorEnv(spec, num_envs=args.envs, num_workers=4) as env:
            obs, _ = env.reset(seed=0)
            for _ in range(args.steps):
                obs, _, _, _, infos = env.step(maintenance_policy(obs))
                errors += int(np.sum(infos.get("_error", 0)))
            counters = env.stats()["counters"]
    print(f"{args.steps} steps of {args.envs} envs; {errors} slot errors absorbed; counters: {counters}")


if __name__ == "__main__":
    main()
