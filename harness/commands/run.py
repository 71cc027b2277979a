"""`facehil run smoke|nightly`: run a scenario suite with a live progress display.

pytest runs in a subprocess (its own PC/SC client state, its own simulated station, killed
cleanly on Ctrl-C) with the facehil plugin and `harness.commands.run_events`, which streams
results back over a pipe. pytest's own output goes to a log file; the terminal shows a rich
progress bar, each non-passing scenario as it happens, and a per-flow summary.
Exit status: pytest's (0 only when every scenario passed or was skipped), or 6 when a finished
scenario could not be written to the records database (each one is named: "NOT RECORDED").
The database URL reaches pytest through FACEHIL_DB, never its command line: a password in it
must not show in `ps`, in the logged command or in the run's recorded arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.commands.run_events import EVENTS_FD_ENV
from harness.records import DB_ENV
from harness.suites import SUITES, get_suite

app = typer.Typer(no_args_is_help=True)
console = Console()

_STYLE = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow", "xfailed": "yellow",
          "xpassed": "red"}


@dataclass
class RunOptions:
    suite: str
    station: Path | None = None
    db: str | None = None
    report_dir: Path | None = None
    junit: Path | None = None
    keyword: str | None = None
    faults: str | None = None
    log_path: Path | None = None
    record: bool = False  # record into FACEHIL_DB (or the default file) without --db
    results_path: Path | None = None  # one JSON line per finished scenario, written as each finishes
    extra_args: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    exit_code: int
    wall_s: float
    counts: Counter
    run_id: int | None
    log_path: Path
    report_path: Path | None = None
    lost: list[str] = field(default_factory=list)  # scenarios that finished but are not in the database


LOST_PREFIX = "NOT RECORDED: "  # one line per lost scenario in the output (a fleet worker reads them)


def pytest_command(opts: RunOptions) -> list[str]:
    """The pytest command line for a suite (exposed for tests and for `--dry-run`)."""
    suite = get_suite(opts.suite)
    cmd = [sys.executable, "-m", "pytest", *suite.pytest_args(), "-p", "harness.commands.run_events",
           "-p", "no:cacheprovider", "-q", "-rfEs", "--suite", suite.name]
    if opts.station:
        cmd += ["--station", str(opts.station)]
    if opts.db or opts.record or opts.report_dir:
        # FACEHIL_DB carries --db (child_env); a report is built from a recorded run
        cmd += ["--record"]
    if opts.junit:
        cmd += [f"--junitxml={opts.junit}"]
    if opts.keyword:
        cmd += ["-k", opts.keyword]
    if opts.faults:
        cmd += ["--faults", opts.faults]
    return cmd + list(opts.extra_args)


def child_env(opts: RunOptions) -> dict[str, str]:
    """pytest's environment: the database URL goes here, not on its command line."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if opts.db:
        env[DB_ENV] = opts.db
    return env


