"""The suite's long station runs, run side by side.

A scenario run on its own simulated station (pcscd, card processes, rig, camera, eligibility
service, reader) spends most of its time waiting on the reader's screens and timeouts; one run
keeps about a third of a core busy. So the long runs (the whole nightly that the secret scan
reads, and the faulty and reference readers of the fault proofs) go into one pool, submitted
together at the session's first test (tests/conftest.py), and run behind the rest of the suite;
each test waits only for the run it judges.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.suites import scenarios_path

RUN_TIMEOUT_S = 420
# two at a time: they run behind the rest of the suite (tests/conftest.py), which needs the cores too
PARALLEL_RUNS = max(1, int(os.environ.get("FACEHIL_TEST_PARALLEL_RUNS", "2")))


@dataclass
class Outcome:
    status: str  # passed | failed | error | skipped
    message: str


class RunOutcomes(dict):
    """A run's outcomes by scenario ('test_file.py::test_name[param]' -> Outcome), and its output."""
    log = ""


def junit_outcomes(junit: Path) -> RunOutcomes:
    """JUnit XML -> {'test_file.py::test_name[param]': Outcome}."""
    out = RunOutcomes()
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        nodeid = f"{module}.py::{case.get('name')}"
        status, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                status = {"failure": "failed"}.get(tag, tag if tag == "error" else "skipped")
                message = f"{el.get('message', '')}\n{el.text or ''}"
                break
        out[nodeid] = Outcome(status, message)
    return out


def run_scenarios(tests: tuple[str, ...], workdir: Path, deck: Path, faults: str | None = None,
                  variant: str | None = None, adapter: str | None = None) -> RunOutcomes:
    """Run these scenarios in a pytest subprocess with the facehil plugin; its own simulated station."""
    state_dir = workdir / "station"
    shutil.copytree(deck, state_dir / "deck")
    junit = workdir / "junit.xml"
    root = scenarios_path()
    cmd = [sys.executable, "-m", "pytest", *(str(root / t) for t in tests), "-p", "no:cacheprovider", "-q",
           f"--junitxml={junit}", "--sim-state-dir", str(state_dir)]
    if faults:
        cmd += ["--faults", faults]
    if adapter:
        cmd += ["--sim-adapter", adapter]  # screen: the reader seen through its camera, tapped by the finger
    env = {k: v for k, v in os.environ.items() if k != "PCSCLITE_CSOCK_NAME"}  # the station brings its own
    env.pop("FACEHIL_READER_VARIANT", None)
    if variant:
        env["FACEHIL_READER_VARIANT"] = variant  # sim/reader/station.py hands it to the reader
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the plugin stops its station (SIGKILL would orphan it)
        output, _ = proc.communicate(timeout=60)
    (workdir / "pytest.log").write_text(output)
    if not junit.exists():
        pytest.fail(f"the scenario run produced no results (exit {proc.returncode}):\n{output[-4000:]}")
    outcomes = junit_outcomes(junit)
    outcomes.log = output
    missing = [t for t in tests if t not in outcomes]
    assert not missing, f"not run: {missing}; see {workdir / 'pytest.log'}"
    return outcomes


@dataclass
class NightlyRun:
    """One `facehil run nightly` (harness.commands.run.run_suite) and everything it left behind."""
    workdir: Path
    result: object  # harness.commands.run.RunResult
    terminal: str
    outcomes: RunOutcomes = field(default_factory=RunOutcomes)

    @property
    def state(self) -> Path:
        return self.workdir / "station"

    @property
    def report(self) -> Path:
        return self.workdir / "report"

    @property
    def db(self) -> Path:
        return self.workdir / "runs.sqlite"

    @property
    def log(self) -> Path:
        return self.workdir / "pytest.log"


def run_nightly(workdir: Path, extra_tests: list[Path]) -> NightlyRun:
    """The nightly suite on its own station (its folder kept, so every station log can be read),
    recorded in SQLite, reported in HTML, its outcomes in JUnit XML; ``extra_tests`` appended."""
    from rich.console import Console

    from harness.commands.run import RunOptions, run_suite

    terminal = io.StringIO()
    junit = workdir / "junit.xml"
    result = run_suite(RunOptions(suite="nightly", db=f"sqlite:///{workdir / 'runs.sqlite'}",
                                  report_dir=workdir / "report", log_path=workdir / "pytest.log",
                                  junit=junit,
                                  extra_args=[*map(str, extra_tests), "--sim-state-dir", str(workdir / "station")]),
                       out=Console(file=terminal, width=200))
    run = NightlyRun(workdir, result, terminal.getvalue())
    if junit.exists():
        run.outcomes = junit_outcomes(junit)
        run.outcomes.log = run.log.read_text(errors="replace")
    return run


class StationRuns:
    """Named runs in one pool; ``submit`` once per name, ``result`` waits for that one."""

    def __init__(self, workers: int = PARALLEL_RUNS):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="station-run")
        self._runs: dict[str, Future] = {}

    def submit(self, name: str, fn, *args, **kwargs) -> None:
        if name not in self._runs:
            self._runs[name] = self._pool.submit(fn, *args, **kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._runs

    def result(self, name: str):
        return self._runs[name].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
