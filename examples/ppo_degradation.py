"""CleanRL-style PPO on the DegradationEnv through a pool, against the bundled reference server with faults on.

One file, CPU torch (``pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu``
and ``pip install '.[server]'``). The structure follows CleanRL's ``ppo.py`` (rollout buffer, GAE,
clipped surrogate, value clipping, entropy bonus); what the pool adds:

* the envs are a :class:`pool_env.PoolVectorEnv` of ``HttpEnvSpec`` slots with
  ``autoreset_mode=SAME_STEP``, so every transition in the buffer is real (no reset steps);
* **failures are not experience**: a slot cut by an infrastructure failure (``infos["error_kind"]``,
  here: injected server episode errors and dropped connections) is truncated; its transition is
  masked out of the loss, the episode is left out of the returns (the pool-aware
  ``RecordEpisodeStatistics``), and it is never treated as a terminal state;
* time limits and failures are bootstrapped from ``V(final_obs)``, as SB3 does for
  ``TimeLimit.truncated``.

The baseline is the demo's heuristic maintenance policy (repair when the HPC outlet temperature
falls below 789.5 K, otherwise fly; never sell), measured on the same server first.

    python examples/ppo_degradation.py --iterations 40 --csv curve.csv --plot curve.png
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import pool_env
from pool_env.demo import maintenance_policy
from pool_env.envs.degradation import NUM_ACTIONS, OBS_FIELDS
from pool_env.integrations.infos import failed_slots
from pool_env.integrations.wrappers import RecordEpisodeStatistics
from pool_env.refserver.process import RefServer

REWARD_SCALE = 1e-3  # rewards are hundreds per step (revenue), -930 a repair, -1000 a failure


class RunningNorm:
    """Observation normalisation by running mean and variance (gymnasium's NormalizeObservation)."""

    def __init__(self, size: int) -> None:
        self.mean, self.var, self.count = np.zeros(size), np.ones(size), 1e-4

    def update(self, batch: np.ndarray) -> None:
        mean, var, n = batch.mean(0), batch.var(0), len(batch)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def __call__(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.clip((obs - self.mean) / np.sqrt(self.var + 1e-8), -10, 10), dtype=torch.float32)


def layer(n_in: int, n_out: int, std: float = np.sqrt(2)) -> nn.Linear:
    linear = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(linear.weight, std)
    nn.init.constant_(linear.bias, 0.0)
    return linear


class Agent(nn.Module):
    """CleanRL's separate actor and critic MLPs (64-64, tanh)."""

    def __init__(self) -> None:
        super().__init__()
        self.critic = nn.Sequential(layer(OBS_FIELDS, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, 1, 1.0))
        self.actor = nn.Sequential(
            layer(OBS_FIELDS, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, NUM_ACTIONS, 0.01)
        )

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)

    def act(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        dist = torch.distributions.Categorical(logits=self.actor(x))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.value(x)


def heuristic_returns(envs: pool_env.PoolVectorEnv, steps: int) -> list[float]:
    """Returns of the episodes the heuristic policy finishes in ``steps`` pool steps (failures left out)."""
    stats = RecordEpisodeStatistics(envs)
    obs, _ = stats.reset(seed=10_000)
    for _ in range(steps):
        obs, *_ = stats.step(maintenance_policy(obs))
    return [float(r) for r in stats.return_queue]


def main(argv: list[str] | None = None) -> None:
    """Train, print one line per iteration, optionally write the curve (CSV) and a plot (PNG)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--steps", type=int, default=64, help="pool steps per rollout")
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lr", type=float, default=2.5e-4)
    p.add_argument("--p-episode-error", type=float, default=0.01, help="server fault: per-env episode errors")
    p.add_argument("--p-drop", type=float, default=0.005, help="server fault: connections dropped after applying")
    p.add_argument("--baseline-steps", type=int, default=200, help="pool steps of the heuristic policy (0: skip)")
    p.add_argument("--csv", type=Path)
    p.add_argument("--plot", type=Path)
    args = p.parse_args(argv)
    gamma, lam, clip, epochs, minibatches, ent_coef, vf_coef = 0.99, 0.95, 0.2, 4, 4, 0.01, 0.5
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    started = time.perf_counter()
    rows: list[dict[str, float]] = []
    with RefServer(p_episode_error=args.p_episode_error, p_drop=args.p_drop, fault_seed=args.seed) as server:
        spec = pool_env.HttpEnvSpec(server.url, user_token="ppo-example", step_size=10, request_timeout=5.0)
        baseline: list[float] = []
        if args.baseline_steps:
            with pool_env.PoolVectorEnv(spec, args.envs, args.workers) as heuristic_envs:
                baseline = heuristic_returns(heuristic_envs, args.baseline_steps)
            print(f"heuristic policy: mean return {np.mean(baseline):,.1f} over {len(baseline)} episodes")
        pool = pool_env.PoolVectorEnv(spec, args.envs, args.workers, autoreset_mode="SameStep")
        envs = RecordEpisodeStatistics(pool)
        try:
            agent = Agent()
            optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
            norm = RunningNorm(OBS_FIELDS)
            n, t_max = args.envs, args.steps
            raw_obs = np.zeros((t_max, n, OBS_FIELDS))
            actions = torch.zeros((t_max, n), dtype=torch.long)
            logprobs, rewards, values = torch.zeros((t_max, n)), torch.zeros((t_max, n)), torch.zeros((t_max, n))
            dones, valid = torch.zeros((t_max, n)), torch.zeros((t_max, n))
            next_obs, _ = envs.reset(seed=args.seed)
            next_done = torch.zeros(n)
            failures = 0
            for iteration in range(1, args.iterations + 1):
                recent: list[float] = []
                for t in range(t_max):
                    norm.update(next_obs)
                    raw_obs[t], dones[t] = next_obs, next_done
                    with torch.no_grad():
                        action, logprob, _, value = agent.act(norm(next_obs))
                    actions[t], logprobs[t], values[t] = action, logprob, value
                    next_obs, reward, terminated, truncated, infos = envs.step(action.numpy())
                    failed = failed_slots(infos, n)
                    failures += int(failed.sum())
                    reward = reward * REWARD_SCALE
                    # A time limit or a failure is no terminal state: bootstrap from the last valid observation.
                    cut = np.flatnonzero(truncated & ~terminated)
                    if len(cut):
                        final = np.stack([infos["final_obs"][i] for i in cut])
                        with torch.no_grad():
                            reward[cut] += gamma * agent.value(norm(final)).numpy()
                    rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
                    valid[t] = torch.as_tensor(~failed, dtype=torch.float32)  # failures are not experience
                    next_done = torch.as_tensor(terminated | truncated, dtype=torch.float32)
                    if "episode" in infos:
                        recent += infos["episode"]["r"][infos["_episode"]].tolist()
                # GAE (CleanRL's recursion), over the normalisation in force now.
                obs_t = norm(raw_obs.reshape(-1, OBS_FIELDS)).reshape(t_max, n, OBS_FIELDS)
                with torch.no_grad():
                    values = agent.value(obs_t)
                    next_value = agent.value(norm(next_obs))
                    advantages = torch.zeros_like(rewards)
                    last = torch.zeros(n)
                    for t in reversed(range(t_max)):
                        nonterminal = 1.0 - (next_done if t == t_max - 1 else dones[t + 1])
                        following = next_value if t == t_max - 1 else values[t + 1]
                        delta = rewards[t] + gamma * following * nonterminal - values[t]
                        last = delta + gamma * lam * nonterminal * last
                        advantages[t] = last
                    returns = advantages + values
                b_obs, b_act, b_logp = obs_t.reshape(-1, OBS_FIELDS), actions.reshape(-1), logprobs.reshape(-1)
                b_adv, b_ret, b_val, b_valid = (x.reshape(-1) for x in (advantages, returns, values, valid))
                order = np.arange(t_max * n)
                for _ in range(epochs):
                    np.random.shuffle(order)
                    for chunk in np.array_split(order, minibatches):
                        _, new_logp, entropy, new_value = agent.act(b_obs[chunk], b_act[chunk])
                        weight = b_valid[chunk]
                        count = weight.sum().clamp(min=1.0)
                        adv = b_adv[chunk]
                        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                        ratio = (new_logp - b_logp[chunk]).exp()
                        pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
                        v_clipped = b_val[chunk] + (new_value - b_val[chunk]).clamp(-clip, clip)
                        v_loss = 0.5 * torch.max((new_value - b_ret[chunk]) ** 2, (v_clipped - b_ret[chunk]) ** 2)
                        loss = ((pg + vf_coef * v_loss - ent_coef * entropy) * weight).sum() / count
                        optimizer.zero_grad()
                        loss.backward()
                        nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                        optimizer.step()
                mean_return = float(np.mean(recent)) if recent else float("nan")
                row = {
                    "iteration": iteration,
                    "env_steps": iteration * t_max * n,
                    "seconds": round(time.perf_counter() - started, 1),
                    "episodes": len(recent),
                    "mean_return": round(mean_return, 1),
                    "failed_episodes": envs.failed_episode_count,
                }
                rows.append(row)
                print(
                    f"iteration {iteration:3d}  env steps {row['env_steps']:7,d}  {row['seconds']:6.1f} s  "
                    f"episodes {len(recent):4d}  mean return {mean_return:9,.1f}  "
                    f"failed episodes left out {envs.failed_episode_count}",
                    flush=True,
                )
        finally:
            envs.close()
    print(f"done: {len(rows)} iterations in {time.perf_counter() - started:.1f} s; {failures} failed slot steps masked")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.plot:
        plot(rows, float(np.mean(baseline)) if baseline else None, args.plot)


def plot(rows: list[dict[str, float]], baseline: float | None, path: Path) -> None:
    """The learning curve against the heuristic's mean return (matplotlib, if installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["env_steps"] for r in rows], [r["mean_return"] for r in rows], label="PPO through the pool")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label="heuristic maintenance policy")
    ax.set_xlabel("env steps (decision steps of 10 flights)")
    ax.set_ylabel("mean episode return (failures left out)")
    ax.set_title("DegradationEnv, reference server with faults on")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
