"""``python -m pool_env.refserver``: run the reference server (see :mod:`pool_env.refserver.serve`)."""

from __future__ import annotations

from pool_env.refserver.serve import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
