"""Entry point: ``python -m workers --endpoint ipc://... --worker-id N --gen G --parent-pid P``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from pool_env.envs.base import WORKER_PID_VARIABLE
from workers.loop import run_worker


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one worker until it is told to stop."""
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--endpoint", required=True, help="the coordinator's zmq endpoint")
    parser.add_argument("--worker-id", type=int, required=True)
    parser.add_argument("--gen", type=int, required=True, help="restart generation of this worker id")
    parser.add_argument("--parent-pid", type=int, required=True, help="exit when this process is gone")
    parser.add_argument("--socket-dir", default=None, help="removed if the coordinator dies first")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--accept-pickle",
        action="store_true",
        help="accept pickled env factories in init (an embedded pool's own workers only; never a daemon's)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format=f"worker {args.worker_id}.{args.gen}: %(message)s")
    # Ctrl-C in a terminal reaches the whole process group: let the coordinator stop us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Marks this process as a worker: a pool built here (a training script without its
    # `if __name__ == "__main__":` guard, imported for its env) is refused, not started.
    os.environ[WORKER_PID_VARIABLE] = str(os.getpid())
    return run_worker(args.endpoint, args.worker_id, args.gen, args.parent_pid, args.socket_dir, args.accept_pickle)


if __name__ == "__main__":
    sys.exit(main())
