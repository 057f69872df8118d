"""Env backends a worker can run: one per env kind, behind :class:`workers.backends.base.Backend`."""
