"""What a user can reach as ``pool_env.X``: every public error the README names, without gymnasium."""

from __future__ import annotations

import subprocess
import sys

import pool_env
from pool_env import errors

WIRE_HELPERS = {"from_wire", "to_wire"}


def test_every_public_error_class_is_a_top_level_name_and_the_same_class() -> None:
    for name in sorted(set(errors.__all__) - WIRE_HELPERS):
        assert name in pool_env.__all__, name
        assert getattr(pool_env, name) is getattr(errors, name), name


def test_catching_a_documented_error_by_its_top_level_name_works() -> None:
    failure = errors.InvalidEnvReturnError("slot 0: step() returned an invalid reward")
    try:
        raise failure
    except pool_env.InvalidEnvReturnError as caught:  # an AttributeError here would hide the real error
        assert caught is failure


def test_importing_the_package_and_its_errors_does_not_import_gymnasium() -> None:
    code = (
        "import sys, pool_env\n"
        "pool_env.PoolGaveUpError, pool_env.SharedMemoryError, pool_env.EnvRaisedError\n"
        "sys.exit(1 if 'gymnasium' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
