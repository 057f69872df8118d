"""Users' machines: /dev/shm shared with pools of other PID namespaces, and a /dev/shm too small.

Each test runs a scenario (:mod:`tests.integration.shm_scenarios`) in a real private mount
namespace (``unshare -m``, as root) whose ``/dev/shm`` is a small tmpfs of its own, so nothing
of the host's ``/dev/shm`` is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1) for a private /dev/shm"
    ),
]


def in_private_shm(size: str, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a new mount namespace with a fresh ``size`` tmpfs over /dev/shm."""
    script = f"mount -t tmpfs -o size={size},mode=1777 tmpfs /dev/shm && exec \"$@\""
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *command],
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
    )  # fmt: skip


def scenario(name: str, size: str) -> dict[str, Any]:
    done = in_private_shm(size, sys.executable, "-m", "tests.integration.shm_scenarios", name)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_pool_in_another_pid_namespace_keeps_its_segment_through_our_sweep() -> None:
    seen = scenario("two_pid_namespaces", "16m")
    segment_owner = seen["target"]
    assert seen["b_pid_in_its_namespace"] == segment_owner
    assert not seen["b_pid_alive_here"], "precondition: judged by its pid alone, B's segment looks orphaned"
    assert seen["swept"] == [] and seen["kept_while_a_runs"], "our sweep and our pool left B's live segment alone"
    assert seen["b"] == {"stepped": True, "segment_there": True}, "and B kept stepping on it"
    assert seen["kept_before_kill"] is True
    assert len(seen["swept_after_kill"]) == 1, "once B's namespace is gone, its segment is proven stale and swept"


def test_a_dev_shm_too_small_fails_construction_naming_the_size_and_the_fix() -> None:
    seen = scenario("too_small", "64k")
    assert seen["class"] == "SharedMemoryError", seen
    assert seen["needed"] > 64 * 1024 and 0 <= seen["free"] <= 64 * 1024
    message = seen["message"]
    assert "\n" not in message
    assert f"need {seen['needed'] / 2**20:.1f} MiB ({seen['needed']} bytes for 4096 envs)" in message
    assert "docker run --shm-size=64m" in message
    assert seen["segments"] == [], "nothing is left in /dev/shm"


def test_pool_env_serve_with_a_dev_shm_too_small_says_so_in_one_line_and_exits_2(tmp_path: Any) -> None:
    bind = f"ipc://{tmp_path}/pool.sock"
    done = in_private_shm(
        "64k", sys.executable, "-m", "pool_env.cli", "serve", "--spec", "gym:CartPole-v1",
        "--envs", "4096", "--workers", "1", "--bind", bind,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("pool-env serve: /dev/shm has ") and "--shm-size=" in lines[0]
