"""Shared bench fixtures: collect ``bench_*.py``, a private pcscd and the reaper (as the tests
have them), and a goals summary.

Benches record ``(name, value, goal, unit, met)`` in ``config.stash[GOALS]``; the summary
prints them after pytest-benchmark's table. Goals are reported, not asserted: a shared
machine's noise must not turn a bench run red.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
# the reaper (services die with the session even when it is killed) and the session's private pcscd
from session_services import pcscd, start_reaper  # noqa: E402,F401

GOALS = pytest.StashKey[list]()


def pytest_collect_file(file_path, parent):
    # bench files are named bench_*.py; collect them unless python_files already does
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        if parent.session.isinitpath(file_path):
            return None  # named on the command line: pytest's own collector takes it
        if not any(fnmatch.fnmatch(file_path.name, pat) for pat in parent.config.getini("python_files")):
            return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_configure(config):
    start_reaper(config)
    config.stash[GOALS] = []


@pytest.fixture
def goals(request):
    """``goals(name, value, goal, unit, met)``: record a goal check for the summary."""

    def record(name: str, value: float, goal: str, unit: str, met: bool) -> None:
        request.config.stash[GOALS].append((name, value, goal, unit, met))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(GOALS, [])
    if not rows:
        return
    terminalreporter.section("bench goals")
    for name, value, goal, unit, met in rows:
        terminalreporter.write_line(f"{'MET   ' if met else 'MISSED'} {name}: {value:.3f} {unit} (goal {goal})")


@pytest.fixture(scope="session")
def dlib_backend():
    """The dlib face backend (real weights), loaded once for all face benches."""
    from harness.biometrics import load_backend

    return load_backend("dlib")
