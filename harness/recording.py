"""pytest hooks that judge measurements and record a run (registered by harness/plugin.py).

Two plugin objects:
- `MeasurePlugin` (always): the `measure` fixture (a `Measurements` collector per test), a
  measurement FAIL turns a passing test phase into a failure (MARGINAL passes and is listed in
  the terminal summary), and each test's teardown report carries its measurements as
  `report.facehil` (plain dicts, so they would survive a trip between processes).
- `RecordingPlugin` (with `--db URL` or `--record`): a run row at session start, each
  scenario committed with its measurements once its teardown is reported, the run's status
  at session finish. A killed session leaves a 'running' run that the next open marks aborted.

For the station fixtures (built elsewhere): `set_station_limits(config, table)` hands the
station file's `[limits]` to every later `measure`, `annotate_run(config, reader_firmware=...)`
completes the run row.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from harness.measure import Measurement, Measurements, Outcome, parse_limits

log = logging.getLogger(__name__)

MEASUREMENTS_KEY = pytest.StashKey[Measurements]()
_CHECKED_KEY = pytest.StashKey[int]()  # how many of the item's measurements were already judged
LIMITS_KEY = pytest.StashKey[dict]()
MEASURE_PLUGIN_NAME = "facehil-measure"
RECORDING_PLUGIN_NAME = "facehil-recording"
# the session's exit status when a finished scenario could not be written to the records DB;
# above pytest's own codes (0-5) so that a fleet worker and a shell can tell it apart
RECORDS_LOST_EXIT = 6
WRITE_TIMEOUT_ENV = "FACEHIL_DB_WRITE_TIMEOUT_S"
DEFAULT_WRITE_TIMEOUT_S = 30.0


# ---------------------------------------------------------------------------------------------
# API for the station plugin and scenarios


def _limits(config: pytest.Config) -> dict:
    # one dict per session, updated in place: collectors made before the station was loaded see it
    if LIMITS_KEY not in config.stash:
        config.stash[LIMITS_KEY] = {}
    return config.stash[LIMITS_KEY]


def set_station_limits(config: pytest.Config, table: Mapping[str, Any] | None, source: str = "station file") -> None:
    """Use a station file's `[limits.<name>]` tables for every measurement from now on."""
    parsed = parse_limits(table, source)
    limits = _limits(config)
    limits.clear()
    limits.update(parsed)


def measurements_for(item: pytest.Item) -> Measurements:
    """The item's collector, created on first use; it reads the station's limits live."""
    m = item.stash.get(MEASUREMENTS_KEY, None)
    if m is None:
        m = Measurements(limits=_limits(item.config))
        item.stash[MEASUREMENTS_KEY] = m
    return m


def annotate_run(config: pytest.Config, **fields: Any) -> None:
    """Complete the run row (reader_firmware, reader_features, card_deck, dataset_hash, ...);
    a no-op when the run is not being recorded."""
    rec = config.pluginmanager.get_plugin(RECORDING_PLUGIN_NAME)
    if rec is not None:
        rec.annotate(**fields)


def current_run_id(config: pytest.Config) -> int | None:
    rec = config.pluginmanager.get_plugin(RECORDING_PLUGIN_NAME)
    return rec.run_id if rec is not None else None


def recording_state(config: pytest.Config, nodeid: str | None = None) -> tuple[bool | None, list[str]]:
    """(was `nodeid` written to the database, the session's lost node ids); None when not recording."""
    rec = config.pluginmanager.get_plugin(RECORDING_PLUGIN_NAME)
    if rec is None:
        return None, []
    return (None if nodeid is None else not rec.is_unsent(nodeid)), list(rec.lost)


def register(config: pytest.Config) -> None:
    """Called from harness/plugin.py's pytest_configure."""
    pm = config.pluginmanager
    if not pm.has_plugin(MEASURE_PLUGIN_NAME):
        pm.register(MeasurePlugin(), MEASURE_PLUGIN_NAME)
    db = config.getoption("facehil_db", None)
    record = config.getoption("facehil_record", False)
    runs_tests = not (config.option.collectonly or getattr(config.option, "help", False))
    if (db or record) and runs_tests and not hasattr(config, "workerinput") \
            and not pm.has_plugin(RECORDING_PLUGIN_NAME):
        from harness.records import RecordsError, RecordStore

        try:
            store = RecordStore(db)  # None: FACEHIL_DB or the default SQLite file
        except RecordsError as exc:
            raise pytest.UsageError(f"--db: {exc}") from None
        suite = config.getoption("facehil_suite", None) or "adhoc"
        pm.register(RecordingPlugin(config, store, suite), RECORDING_PLUGIN_NAME)


