"""During a server outage the pool does not storm the server.

The server answers 503 to every episode request (``p_http_503=1.0``; a dead server would get no
requests to count) while the trainer keeps stepping as fast as it can.

What one worker sends per step command during the outage (``R = max_retries``):

* its slots are stepped: one ``vectorized_step`` (503), a back-off, then the state check of
  the first slot: ``GET state/latest`` with R retries, all 503 → the check gives up and every
  slot fails ("may have been applied"): ``1 + (R + 1)`` requests;
* its slots are reset (every later step, since every slot failed): a new server session (not
  faulted, 1 request) and ``vectorized/episodes/create`` with R retries: ``1 + (R + 1)``.

So one command sends at most ``2 * (R + 2)`` requests (both halves when some slots reset and
others step), and ``R + 2`` in the steady state; the pool at most ``W * 2 * (R + 2)`` per step.
(A worker resets its ended slots right after replying, so the reset half of one step may be
counted in the next: still at most ``2 * (R + 2)`` per worker between two of our counts.)

Back-off bounds the rate: in the steady state each worker sleeps ``U[0, b) + U[0, 2b)`` per step
(full jitter, ``b = retry_backoff``), mean ``1.5 b``, standard deviation ``sqrt(5/12) b ≈ 0.65 b``.
A step lasts at least as long as one worker's sleeps, so over ``N = 30`` steps the mean step time
is ≥ ``b`` except with probability ≈ 1e-5 (4.2 standard deviations of the mean). Hence the
mean rate is at most ``(W * (R + 2) + 1) / b`` requests per second (+1: the test's own stats
call per step), and no single second sees more than twice that.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from pool_env import HttpEnvSpec, PoolOptions, PoolVectorEnv
from pool_env.refserver.process import RefServer

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

WORKERS, NUM_ENVS, MAX_RETRIES, BACKOFF = 4, 16, 2, 0.1
OUTAGE_STEPS = 30


def test_a_server_answering_503_to_everything_gets_bounded_requests_per_step_and_per_second() -> None:
    token = f"outage-{uuid.uuid4().hex[:8]}"
    fly = np.zeros(NUM_ENVS, dtype=np.int64)
    with RefServer() as server:
        spec = HttpEnvSpec(server.url, token, request_timeout=2.0, max_retries=MAX_RETRIES, retry_backoff=BACKOFF)
        with PoolVectorEnv(spec, NUM_ENVS, WORKERS, options=PoolOptions(step_timeout=30.0)) as env:
            env.reset(seed=0)
            env.step(fly)
            server.set_faults(p_http_503=1.0)
            per_step = []
            before = server.stats()
            started = time.time()
            for _ in range(OUTAGE_STEPS):
                _, _, _, truncated, infos = env.step(fly)
                assert truncated.all() and infos["_error"].all(), "every slot fails as data, none hangs"
                after = server.stats()
                per_step.append(after["requests_total"] - before["requests_total"] - 1)  # minus the stats call
                before = after
            elapsed = time.time() - started
            server.set_faults(p_http_503=0.0)
            recovered = [env.step(fly)[4] for _ in range(3)]
            assert "error" not in recovered[-1], "the pool recovers as soon as the server does"
    hard_bound = WORKERS * 2 * (MAX_RETRIES + 2)
    assert max(per_step) <= hard_bound, f"requests per step {per_step} > {hard_bound}"
    # Workers reset ended slots right after replying (prefetch), so a reset's requests may land in
    # the next step's count: per step they vary, their sum may not (one cycle of slack at the end).
    steady = WORKERS * (MAX_RETRIES + 2)
    assert sum(per_step[1:]) <= OUTAGE_STEPS * steady, f"steady state above {steady} a step: {per_step}"
    rate_bound = (WORKERS * (MAX_RETRIES + 2) + 1) / BACKOFF
    mean_rate = (sum(per_step) + OUTAGE_STEPS) / elapsed
    assert mean_rate <= rate_bound, f"{mean_rate:.0f} requests/s > {rate_bound:.0f} (per step: {per_step})"
    per_second = before["requests_per_second"].items()
    seconds = {int(s): n for s, n in per_second if started + 1 <= int(s) < started + elapsed - 1}
    assert seconds, "the outage lasted whole seconds"
    assert max(seconds.values()) <= 2 * rate_bound, f"per second: {seconds}"
    print(f"outage: {per_step=} mean {mean_rate:.0f} req/s, per second {sorted(seconds.values())}")
