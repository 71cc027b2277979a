"""`facehil report html|trend|runs|clauses|mark-stale`: reports from the records database."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from harness.records import RecordsError, RecordStore, default_db_url

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)

DB_HELP = "Records database: a SQLite path or a URL (postgresql://...). Default: FACEHIL_DB or the user's SQLite file."


def _open(db: str | None) -> RecordStore:
    try:
        return RecordStore(db or default_db_url())
    except RecordsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)


@app.command("html")
def html(db: str = typer.Option(None, "--db", help=DB_HELP),
         run: int = typer.Option(None, "--run", help="Run id (default: the newest run)."),
         last: bool = typer.Option(False, "--last", help="The newest run (the default)."),
         out: Path = typer.Option(Path("facehil-report.html"), "--out", help="HTML file to write.")) -> None:
    """Write one run's self-contained HTML report."""
    from harness.report import write_run_report

    if run is not None and last:
        console.print("[red]give --run ID or --last, not both[/red]")
        raise typer.Exit(2)
    with _open(db) as store:
        try:
            path = write_run_report(store, out, run_id=run)
        except RecordsError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1)
    print(path.resolve())


@app.command("trend")
def trend(db: str = typer.Option(None, "--db", help=DB_HELP),
          last: int = typer.Option(30, "--last", min=2, help="How many of the newest finished runs to show."),
          suite: str = typer.Option(None, "--suite", help="Suite (default: that of the newest finished run)."),
          recent: int = typer.Option(1, "--recent", min=1, help="How many newest runs to test against the rest."),
          alpha: float = typer.Option(0.01, "--alpha", min=1e-6, max=0.5,
                                      help="Family-wise significance level (Holm)."),
          out: Path = typer.Option(Path("facehil-trend.html"), "--out", help="HTML file to write."),
          fail_on_regression: bool = typer.Option(False, "--fail-on-regression",
                                                  help="Exit 1 when a regression is flagged.")) -> None:
    """Write the trend page over nightly runs; flags only significant regressions."""
    from harness.report import write_trend_report
    from harness.report.trend import TrendRule

    with _open(db) as store:
        path, regressions = write_trend_report(store, out, last=last, suite=suite, recent=recent,
                                               rule=TrendRule(alpha=alpha))
    for v in regressions:
        console.print(f"[red]regression[/red] {v.name}: {v.baseline_stat:.4g} -> {v.recent_stat:.4g} "
                      f"(p_holm={v.p_adjusted:.2g})")
    print(path.resolve())
    if fail_on_regression and regressions:
        raise typer.Exit(1)


@app.command("runs")
def runs(db: str = typer.Option(None, "--db", help=DB_HELP),
         last: int = typer.Option(20, "--last", min=1),
         suite: str = typer.Option(None, "--suite")) -> None:
    """List the newest runs."""
    with _open(db) as store:
        rows = store.list_runs(last=last, suite=suite)
        counts = store.scenario_counts([r.id for r in rows])
    table = Table("run", "suite", "status", "started (UTC)", "station", "firmware", "scenarios")
    colour = {"passed": "green", "failed": "red", "aborted": "red", "running": "cyan"}
    for r in reversed(rows):
        c = counts.get(r.id, {})
        table.add_row(str(r.id), r.suite, f"[{colour.get(r.status, 'white')}]{r.status}[/]",
                      r.started_at.strftime("%Y-%m-%d %H:%M:%S"), r.station_name or "-", r.reader_firmware or "-",
                      ", ".join(f"{n} {o}" for o, n in sorted(c.items())))
    Console().print(table)


@app.command("clauses")
def clauses(db: str = typer.Option(None, "--db", help=DB_HELP),
            run: int = typer.Option(None, "--run", help="Run id (default: the newest run)."),
            width: int = typer.Option(None, "--width", min=60, help="Table width (default: the terminal's).")) -> None:
    """The conformance matrix of one run: each notice clause, its scenarios and its status.

    Exits 1 when a clause failed."""
    from rich.markup import escape  # node ids carry [param] brackets

    from harness.clauses import FAIL, ClauseError, matrix_from_records

    with _open(db) as store:
        try:
            run_id = run if run is not None else store.latest_run_id()
            if run_id is None:
                raise RecordsError("the records database holds no runs yet")
            data = store.load_run(run_id)
            matrix = matrix_from_records(data.scenarios)
        except (RecordsError, ClauseError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1)
    colour = {"pass": "green", "fail": "red", "not run": "yellow", "untested": "magenta"}
    table = Table(title=f"run {data.run.id} · {data.run.suite} · {data.run.status}: conformance to the notice")
    for name in ("clause", "the notice says", "scenarios", "status"):
        table.add_column(name, overflow="fold")  # never cut the notice's text short
    for r in matrix:
        text = escape(r.clause.text) + (f"\n[i]{escape(r.clause.why)}[/i]" if r.clause.why else "")
        cites = "\n".join(escape(f"{s.outcome or 'not run'}  {s.nodeid}") for s in r.scenarios) or "-"
        table.add_row(r.clause.id, text, cites, f"[{colour[r.status]}]{r.status}[/]")
    Console(width=width).print(table)
    if any(r.status == FAIL for r in matrix):
        raise typer.Exit(1)


@app.command("mark-stale")
def mark_stale(db: str = typer.Option(None, "--db", help=DB_HELP),
               stale_after_s: float = typer.Option(600.0, "--stale-after-s", min=0,
                                                   help="Heartbeat age that makes another host's run stale.")) -> None:
    """Mark runs whose process is gone as aborted."""
    try:
        store = RecordStore(db or default_db_url(), mark_stale=False)
    except RecordsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    with store:
        ids = store.mark_stale_runs_aborted(stale_after_s=stale_after_s)
    print(f"marked {len(ids)} run(s) aborted{': ' + ', '.join(map(str, ids)) if ids else ''}")