class _Display:
    """Turns the child's event lines into the progress bar and the summary."""

    def __init__(self, progress: Progress, task, results_fh=None):
        self.progress, self.task = progress, task
        self.results_fh = results_fh  # the run's own account of what finished, kept apart from the database
        self.counts: Counter = Counter()
        self.by_flow: dict[str, Counter] = defaultdict(Counter)
        self.problems: list[dict] = []
        self.measure_fails: list[tuple[str, dict]] = []
        self.run_id: int | None = None
        self.exitstatus: int | None = None
        self.lost: list[str] = []

    def handle(self, line: str) -> None:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            return
        kind = ev.get("ev")
        if kind == "collected":
            self.progress.update(self.task, total=ev["count"])
        elif kind == "start":
            self.progress.update(self.task, description=_short(ev["nodeid"]))
        elif kind == "result":
            outcome = ev["outcome"]
            if self.results_fh is not None:
                self.results_fh.write(json.dumps({k: ev.get(k) for k in ("nodeid", "outcome", "recorded")}) + "\n")
                self.results_fh.flush()
            self.counts[outcome] += 1
            self.by_flow[ev.get("flow") or "-"][outcome] += 1
            self.progress.advance(self.task)
            self._tally()
            for m in ev.get("measurements") or []:
                if m.get("outcome") in ("FAIL", "MARGINAL"):
                    self.measure_fails.append((ev["nodeid"], m))
            if ev.get("recorded") is False:
                self.progress.console.print(f"[red]not yet recorded[/red] {escape(ev['nodeid'])} (the records "
                                            "database is unreachable; written again later)")
            if outcome not in ("passed",):
                self.problems.append(ev)
                style = _STYLE.get(outcome, "red")
                self.progress.console.print(f"[{style}]{outcome.upper():8}[/{style}] {ev['nodeid']}"
                                            + (f"\n         {ev['message']}" if ev.get("message") else ""))
        elif kind == "collect_error":
            self.counts["error"] += 1
            self.progress.console.print(f"[red]COLLECTION ERROR[/red] {ev['nodeid']}: {' '.join(ev['message'])}")
        elif kind == "finish":
            self.run_id = ev.get("run_id")
            self.exitstatus = ev.get("exitstatus")
            self.lost = list(ev.get("lost") or [])

    def _tally(self) -> None:
        c = self.counts
        bad = c["failed"] + c["error"] + c["xpassed"]
        self.progress.update(self.task, tally=f"[green]{c['passed']} passed[/green] "
                                              f"[red]{bad} failed[/red] [yellow]{c['skipped']} skipped[/yellow]")


def _short(nodeid: str) -> str:
    path, _, rest = nodeid.partition("::")
    return f"{Path(path).stem.removeprefix('test_')}::{rest}"[:70]


def run_suite(opts: RunOptions, out: Console | None = None) -> RunResult:
    """Run the suite in a pytest subprocess, showing progress on ``out``."""
    out = out or console
    log_path = opts.log_path or (opts.report_dir / "pytest.log" if opts.report_dir
                                 else Path(tempfile.mkstemp(prefix="facehil-run-", suffix=".log")[1]))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = pytest_command(opts)
    read_fd, write_fd = os.pipe()
    env = dict(child_env(opts), **{EVENTS_FD_ENV: str(write_fd)})
    started = time.monotonic()
    progress = Progress(SpinnerColumn(), TextColumn("{task.description:<70}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[tally]}"), TimeElapsedColumn(), console=out, transient=False)
    results_cm = open(opts.results_path, "a", encoding="utf-8") if opts.results_path else contextlib.nullcontext()
    with open(log_path, "wb") as log_fh, results_cm as results_fh, progress:
        task = progress.add_task(f"starting {opts.suite}", total=None, tally="")
        display = _Display(progress, task, results_fh)
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, pass_fds=(write_fd,))
        os.close(write_fd)
        reader = threading.Thread(target=_pump, args=(read_fd, display), daemon=True)
        reader.start()
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # let the child tear its station down, then stop
            proc.send_signal(signal.SIGINT)
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        reader.join(timeout=5)
        progress.update(task, description=f"{opts.suite} finished")
    wall_s = time.monotonic() - started
    result = RunResult(exit_code=rc, wall_s=wall_s, counts=display.counts, run_id=display.run_id, log_path=log_path,
                       lost=display.lost)
    _summary(out, opts, display, result)
    if opts.report_dir:
        result.report_path = _write_report(out, opts, display.run_id)
        if result.report_path is None and result.exit_code == 0:
            result.exit_code = 1  # a report was asked for and could not be written
    return result


def _pump(fd: int, display: _Display) -> None:
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            display.handle(line)


