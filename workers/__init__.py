"""The pool_env worker process (``python -m workers``).

A worker owns a fixed group of slots for its whole life: it attaches to the pool's shared
memory, connects to the coordinator over ZeroMQ, creates its envs through one backend
(:mod:`workers.backends.http` or :mod:`workers.backends.gym`) and then executes ``reset`` /
``step`` commands for all its slots at once, writing results straight into shared memory.

It imports from pool_env only ``errors``, ``config``, ``protocol`` and ``shm`` (plus, for local
gymnasium envs, ``spaces``), so an HTTP worker never imports gymnasium.
"""
