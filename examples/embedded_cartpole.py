"""Embedded pool of local gymnasium envs: the same trajectories as SyncVectorEnv, on worker processes.

    python examples/embedded_cartpole.py --envs 16 --steps 500
"""

from __future__ import annotations

import argparse

import numpy as np

import pool_env


def main(argv: list[str] | None = None) -> None:
    """Step CartPole with random actions and print episode statistics."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    returns = np.zeros(args.envs)
    finished: list[float] = []
    with pool_env.PoolVectorEnv(pool_env.GymEnvSpec("CartPole-v1"), num_envs=args.envs) as env:
        env.reset(seed=0)
        for _ in range(args.steps):
            _, rewards, terminated, truncated, _ = env.step(rng.integers(0, 2, size=args.envs))
            returns += rewards
            ended = terminated | truncated
            finished.extend(returns[ended].tolist())
            returns[ended] = 0.0
        workers = env.stats()["workers"]
    print(f"{len(finished)} episodes, mean return {np.mean(finished):.1f}, {len(workers)} worker(s)")


if __name__ == "__main__":
    main()
