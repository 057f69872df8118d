"""Shared fixtures: worker processes can import ``tests.*``, and the leak checker ``no_leaks``.

``no_leaks`` is generic: it snapshots what a test could leave behind (``pool_env_*``
segments in ``/dev/shm`` owned by this process or its children, child processes of the test
process, ``pool_env_*`` directories in the temp dir) and, after the test, waits a short grace
period for them to go back to the snapshot. Whatever is still there fails the test and is
cleaned up, so one leak does not cascade into the next test. ``tests/integration`` applies it
to every test.

``tests/integrations`` (SB3, RLlib/Ray, TorchRL) needs packages the core test env does not have:
it is collected only when the ``-m`` expression selects the ``integrations`` marker (``tox -e
integrations`` runs ``-m integrations``); the default ``-m 'not integrations'`` skips collecting it,
so its modules may import ``ray`` at the top and an import failure there fails, never skips.

Other test sessions may run on the same machine at the same time: the session gets a private
temp dir (``TMPDIR``, inherited by workers), and only segments whose owner pid (part of the
name) is this process or one of its children count, so we never blame or delete theirs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from pool_env.shm import SEGMENT_PREFIX, list_segments

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEAK_GRACE_SECONDS = 5.0
SHM_DIR = "/dev/shm"
INTEGRATIONS_DIR = Path(REPO_ROOT, "tests", "integrations")
INTEGRATIONS_MARK = "integrations"


def _selects_integrations(config: pytest.Config) -> bool:
    """Whether the ``-m`` expression keeps a test marked only ``integrations`` (no ``-m``: yes)."""
    from _pytest.mark.expression import Expression  # pytest's own parser of -m, as its deselection uses

    markexpr = config.getoption("markexpr") or ""
    if not markexpr.strip():
        return True
    return Expression.compile(markexpr).evaluate(lambda name, **_: name == INTEGRATIONS_MARK)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Do not import ``tests/integrations`` (ray, torch, SB3) when its tests are deselected anyway."""
    if collection_path == INTEGRATIONS_DIR or INTEGRATIONS_DIR in collection_path.parents:
        return None if _selects_integrations(config) else True
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A module of ``tests/integrations`` that skips itself (``importorskip`` of a missing stack) fails:
    where those tests are selected, a missing integration is a broken install, never a skip."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and (collector.path == INTEGRATIONS_DIR or INTEGRATIONS_DIR in collector.path.parents):
        report.outcome = "failed"
        report.longrepr = f"{collector.path}: skipped at import ({report.longrepr}); the integrations must not skip"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under ``tests/integrations`` is marked ``integrations`` (before ``-m`` selects), so
    none is dropped by ``-m integrations`` for a forgotten marker."""
    for item in items:
        if INTEGRATIONS_DIR in item.path.parents:
            item.add_marker(INTEGRATIONS_MARK)


@pytest.fixture(scope="session", autouse=True)
def _workers_can_import_tests() -> Iterator[None]:
    """Workers run ``python -m workers`` with our environment; make ``tests.envs`` importable there
    whatever the current directory is."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p))
        yield


@pytest.fixture(scope="session", autouse=True)
def _private_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This session's (and its workers') ``tempfile.gettempdir()``: a fresh directory of its own."""
    path = str(tmp_path_factory.mktemp("tmp", numbered=True))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", path)
        patch.setattr(tempfile, "tempdir", path)
        yield path


def _is_resource_tracker(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return any("resource_tracker" in part for part in process.cmdline())
    return False


def _children() -> dict[tuple[int, float], psutil.Process]:
    found = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if not _is_resource_tracker(child):
                found[(child.pid, child.create_time())] = child
    return found


def _our_segments(children: dict[tuple[int, float], psutil.Process]) -> set[str]:
    """Segments (``pool_env_<owner pid>_<hex>``) owned by this process or one of its children."""
    owners = {str(os.getpid())} | {str(pid) for pid, _ in children}
    return {n for n in list_segments(SHM_DIR) if n[len(SEGMENT_PREFIX) :].partition("_")[0] in owners}


def _temp_dirs() -> set[str]:
    temp = tempfile.gettempdir()
    return {os.path.join(temp, n) for n in os.listdir(temp) if n.startswith(SEGMENT_PREFIX)}


@dataclass
class Leaks:
    """What a test left behind, compared with the snapshot taken before it."""

    segments: set[str]
    temp_dirs: set[str]
    processes: list[psutil.Process]

    def __bool__(self) -> bool:
        return bool(self.segments or self.temp_dirs or self.processes)

    def describe(self) -> str:
        """One line per kind of leak."""
        lines = []
        if self.segments:
            lines.append(f"shared-memory segments in {SHM_DIR}: {sorted(self.segments)}")
        if self.temp_dirs:
            lines.append(f"temp dirs: {sorted(self.temp_dirs)}")
        for p in self.processes:
            with contextlib.suppress(psutil.Error):
                lines.append(f"process {p.pid} ({p.status()}): {' '.join(p.cmdline())[:200]}")
        return "\n".join(lines)

    def clean_up(self) -> None:
        """Kill the processes (they are the test's own children), unlink, remove."""
        for p in self.processes:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(self.processes, timeout=5)
        for name in self.segments:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, name))
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)


class LeakSnapshot:
    """The leakable resources that exist now; :meth:`leaks` says what appeared since."""

    def __init__(self) -> None:
        children = _children()
        self.segments = _our_segments(children)
        self.temp_dirs = _temp_dirs()
        self.children = set(children)

    def leaks(self) -> Leaks:
        """New segments, temp dirs and live (or unreaped) child processes since the snapshot."""
        children = _children()
        processes = [p for key, p in children.items() if key not in self.children]
        return Leaks(_our_segments(children) - self.segments, _temp_dirs() - self.temp_dirs, processes)

    def wait_for_no_leaks(self, grace: float = LEAK_GRACE_SECONDS) -> Leaks:
        """Poll until nothing new is left or ``grace`` seconds passed; the final leaks."""
        deadline = time.monotonic() + grace
        while (leaks := self.leaks()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return leaks


@pytest.fixture
def no_leaks() -> Iterator[LeakSnapshot]:
    """Fail the test if it leaves a ``pool_env_*`` shm segment or temp dir, or a child process."""
    snapshot = LeakSnapshot()
    yield snapshot
    leaks = snapshot.wait_for_no_leaks()
    if leaks:
        description = leaks.describe()
        leaks.clean_up()
        pytest.fail(f"the test left resources behind (now cleaned up):\n{description}", pytrace=False)
