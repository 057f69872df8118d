"""Test-only envs, importable in worker processes as ``tests.envs.<module>:<factory>``."""