# ---------------------------------------------------------------------------------------------
# Measurements


def _flow(item: pytest.Item) -> str:
    marker = item.get_closest_marker("flow")
    if marker is not None and marker.args:
        return str(marker.args[0])
    return Path(str(getattr(item, "path", item.nodeid.split("::")[0]))).stem.removeprefix("test_")


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return repr(value)[:200]


def _params(item: pytest.Item) -> dict[str, Any] | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    return {k: _json_safe(v) for k, v in callspec.params.items()}


class MeasurePlugin:
    """The `measure` fixture and measurement judgement; always active."""

    def __init__(self) -> None:
        self._notable: list[tuple[str, Measurement]] = []  # MARGINAL and FAIL, for the summary
        self._counts = {o: 0 for o in Outcome}

    @pytest.fixture
    def measure(self, request: pytest.FixtureRequest) -> Measurements:
        """Record measurements against limits: `measure(name, value, limit=Limit(...))`,
        `measure.rate(name, errors, trials, high=...)`, `measure.face_match(...)`."""
        return measurements_for(request.node)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        m = item.stash.get(MEASUREMENTS_KEY, None)
        if m is not None:
            checked = item.stash.get(_CHECKED_KEY, 0)
            new = m.results[checked:]
            item.stash[_CHECKED_KEY] = len(m.results)
            for r in new:
                self._counts[r.outcome] += 1
                if r.outcome is not Outcome.PASS:
                    self._notable.append((item.nodeid, r))
            failed = [r for r in new if r.outcome is Outcome.FAIL]
            if failed and report.passed:
                lines = "\n".join(f"  {r.message}" for r in failed)
                if hasattr(report, "wasxfail"):  # an expected failure that happened in a measurement
                    report.outcome = "skipped"
                else:
                    report.outcome = "failed"
                    report.longrepr = f"measurement(s) out of limits:\n{lines}"
        if report.when == "teardown":
            from harness.clauses import ClauseError, item_clauses, record_params

            try:
                cited = list(item_clauses(item))
            except ClauseError:  # already refused at collection; never lose the record over it
                cited = []
            report.facehil = {
                "flow": _flow(item),
                "clauses": cited,
                "params": record_params(_params(item), cited),  # clause ids ride in params["@clauses"]
                "measurements": [r.as_record() for r in m.results] if m else [],
                "face_matches": [f.as_record() for f in m.face_matches] if m else [],
            }
        return report

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        total = sum(self._counts.values())
        if not total:
            return
        tr = terminalreporter
        tr.section("facehil measurements")
        for nodeid, r in self._notable:
            tr.write_line(f"{r.outcome.value:<8} {nodeid}: {r.message}",
                          red=r.outcome is Outcome.FAIL, yellow=r.outcome is Outcome.MARGINAL)
        c = self._counts
        tr.write_line(f"{total} measurement(s): {c[Outcome.PASS]} PASS, {c[Outcome.MARGINAL]} MARGINAL, "
                      f"{c[Outcome.FAIL]} FAIL")


# ---------------------------------------------------------------------------------------------
# Recording


def scenario_outcome(reports: Mapping[str, pytest.TestReport]) -> str:
    """passed | failed | error | skipped | xfailed | xpassed, from a test's phase reports."""
    setup, call, teardown = reports.get("setup"), reports.get("call"), reports.get("teardown")
    if setup is not None and setup.failed:
        return "error"
    if setup is not None and setup.skipped:
        return "xfailed" if hasattr(setup, "wasxfail") else "skipped"
    if call is not None:
        if hasattr(call, "wasxfail"):
            return "xfailed" if call.skipped else "xpassed"
        if call.failed:
            return "failed"
        if call.skipped:
            return "skipped"
    if teardown is not None and teardown.failed:
        return "error"
    return "passed"