def _summary(out: Console, opts: RunOptions, display: _Display, result: RunResult) -> None:
    table = Table(title=f"{opts.suite}: per flow", show_edge=False)
    table.add_column("flow")
    for col in ("passed", "failed", "error", "skipped"):
        table.add_column(col, justify="right")
    for flow in sorted(display.by_flow):
        c = display.by_flow[flow]
        table.add_row(flow, *(str(c[k]) if c[k] else "" for k in ("passed", "failed", "error", "skipped")))
    out.print(table)
    for nodeid, m in display.measure_fails:
        colour = "red" if m.get("outcome") == "FAIL" else "yellow"
        out.print(f"[{colour}]{m.get('outcome')}[/{colour}] {m.get('name')} = {m.get('value')} "
                  f"{m.get('unit') or ''} ({_short(nodeid)})")
    for nodeid in result.lost:
        out.print(f"[red]{LOST_PREFIX}[/red]{escape(nodeid)}", soft_wrap=True)
    if result.lost:
        out.print(f"[red]{len(result.lost)} finished scenario(s) are not in the records database[/red]")
    c = result.counts
    verdict = "[green]PASS[/green]" if result.exit_code == 0 else f"[red]FAIL (exit {result.exit_code})[/red]"
    out.print(f"{verdict} {opts.suite}: {c['passed']} passed, {c['failed']} failed, {c['error']} errors, "
              f"{c['skipped']} skipped in {result.wall_s:.1f} s")
    out.print(f"pytest log: {result.log_path}")
    if opts.junit:
        out.print(f"JUnit XML: {opts.junit}")


def _write_report(out: Console, opts: RunOptions, run_id: int | None) -> Path | None:
    from harness.records import RecordsError, RecordStore
    from harness.report import write_run_report

    if run_id is None:
        out.print("[red]no recorded run: cannot write the report[/red] (see the pytest log)")
        return None
    path = Path(opts.report_dir) / f"run-{run_id}.html"
    try:
        with RecordStore(opts.db) as store:
            write_run_report(store, path, run_id)
    except (RecordsError, OSError) as exc:
        out.print(f"[red]cannot write the report:[/red] {exc}")
        return None
    out.print(f"report: {path.resolve()}")
    return path.resolve()


def _suite_command(name: str):
    def command(
        station: Path = typer.Option(None, "--station", help="Station file; without it the simulated station is started."),
        db: str = typer.Option(None, "--db", help="Record the run into this DB (SQLite path or URL, e.g. postgresql://...); "
                                                  "a URL with a password is better given in FACEHIL_DB with --record."),
        record: bool = typer.Option(False, "--record", help="Record the run into FACEHIL_DB (or the default SQLite file)."),
        report: Path = typer.Option(None, "--report", help="Write the HTML report into this folder."),
        junit: Path = typer.Option(None, "--junit", help="Write JUnit XML to this file."),
        keyword: str = typer.Option(None, "-k", help="Only scenarios matching this pytest -k expression."),
        faults: str = typer.Option(None, "--faults", help="Simulated station only: reader faults NAME,... to inject."),
        log: Path = typer.Option(None, "--log", help="pytest's own output (default: REPORT/pytest.log or a temp file)."),
        results: Path = typer.Option(None, "--results", help="Append one JSON line per finished scenario to this file "
                                                             "(nodeid, outcome, recorded), as each finishes."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the pytest command line and exit."),
    ) -> None:
        if station is not None and not station.is_file():
            console.print(f"[red]station file not found:[/red] {station}")
            raise typer.Exit(2)
        opts = RunOptions(suite=name, station=station, db=db, report_dir=report, junit=junit, keyword=keyword,
                          faults=faults, log_path=log, record=record, results_path=results)
        if dry_run:
            print(" ".join(pytest_command(opts)))
            return
        raise typer.Exit(run_suite(opts).exit_code)

    command.__doc__ = f"{SUITES[name].description} (budget {SUITES[name].budget_s:.0f} s on the simulated station)."
    return command


# one sub-command per suite: `facehil run smoke`, `facehil run nightly`
for _name in SUITES:
    app.command(_name)(_suite_command(_name))
