"""`facehil campaign run | plan | compare | merge | report`: reader-level accuracy and attack campaigns.

`run` drives transactions through the rig and the reader under test (harness/campaign), one
row each in the records database; without `--station` it starts the simulated station for the
duration (like `facehil run`). `plan` says how many subjects and transactions a claim needs.
`compare` sets two campaign runs side by side (firmware A/B). `report` writes the HTML report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()
log = logging.getLogger(__name__)

PCSC_SOCKET_ENV = "PCSCLITE_CSOCK_NAME"


@contextmanager
def _station(station_file: Path | None, firmware: str | None, faults: str | None, keep_state: Path | None):
    """The Station: from the file, or a simulated one started for the block."""
    from harness.config import StationConfigError, load_station

    if station_file is not None:
        if firmware or faults:
            raise typer.BadParameter("--firmware and --faults apply to the simulated station only (no --station)")
        try:
            yield load_station(station_file)
        except StationConfigError as exc:
            raise typer.BadParameter(str(exc)) from None
        return
    from sim.station import running_station  # the harness uses sim only as the sim station factory

    state_dir = keep_state or Path(tempfile.mkdtemp(prefix="facehil-campaign-"))
    options = {"place_card": False}
    if faults:
        options["reader_faults"] = faults
    kwargs = {"firmware": firmware} if firmware else {}
    console.print(f"starting the simulated station in {state_dir} ...")
    previous = os.environ.get(PCSC_SOCKET_ENV)
    try:
        with running_station(state_dir, private_pcscd=True, options=options, **kwargs) as path:
            yield load_station(path)
    finally:
        if previous is None:
            os.environ.pop(PCSC_SOCKET_ENV, None)
        if keep_state is None:
            shutil.rmtree(state_dir, ignore_errors=True)


@app.command()
def run(plan: Path = typer.Option(None, "--plan", help="Campaign plan (TOML); default: the nightly-size plan "
                                                       "(harness/campaign/plan.py DEFAULT_PLAN). Not with --resume."),
        station: Path = typer.Option(None, "--station", help="Station file; default: start the simulated station."),
        db: str = typer.Option(None, "--db", help="Records database URL or path (default FACEHIL_DB / local file)."),
        report: Path = typer.Option(None, "--report", help="Write the campaign report (HTML) into this folder."),
        resume: int = typer.Option(None, "--resume", help="Continue the stopped campaign run RUN."),
        firmware: str = typer.Option(None, "--firmware", help="Simulated station only: the reader's firmware."),
        faults: str = typer.Option(None, "--faults", help="Simulated station only: faulty-reader options."),
        state_dir: Path = typer.Option(None, "--state-dir", help="Simulated station only: keep its state here."),
        as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON.")) -> None:
    """Run a campaign (or resume one) and print its figures and verdicts."""
    from harness.campaign.limits import parse_campaign_limits
    from harness.campaign.metrics import summarize_run
    from harness.campaign.plan import DEFAULT_PLAN, PlanError, load_plan, parse_plan
    from harness.campaign.session import CampaignError, open_devices, resume_campaign, start_campaign
    from harness.config import StationConfigError
    from harness.deck import DeckError, load_deck
    from harness.records import RecordsError, RecordStore

    if plan is not None and resume is not None:
        raise typer.BadParameter("give --plan PLAN.toml for a new campaign, or --resume RUN (not both)")
    try:
        the_plan = load_plan(plan) if plan is not None else parse_plan(DEFAULT_PLAN, "default plan")
    except PlanError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        store = RecordStore(db)
    except RecordsError as exc:
        raise typer.BadParameter(str(exc)) from None
    with ExitStack() as stack:
        stack.callback(store.close)
        st = stack.enter_context(_station(station, firmware, faults, state_dir))
        try:
            parse_campaign_limits(st)
            deck = load_deck(st)
            devices = stack.enter_context(open_devices(st))
        except (StationConfigError, DeckError, CampaignError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        progress = Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console)
        with progress:
            task = progress.add_task("campaign", total=None)

            def tick(i, trial, outcome):
                progress.update(task, advance=1, description=f"{trial.kind} {trial.card}: {outcome.decision}")

            try:
                if resume is not None:
                    run_id = resume_campaign(store, resume, devices, progress=tick)
                else:
                    run_id = start_campaign(store, st, the_plan, deck, devices, progress=tick)
            except (CampaignError, RecordsError) as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from None
        summary = summarize_run(store, run_id)
        if report is not None:
            from harness.campaign.report import write_report

            path = write_report(report, summary)
            console.print(f"report: {path}")
    _print_summary(summary, as_json)
    raise typer.Exit(1 if any(v["verdict"] == "FAIL" for v in summary["verdicts"]) else 0)


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.2f}%"


def _print_summary(s: dict, as_json: bool) -> None:
    if as_json:
        slim = {k: v for k, v in s.items() if k not in ("det",)}
        print(json.dumps(slim, default=str, indent=1))
        return
    console.print(f"campaign run {s['run_id']}: {s['transactions']} of {s['scheduled']} transactions "
                  f"({s['errors']} station errors), seed {s['seed']}, firmware {s.get('firmware')}, "
                  f"stopped by {s.get('stopped_by')}")
    t = Table("figure", "errors/trials", "subjects", "rate", "95% CI (clustered)", "deff")
    for name, r in s["rates"].items():
        t.add_row(name, f"{r['errors']}/{r['trials']}", str(r["subjects"]), _pct(r["value"]),
                  f"{_pct(r['ci'][0])} .. {_pct(r['ci'][1])}", str(r["design_effect"] or "-"))
    console.print(t)
    g = s["times"]["genuine"]
    if g.get("n"):
        console.print(f"genuine transaction time: median {g['median_ms']:.0f} ms, p90 {g['p90_ms']:.0f} ms, "
                      f"p95 {g['p95_ms']:.0f} ms (n={g['n']})")
    if s["attacks_through"]:
        console.print(f"attacks that got through: {len(s['attacks_through'])} "
                      + ", ".join(f"#{a['seq']} {a['species']} on {a['card']}" for a in s["attacks_through"][:10]))
    if not s["det"]["available"]:
        console.print(s["det"]["note"])
    for v in s["verdicts"]:
        style = {"PASS": "green", "FAIL": "red"}.get(v["verdict"], "yellow")
        console.print(f"[{style}]{v['verdict']:12}[/{style}] {v['name']} <= {v['limit']} at {v['confidence']:.0%}: "
                      f"{v['figure']} bounds {_pct(v['bound_low'])} .. {_pct(v['bound_high'])}")


@app.command()
def plan(claim: list[str] = typer.Option(..., "--claim", help='e.g. "far<=0.001@0.95" (also frr, apcer, ...)'),
         per_subject: int = typer.Option(10, "--per-subject", help="Transactions per subject for this figure."),
         icc: float = typer.Option(0.1, "--icc", help="Intra-subject correlation of errors (design effect)."),
         expected: float = typer.Option(0.0, "--expected", help="Expected true rate (0: plan for zero errors)."),
         ) -> None:
    """How many subjects and transactions a claim needs."""
    from harness.campaign.planning import ClaimError, parse_claim, sample_size

    for text in claim:
        try:
            c = parse_claim(text)
            n = sample_size(c, per_subject=per_subject, icc=icc, expected=expected)
        except ClaimError as exc:
            raise typer.BadParameter(str(exc)) from None
        console.print(f"{text}: {n.transactions} transactions from {n.subjects} subjects "
                      f"({per_subject} each; design effect {n.design_effect:.2f}, "
                      f"{n.independent} if independent; allowing {n.errors_allowed} error(s))")


@app.command()
def compare(run_a: int = typer.Argument(..., help="Baseline campaign run (e.g. the released firmware)."),
            run_b: int = typer.Argument(..., help="Candidate campaign run."),
            db: str = typer.Option(None, "--db"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Each figure of B against A: difference, its interval and REGRESSION / IMPROVEMENT / no-change."""
    from harness.campaign.compare import compare_runs
    from harness.records import RecordsError, RecordStore

    try:
        with RecordStore(db) as store:
            result = compare_runs(store, run_a, run_b)
    except RecordsError as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        print(json.dumps(result, default=str, indent=1))
    else:
        t = Table("figure", f"A (run {run_a})", f"B (run {run_b})", "B - A", "95% CI", "p", "flag")
        for line in result["lines"]:
            t.add_row(line["figure"], line["a"], line["b"], line["diff"], line["ci"], line["p"], line["flag"])
        console.print(t)
    raise typer.Exit(1 if any(x["flag"] == "REGRESSION" for x in result["lines"]) else 0)


