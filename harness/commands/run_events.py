"""The child half of `facehil run`: a pytest plugin that streams the run's progress as JSON lines.

`facehil run` starts pytest in a subprocess with ``-p harness.commands.run_events`` and the
write end of a pipe in ``FACEHIL_EVENTS_FD``. One JSON object per line:

    {"ev": "collected", "count": 12}
    {"ev": "start", "nodeid": "..."}
    {"ev": "result", "nodeid": "...", "outcome": "passed|failed|error|skipped|...", "flow": "...",
     "duration_s": 1.2, "message": "...", "measurements": [...], "recorded": true|false|null}
    {"ev": "finish", "exitstatus": 0, "run_id": 3, "lost": ["<node id>", ...]}

A result is emitted after the records plugin has tried to write the scenario (`recorded`:
written, or kept to be written again; null when the run is not recorded); `lost` names the
scenarios that never reached the database (the session then exits 6).

Without the variable the plugin does nothing, so it is harmless when loaded by hand.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

EVENTS_FD_ENV = "FACEHIL_EVENTS_FD"


def _message(reports: dict[str, pytest.TestReport]) -> str | None:
    """One line for a result that did not pass: the skip reason or the crash message."""
    for when in ("setup", "call", "teardown"):
        r = reports.get(when)
        if r is None or r.passed:
            continue
        if isinstance(r.longrepr, tuple) and len(r.longrepr) == 3:
            return str(r.longrepr[2])
        crash = getattr(r.longrepr, "reprcrash", None)
        if crash is not None:
            return f"[{when}] {crash.message}"
        text = r.longreprtext.strip().splitlines()
        return f"[{when}] {text[-1] if text else 'failed'}"
    return None


class EventStream:
    def __init__(self, fd: int, config: pytest.Config):
        self._config = config
        self._out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self._phases: dict[str, dict[str, pytest.TestReport]] = {}

    def emit(self, **event: Any) -> None:
        try:
            self._out.write(json.dumps(event, default=str) + "\n")
        except (OSError, ValueError):  # the parent went away: the run itself goes on
            pass

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.emit(ev="collected", count=len(session.items))

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        self.emit(ev="start", nodeid=nodeid)

    @pytest.hookimpl(trylast=True)  # after the records plugin has written the scenario
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        phases = self._phases.setdefault(report.nodeid, {})
        phases[report.when] = report
        if report.when != "teardown":
            return
        del self._phases[report.nodeid]
        from harness.recording import recording_state, scenario_outcome

        payload = getattr(report, "facehil", None) or {}
        recorded, _ = recording_state(self._config, report.nodeid)
        self.emit(ev="result", nodeid=report.nodeid, outcome=scenario_outcome(phases),
                  flow=payload.get("flow"), duration_s=sum(r.duration for r in phases.values()),
                  message=_message(phases), measurements=payload.get("measurements", []), recorded=recorded)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.emit(ev="collect_error", nodeid=report.nodeid,
                      message=report.longreprtext.strip().splitlines()[-1:] or ["collection failed"])

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int):
        # after every other plugin's sessionfinish: the records plugin may still write (or lose)
        # scenarios there and change the exit status
        try:
            return (yield)
        finally:
            from harness.recording import current_run_id, recording_state

            _, lost = recording_state(session.config)
            self.emit(ev="finish", exitstatus=int(session.exitstatus), run_id=current_run_id(session.config),
                      lost=lost)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        try:
            self._out.close()
        except OSError:
            pass


def pytest_configure(config: pytest.Config) -> None:
    fd = os.environ.get(EVENTS_FD_ENV)
    if fd and fd.isdigit() and not config.pluginmanager.has_plugin("facehil-run-events"):
        config.pluginmanager.register(EventStream(int(fd), config), "facehil-run-events")