def _summary(reports: Mapping[str, pytest.TestReport]) -> str | None:
    """The crash line and the tail of the traceback of the first phase that did not pass."""
    for when in ("setup", "call", "teardown"):
        r = reports.get(when)
        if r is None or r.passed:
            continue
        if isinstance(r.longrepr, tuple) and len(r.longrepr) == 3:  # a skip: (path, lineno, reason)
            return str(r.longrepr[2])
        crash = getattr(r.longrepr, "reprcrash", None)
        head = f"{crash.path}:{crash.lineno}: {crash.message}\n\n" if crash is not None else ""
        tail = "\n".join(r.longreprtext.splitlines()[-40:])
        return f"[{when}] {head}{tail}"
    return None


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _station_name(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            name = tomllib.load(fh).get("station", {}).get("name")
        return str(name) if name else path.stem
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        return path.stem


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return None


def _facehil_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("facehil")
    except PackageNotFoundError:
        return None


def _mask_arg(arg: str) -> str:
    """A command-line argument as the records may keep it: a URL's password hidden."""
    if "://" not in arg:
        return arg
    from harness.records import mask_url

    option, sep, value = arg.partition("=")
    if sep and option.startswith("-"):  # --db=URL
        return f"{option}={mask_url(value)}"
    return mask_url(arg)


def run_info_from_config(config: pytest.Config, suite: str):
    from harness.records import RunInfo

    station = config.getoption("station", None)
    station_path = Path(station) if station else None
    return RunInfo(
        suite=suite,
        station_name=_station_name(station_path) if station_path else "simulated",
        station_file_hash=_sha256_file(station_path) if station_path else None,
        facehil_version=_facehil_version(),
        git_sha=_git_sha(),
        extra={"args": [_mask_arg(str(a)) for a in config.invocation_params.args],
               "python": sys.version.split()[0], "cwd": os.getcwd()},
    )


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, timezone.utc) if ts else None


def write_timeout_s() -> float:
    """FACEHIL_DB_WRITE_TIMEOUT_S or 30: how long one write to the records database may take."""
    raw = os.environ.get(WRITE_TIMEOUT_ENV)
    try:
        return max(0.5, float(raw)) if raw else DEFAULT_WRITE_TIMEOUT_S
    except ValueError:
        log.error("%s must be a number of seconds, got %r: using %.0f s", WRITE_TIMEOUT_ENV, raw,
                  DEFAULT_WRITE_TIMEOUT_S)
        return DEFAULT_WRITE_TIMEOUT_S


class BoundedCall:
    """One database call on a daemon thread of its own, waited for at most a deadline. A paused
    server (SIGSTOP: its kernel still acknowledges every packet) never answers an open connection,
    and libpq has no client-side timeout; the run must go on, and say what it could not write."""

    def __init__(self, fn, *args: Any, **kwargs: Any):
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.value: Any = None
        threading.Thread(target=self._run, args=(fn, args, kwargs), name="facehil-records-write", daemon=True).start()

    def _run(self, fn, args, kwargs) -> None:
        try:
            self.value = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the waiting caller
            self.error = exc
        finally:
            self.done.set()

    def wait(self, timeout_s: float) -> bool:
        return self.done.wait(timeout_s)


