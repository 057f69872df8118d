"""EnvPool-style partial batches: overlap the policy with env stepping.

With ``batch_size=k``, ``recv()`` returns the first k slots to finish (their ids in
``infos["env_id"]``); the trainer computes actions for exactly those and ``send``s them back
while the other slots are still stepping. Each action is applied once, no slot starves.

    python examples/partial_batches.py --envs 8 --batch-size 4 --rounds 200
"""

from __future__ import annotations

import argparse

import numpy as np

import pool_env


def policy(obs: np.ndarray) -> np.ndarray:
    """Push the cart towards the side the pole leans to."""
    return (obs[:, 2] > 0).astype(np.int64)


def main(argv: list[str] | None = None) -> None:
    """Run ``rounds`` send/recv rounds and report steps per slot."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    steps = np.zeros(args.envs, dtype=int)
    spec = pool_env.GymEnvSpec("CartPole-v1")
    with pool_env.PoolVectorEnv(spec, num_envs=args.envs, num_workers=2, batch_size=args.batch_size) as env:
        env.async_reset(seed=0)
        obs, _, _, _, infos = env.recv()
        for _ in range(args.rounds):
            env_ids = infos["env_id"]
            env.send(policy(obs), env_ids)  # the other slots keep stepping meanwhile
            obs, _, _, _, infos = env.recv()
            steps[infos["env_id"]] += 1
    print("steps per slot:", steps.tolist())


if __name__ == "__main__":
    main()
