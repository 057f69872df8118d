"""Entry point: ``python -P -m workers --endpoint ipc://... --worker-id N --gen G --parent-pid P``.

The supervisor starts this with ``-P`` so that a ``workers`` module in the working directory
cannot shadow this package; once it is imported, the trainer's ``sys.path`` (handed over in
``POOL_ENV_SYS_PATH``) is put in front, so env import strings resolve as in the trainer.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from pool_env.envs.base import WORKER_PID_VARIABLE
from pool_env.supervisor.process import SYS_PATH_VARIABLE
from workers.output import configure_logging, forward_output
from workers.process import run_worker


def adopt_trainer_sys_path(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Order ``sys.path`` as the trainer has it (its entries first), keeping ours after them."""
    trainer = [entry for entry in environ.get(SYS_PATH_VARIABLE, "").split(os.pathsep) if entry]
    if trainer:
        sys.path[:] = trainer + [entry for entry in sys.path if entry not in trainer]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one worker until it is told to stop."""
    parser = argparse.ArgumentParser(prog="python -P -m workers", description=__doc__)
    parser.add_argument("--endpoint", required=True, help="the coordinator's zmq endpoint")
    parser.add_argument("--worker-id", type=int, required=True)
    parser.add_argument("--gen", type=int, required=True, help="restart generation of this worker id")
    parser.add_argument("--parent-pid", type=int, required=True, help="exit when this process is gone")
    parser.add_argument("--socket-dir", default=None, help="removed if the coordinator dies first")
    parser.add_argument("--heartbeat", default=None, help="the pool's heartbeat board (a file)")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--accept-pickle",
        action="store_true",
        help="accept pickled env factories in init (an embedded pool's own workers only; never a daemon's)",
    )
    parser.add_argument(
        "--echo-fd", type=int, default=None, help="the trainer's stderr: forward output there, prefixed"
    )
    args = parser.parse_args(argv)
    adopt_trainer_sys_path()
    forward_output(args.worker_id, args.echo_fd)  # before logging binds sys.stderr
    configure_logging(args.log_level, f"worker {args.worker_id}.{args.gen}: %(message)s", args.echo_fd is not None)
    # Ctrl-C in a terminal reaches the whole process group: let the coordinator stop us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Marks this process as a worker: a pool built here (a training script without its
    # `if __name__ == "__main__":` guard, imported for its env) is refused, not started.
    os.environ[WORKER_PID_VARIABLE] = str(os.getpid())
    return run_worker(
        args.endpoint, args.worker_id, args.gen, args.parent_pid, args.socket_dir, args.accept_pickle, args.heartbeat
    )


if __name__ == "__main__":
    sys.exit(main())
