"""``python -m pool_env.refserver``: run the reference server (``pool-env ref-server``'s flags)."""

from __future__ import annotations

import sys

__all__: list[str] = []

if __name__ == "__main__":
    from pool_env.cli import main

    main(["ref-server", *sys.argv[1:]], prog_name="pool-env")
