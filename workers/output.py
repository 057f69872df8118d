"""What an env prints reaches the trainer's terminal, each line prefixed with the worker.

``AsyncVectorEnv``'s workers share the trainer's terminal; so do ours, line by line with a
``[worker 1 pid 4242] `` prefix so interleaved lines stay readable. ``print`` goes to the
trainer's stdout; ``warnings``, ``logging`` and tracebacks to its stderr *and* to the worker's
stderr file, which the coordinator reads to say why a worker exited.

Only Python-level writes (``sys.stdout``/``sys.stderr``) are prefixed; a C extension writing to
file descriptor 1 reaches the trainer's stdout as is.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["LinePrefixer", "configure_logging", "forward_output"]

_LIBRARY = ("pool_env", "workers")  # the pool's own loggers: the worker's log file only


class LinePrefixer(io.TextIOBase):
    """A text stream writing to raw file descriptors, with ``prefix`` at the start of each line.

    Writes are passed on at once (no buffering beyond the current call), so a worker killed
    mid-run loses nothing it printed.
    """

    _fds: tuple[int, ...]
    _prefix: str
    _at_line_start: bool

    def __init__(self, fds: Sequence[int], prefix: str) -> None:
        super().__init__()
        self._fds = tuple(fds)
        self._prefix = prefix
        self._at_line_start = True

    def writable(self) -> bool:
        """Always."""
        return True

    def write(self, text: str) -> int:
        """Write ``text``, prefixing every line that starts in it; the number of characters."""
        if not text:
            return 0
        parts = []
        for piece in text.splitlines(keepends=True):
            if self._at_line_start:
                parts.append(self._prefix)
            parts.append(piece)
            self._at_line_start = piece.endswith(("\n", "\r"))
        data = "".join(parts).encode("utf-8", "replace")
        for fd in self._fds:
            with contextlib.suppress(OSError):  # a closed terminal must not kill the worker
                os.write(fd, data)
        return len(text)

    def fileno(self) -> int:
        """The first descriptor (for libraries that ask)."""
        return self._fds[0]

    def isatty(self) -> bool:
        """Never: the output is shared and prefixed."""
        return False


def forward_output(worker_id: int, echo_fd: int | None) -> None:
    """Replace ``sys.stdout``/``sys.stderr`` with prefixing streams.

    ``echo_fd``: the trainer's stderr, passed to this process; stderr goes there and to fd 2
    (the worker's stderr file). ``None``: output is silenced (stdout dropped, stderr to the file
    only), the option ``PoolOptions(worker_output=False)``.
    """
    if echo_fd is None:
        return
    prefix = f"[worker {worker_id} pid {os.getpid()}] "
    sys.stdout = LinePrefixer([1], prefix)
    sys.stderr = LinePrefixer([echo_fd, 2], prefix)


def configure_logging(level: str, fmt: str, echo: bool) -> None:
    """The worker's logging: the pool's own records (retries, exits) go to its stderr file only,
    so a trainer's terminal shows what the envs say, not the pool's self-healing; with ``echo``,
    every other record (the env's ``logging``) goes to ``sys.stderr``, i.e. the terminal too.
    """
    formatter = logging.Formatter(fmt)
    root = logging.getLogger()
    root.setLevel(level)
    library = logging.StreamHandler(LinePrefixer([2], ""))
    library.setFormatter(formatter)
    if not echo:
        root.addHandler(library)
        return
    library.addFilter(lambda record: record.name.startswith(_LIBRARY))
    envs = logging.StreamHandler(sys.stderr)
    envs.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    envs.addFilter(lambda record: not record.name.startswith(_LIBRARY))
    root.addHandler(library)
    root.addHandler(envs)
