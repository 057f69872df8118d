"""``python -m pool_env.cli``: the same as the ``pool-env`` script."""

from __future__ import annotations

from pool_env.cli import main

__all__: list[str] = []

main()
