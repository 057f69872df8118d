"""Tests of pool_env; a package so that worker processes can import ``tests.envs``."""
