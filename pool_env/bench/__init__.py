"""Benchmarks of pool_env against gymnasium's vector envs (run by ``pool-env bench``).

See :mod:`pool_env.bench.harness` for the method; :mod:`pool_env.bench.workloads` for what is compared.
"""

from __future__ import annotations

__all__: list[str] = []
