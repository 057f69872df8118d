"""Shared-memory buffers: layout, create/attach/unlink, structures, orphan sweep."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pool_env import ownership, shm
from pool_env.shm import BatchLayout, Leaf


def _layout(num_envs: int = 3) -> BatchLayout:
    return BatchLayout(
        num_envs,
        (Leaf(("pos",), "<f4", (2,)), Leaf(("img",), "|u1", (4, 4))),
        (Leaf((), "<i8", ()),),
    )


def test_layout_round_trips_through_the_wire_form() -> None:
    layout = _layout()
    assert BatchLayout.from_wire(layout.to_wire()) == layout


def test_arrays_are_aligned_and_do_not_overlap() -> None:
    offsets, size = _layout(5).offsets()
    assert all(offset % 64 == 0 for offset in offsets.values())
    ordered = sorted(offsets.values())
    assert len(set(ordered)) == len(ordered)
    assert size >= ordered[-1] + 5


def test_attached_views_share_memory_with_the_owner_and_unlink_removes_it() -> None:
    layout = _layout()
    owner = shm.create(layout)
    name = owner.name
    try:
        worker = shm.attach(name, layout)
        worker.obs[1][2] = 7
        worker.reward[:] = [1.0, 2.0, 3.0]
        assert owner.obs[1][2].tolist() == [[7] * 4] * 4
        assert owner.reward.tolist() == [1.0, 2.0, 3.0]
        worker.close()
        assert name in shm.list_segments(), "a worker detaching must not destroy the segment"
    finally:
        owner.close()
    assert name not in shm.list_segments()
    owner.close()  # idempotent


def test_a_process_that_attaches_and_exits_leaves_the_segment_alone() -> None:
    layout = _layout()
    with shm.create(layout) as owner:
        code = (
            "import sys, json; from pool_env import shm; "
            "l = shm.BatchLayout.from_wire(json.loads(sys.argv[2])); b = shm.attach(sys.argv[1], l); "
            "b.reward[0] = 42.0; b.close()"
        )
        import json

        subprocess.run([sys.executable, "-c", code, owner.name, json.dumps(layout.to_wire())], check=True)
        assert owner.reward[0] == 42.0
        assert owner.name in shm.list_segments()


def test_build_structure_nests_dicts_and_tuples() -> None:
    leaves = [Leaf(("a", 0), "<f4", ()), Leaf(("a", 1), "<f4", ()), Leaf(("b",), "<f4", ())]
    assert shm.build_structure(leaves, [1, 2, 3]) == {"a": (1, 2), "b": 3}
    assert shm.build_structure([Leaf((), "<f4", ())], [5]) == 5
    assert shm.leaf_value({"a": (1, 2)}, ("a", 1)) == 2


def test_sweep_removes_only_segments_of_dead_owners(tmp_path: pytest.TempPathFactory) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    directory = str(tmp_path)
    for name in (f"pool_env_{dead.pid}_abc123", f"pool_env_{os.getpid()}_abc123", "other_file"):
        open(os.path.join(directory, name), "w").close()
    removed = shm.sweep_orphans(directory)
    assert removed == [f"pool_env_{dead.pid}_abc123"]
    assert sorted(os.listdir(directory)) == sorted([f"pool_env_{os.getpid()}_abc123", "other_file"])


def test_create_fills_zeros() -> None:
    with shm.create(_layout()) as buffers:
        assert not buffers.terminated.any() and np.all(buffers.obs[0] == 0)


def test_sweep_keeps_a_segment_whose_lock_is_held_even_when_its_pid_is_gone(tmp_path: pytest.TempPathFactory) -> None:
    """The pid in a name may be another PID namespace's: only a free lock proves the owner dead."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    directory = str(tmp_path)
    name = f"pool_env_{dead.pid}_abc123"
    path = os.path.join(directory, name)
    open(path, "w").close()
    fd = ownership.hold(path)  # what a live owner in another namespace does
    try:
        assert shm.sweep_orphans(directory) == [] and os.path.exists(path)
        assert ownership.claim(path) is None
    finally:
        ownership.release(fd)
    assert shm.sweep_orphans(directory) == [name] and not os.path.exists(path)


def test_a_staging_segment_is_left_alone_while_it_may_still_be_in_the_making(tmp_path: pytest.TempPathFactory) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    directory = str(tmp_path)
    young, old = f"pool_env_{dead.pid}_abc123.staging", f"pool_env_{dead.pid}_def456.staging"
    for name in (young, old):
        open(os.path.join(directory, name), "w").close()
    os.utime(os.path.join(directory, old), (0, 0))
    assert shm.sweep_orphans(directory) == [old]


def test_the_owner_holds_the_lock_of_its_segment_until_it_closes() -> None:
    buffers = shm.create(_layout())
    path = os.path.join(shm.SHM_DIR, buffers.name)
    assert ownership.claim(path) is None, "created already locked"
    buffers.close()
    assert not os.path.exists(path)