@app.command()
def merge(run_ids: list[int] = typer.Argument(..., help="Campaign runs to merge (e.g. one shard per rig)."),
          db: str = typer.Option(None, "--db")) -> None:
    """One campaign run from several runs of the same firmware (shards run on several rigs)."""
    from harness.campaign.metrics import summarize_run
    from harness.campaign.records import merge_campaigns
    from harness.records import RecordsError, RecordStore

    try:
        with RecordStore(db) as store:
            new_id = merge_campaigns(store, run_ids)
            summary = summarize_run(store, new_id)
            failed = any(v["verdict"] == "FAIL" for v in summary["verdicts"])
            store.finish_run(new_id, "failed" if failed else "passed", exit_status=1 if failed else 0)
            summary["status"] = "failed" if failed else "passed"
    except RecordsError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"merged runs {', '.join(map(str, run_ids))} into campaign run {new_id}")
    _print_summary(summary, False)


@app.command("report")
def report_cmd(run_id: int = typer.Argument(...), out: Path = typer.Option(..., "--out", help="Folder."),
               db: str = typer.Option(None, "--db"),
               against: int = typer.Option(None, "--against", help="Also compare with this baseline run.")) -> None:
    """Write the HTML report of a campaign run."""
    from harness.campaign.compare import compare_runs
    from harness.campaign.metrics import summarize_run
    from harness.campaign.report import write_report
    from harness.records import RecordsError, RecordStore

    try:
        with RecordStore(db) as store:
            summary = summarize_run(store, run_id)
            comparison = compare_runs(store, against, run_id) if against is not None else None
    except RecordsError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"report: {write_report(out, summary, comparison)}")