class RecordingPlugin:
    """Writes one run and its scenarios into a RecordStore.

    A scenario that cannot be written (the database went away, or does not answer within
    FACEHIL_DB_WRITE_TIMEOUT_S) is kept and written again before the next scenario and at the end
    of the session; one still unwritten at the end is *lost*: it is named in the summary and the
    session exits RECORDS_LOST_EXIT, so a run with a gap in its records never passes. Writes are
    bounded (BoundedCall): a database that stops answering cannot hang the run."""

    def __init__(self, config: pytest.Config, store, suite: str, heartbeat_interval_s: float = 30.0):
        self.config, self.store, self.suite = config, store, suite
        self.run_id: int | None = None
        self._heartbeat = None
        self._interval_s = heartbeat_interval_s
        self._pending: dict[str, dict[str, pytest.TestReport]] = {}
        self._recorded = 0
        self._unsent: list = []  # ScenarioResults not yet in the database, oldest first
        self._refused: list[str] = []  # node ids the database refused (bad data: retrying cannot help)
        self.lost: list[str] = []  # node ids never recorded (final at session finish)
        self._write_timeout_s = write_timeout_s()
        self._inflight: BoundedCall | None = None  # the write of _unsent[0], when it has not returned
        self._stalled = False  # that write outlived its deadline: the database does not answer

    def annotate(self, **fields: Any) -> None:
        if self.run_id is None:
            return
        if self._stalled:
            log.error("run %s not annotated: the records database does not answer", self.run_id)
            return
        call = BoundedCall(self.store.annotate_run, self.run_id, **fields)
        if not call.wait(self._write_timeout_s):
            log.error("run %s not annotated: the records database did not answer in %.0f s", self.run_id,
                      self._write_timeout_s)
        elif call.error is not None:
            raise call.error

    def is_unsent(self, nodeid: str) -> bool:
        return nodeid in self._refused or any(r.nodeid == nodeid for r in self._unsent)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from harness.records import Heartbeat

        self.run_id = self.store.start_run(run_info_from_config(self.config, self.suite))
        self._heartbeat = Heartbeat(self.store, self.run_id, self._interval_s).start()
        log.info("recording run %s", self.run_id)

    @pytest.hookimpl(tryfirst=True)  # before the run's event stream reports the scenario finished
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        phases = self._pending.setdefault(report.nodeid, {})
        phases[report.when] = report
        if report.when == "teardown":
            del self._pending[report.nodeid]
            self._unsent.append(self._result(report.nodeid, phases))
            self._flush()

    def _result(self, nodeid: str, phases: dict[str, pytest.TestReport]):
        from harness.records import ScenarioResult

        payload = getattr(phases["teardown"], "facehil", None) or {}
        starts = [r.start for r in phases.values() if getattr(r, "start", None)]
        stops = [r.stop for r in phases.values() if getattr(r, "stop", None)]
        return ScenarioResult(
            nodeid=nodeid, outcome=scenario_outcome(phases), flow=payload.get("flow"),
            params=payload.get("params"), duration_ms=sum(r.duration for r in phases.values()) * 1000.0,
            started_at=_utc(min(starts)) if starts else None, ended_at=_utc(max(stops)) if stops else None,
            longrepr=_summary(phases), measurements=payload.get("measurements", []),
            face_matches=payload.get("face_matches", []))

    def _flush(self, final: bool = False) -> bool:
        """Write the unsent scenarios in order; stop at the first failure that may pass later
        (the database is away, or its write has not returned). One the database refuses is lost at
        once, not retried: it must not hold back the scenarios after it. A write that outlived its
        deadline is not sent again while it may still land (no duplicate); it is looked at again
        at the next flush, and waited for once more at the end."""
        from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

        while self._unsent:
            result = self._unsent[0]
            if self._inflight is None:
                self._inflight, wait_s = BoundedCall(self.store.record_scenario, self.run_id, result), \
                    self._write_timeout_s
            else:
                wait_s = self._write_timeout_s if final or not self._stalled else 0.0
            if not self._inflight.wait(wait_s):
                if not self._stalled:
                    log.error("could not record %s (%d scenario(s) waiting): the records database did not answer "
                              "in %.0f s", result.nodeid, len(self._unsent), self._write_timeout_s)
                self._stalled = True
                return False
            call, self._inflight, self._stalled = self._inflight, None, False
            exc = call.error
            if exc is not None:  # the run goes on; written later, or named as lost at the end
                away = isinstance(exc, (OperationalError, InterfaceError, OSError)) \
                    or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
                if not away:
                    log.error("the records database refused %s: %s", result.nodeid, exc)
                    self._refused.append(result.nodeid)
                    self._unsent.pop(0)
                    continue
                log.error("could not record %s (%d scenario(s) waiting): %s", result.nodeid, len(self._unsent),
                          exc)
                return False
            self._unsent.pop(0)
            self._recorded += 1
        return True

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self.run_id is None:
            return
        self._flush(final=True)
        self.lost = self._refused + [r.nodeid for r in self._unsent]
        code = int(session.exitstatus)
        status = {0: "passed", 1: "failed", 2: "aborted", 3: "aborted"}.get(code, "failed")
        reason = {2: "interrupted", 3: "pytest internal error", 4: "usage error",
                  5: "no tests collected"}.get(code)
        if self.lost:
            session.exitstatus = code = RECORDS_LOST_EXIT
            status = "aborted" if status == "aborted" else "failed"
            reason = "; ".join(filter(None, [reason, f"{len(self.lost)} scenario(s) not recorded: "
                                                     f"{', '.join(self.lost)}"]))
        # left 'running' when this fails: the next open of the database marks it aborted
        if self._stalled:
            log.error("could not finish run %s: the records database does not answer", self.run_id)
            return
        call = BoundedCall(self.store.finish_run, self.run_id, status, exit_status=code, reason=reason)
        if not call.wait(self._write_timeout_s):
            log.error("could not finish run %s: the records database did not answer in %.0f s", self.run_id,
                      self._write_timeout_s)
        elif call.error is not None:
            log.error("could not finish run %s: %s", self.run_id, call.error)

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        from harness.records import mask_url

        url = mask_url(self.store.url)
        terminalreporter.write_sep("-", f"facehil: run {self.run_id} recorded ({self._recorded} scenario(s)) in {url}")
        for nodeid in self.lost:
            terminalreporter.write_line(f"NOT RECORDED: {nodeid}", red=True)
        if self.lost:
            terminalreporter.write_line(f"{len(self.lost)} scenario(s) not recorded: exit status "
                                        f"{RECORDS_LOST_EXIT}", red=True)

    def pytest_unconfigure(self, config):
        if self._stalled:  # a write still hangs on its connection: leave it to the daemon thread
            return
        self.store.close()
