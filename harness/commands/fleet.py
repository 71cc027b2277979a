"""`facehil fleet run|status` (the lab's dispatcher) and `facehil worker` (one per rig host)."""

from __future__ import annotations

import os
import shlex
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from harness.fleet import BROKER_ENV, DEFAULT_VISIBILITY_TIMEOUT_S, BrokerSettings, Snapshot, batch_passed, \
    enqueue, follow, make_app
from harness.fleet_db import FleetDB, FleetError, Job
from harness.records import DB_ENV, RecordsError, mask_url

app = typer.Typer(no_args_is_help=True)
worker_app = typer.Typer(invoke_without_command=True)
console = Console()

_JOB_STYLE = {"passed": "green", "failed": "red", "aborted": "red", "lost": "red", "quarantined": "magenta",
              "running": "cyan", "queued": "dim"}
_RIG_STYLE = {"online": "green", "busy": "cyan", "offline": "red", "quarantined": "magenta"}


def _db_url(db: str | None) -> str:
    url = db or os.environ.get(DB_ENV)
    if not url:
        console.print(f"[red]no database:[/red] give --db postgresql://... (or set {DB_ENV})")
        raise typer.Exit(2)
    if db and mask_url(db) != db:
        console.print(f"[yellow]--db carries a password, which `ps` shows to every user of this host: "
                      f"set {DB_ENV} instead[/yellow]")
    return url


def _broker_url(broker: str | None) -> str:
    url = broker or os.environ.get(BROKER_ENV)
    if not url:
        console.print(f"[red]no broker:[/red] give --broker redis://host:6379/0 (or set {BROKER_ENV}); "
                      "without a broker, use `facehil run` on one machine")
        raise typer.Exit(2)
    return url


def _open(db: str | None) -> FleetDB:
    try:
        return FleetDB.open(_db_url(db))
    except RecordsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _styled(text: str, styles: dict[str, str]) -> str:
    style = styles.get(text)
    return f"[{style}]{text}[/{style}]" if style else text


# ---------------------------------------------------------------------------------------------
# facehil fleet run


def _progress_table(db: FleetDB, snap: Snapshot, title: str) -> Table:
    table = Table(title=title, show_edge=False)
    for col in ("rig", "job", "phase", "try", "run", "scenarios", "elapsed", "detail"):
        table.add_column(col, overflow="fold" if col == "detail" else "ellipsis")
    run_ids = [j.run_ids[-1] for j in snap.jobs if j.run_ids]
    counts = db.store.scenario_counts(run_ids) if run_ids else {}
    for j in snap.jobs:
        run = j.run_ids[-1] if j.run_ids else None
        c = counts.get(run, {}) if run is not None else {}
        bad = c.get("failed", 0) + c.get("error", 0)
        scen = f"[green]{c.get('passed', 0)}[/green]/[red]{bad}[/red]" if c else ""
        end = j.ended_at or snap.now
        elapsed = f"{(end - j.started_at).total_seconds():.0f} s" if j.started_at else ""
        table.add_row(j.rig, _styled(j.state, _JOB_STYLE), j.phase or "", str(j.attempts or ""),
                      str(run) if run is not None else "", scen, elapsed, j.detail or "")
    return table


@app.command("run")
def run(suite: str = typer.Argument(..., help="Suite to run on every selected rig (nightly, smoke)."),
        rigs: list[str] = typer.Option(None, "--rigs", help="Rig names or tags (repeat or comma-separate); "
                                                                  "default: every registered rig."),
        firmware: str = typer.Option(None, "--firmware", help="Reader firmware the rigs must run; a rig "
                                                                   "running another version fails its job."),
        keyword: str = typer.Option(None, "-k", help="Only scenarios matching this pytest -k expression."),
        broker: str = typer.Option(None, "--broker", help=f"Celery broker URL, redis://... (or {BROKER_ENV})."),
        db: str = typer.Option(None, "--db", help=f"Shared records DB, postgresql://... (or {DB_ENV})."),
        deadline: float = typer.Option(3600.0, "--deadline", help="Seconds after which a rig that has not "
                                                                      "reported counts as failed."),
        poll: float = typer.Option(0.5, "--poll", help="Seconds between progress updates."),
        no_follow: bool = typer.Option(False, "--no-follow", help="Enqueue and exit (print the batch id)."),
        ) -> None:
    """Enqueue SUITE once per rig, then follow it live; exits 1 if any rig fails or never reports."""
    from harness.suites import SuiteError, get_suite

    try:
        get_suite(suite)
    except SuiteError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    broker_url = _broker_url(broker)
    fleet = _open(db)
    try:
        try:
            selected = fleet.select_rigs(_split(rigs))
            celery = make_app(BrokerSettings(broker_url))
            batch = enqueue(celery, fleet, suite, [r.name for r in selected], keyword=keyword,
                            firmware=firmware, deadline_s=deadline)
        except FleetError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2)
        console.print(f"batch {batch.id}: {suite} on {len(batch.jobs)} rig(s): {', '.join(batch.rigs)}")
        for st in fleet.status():
            if st.name in batch.rigs and st.state in ("offline", "quarantined"):
                console.print(f"[yellow]{st.name} is {st.state}[/yellow]: its job waits in its queue "
                              f"(a health check runs first) until the deadline")
        if no_follow:
            return
        title = f"{suite}{' -k ' + keyword if keyword else ''}{' firmware ' + firmware if firmware else ''}"
        last = None
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            for snap in follow(fleet, batch, poll_s=poll):
                live.update(_progress_table(fleet, snap, title))
                last = snap
        console.print()
        jobs: list[Job] = last.jobs if last else []
        ok = batch_passed(jobs)
        bad = [j for j in jobs if j.state != "passed"]
        for j in bad:
            console.print(f"[red]{j.rig}: {j.state}[/red] {j.detail or ''}")
        console.print(f"{'[green]PASS[/green]' if ok else '[red]FAIL[/red]'} {suite}: "
                      f"{len(jobs) - len(bad)}/{len(jobs)} rig(s) passed")
        raise typer.Exit(0 if ok else 1)
    finally:
        fleet.close()


# ---------------------------------------------------------------------------------------------
# facehil fleet campaign


def _campaign_table(db: FleetDB, snap: Snapshot, shards: dict[str, object], title: str) -> Table:
    from harness.campaign.shard import scheduled_counts, transaction_counts

    table = Table(title=title, show_edge=False)
    for col in ("shard", "rig", "cards", "job", "phase", "try", "run", "transactions", "elapsed", "detail"):
        table.add_column(col, overflow="fold" if col == "detail" else "ellipsis")
    run_ids = [j.run_ids[-1] for j in snap.jobs if j.run_ids]
    done, scheduled = transaction_counts(db.store, run_ids), scheduled_counts(db.store, run_ids)
    for j in sorted(snap.jobs, key=lambda j: shards[j.id].index):
        sh = shards[j.id]
        run = j.run_ids[-1] if j.run_ids else None
        count = f"{done.get(run, 0)}/{scheduled.get(run, '?')}" if run is not None else ""
        end = j.ended_at or snap.now
        elapsed = f"{(end - j.started_at).total_seconds():.0f} s" if j.started_at else ""
        table.add_row(f"{sh.index + 1}/{sh.count}", j.rig, ",".join(sh.cards), _styled(j.state, _JOB_STYLE),
                      j.phase or "", str(j.attempts or ""), str(run) if run is not None else "", count, elapsed,
                      j.detail or "")
    return table


def _campaign_cards(the_plan, station: Path | None) -> list[str]:
    """The campaign's cards: the plan's `[campaign] cards`, else the usable cards of a station
    file's deck (the rigs' decks are the lab's one deck)."""
    from harness.campaign.plan import PlanError, choose_cards
    from harness.config import StationConfigError, load_station
    from harness.deck import DeckError, load_deck

    if station is None:
        if not the_plan.cards:
            raise FleetError("the plan lists no [campaign] cards: list them, or give --station FILE (a rig's "
                             "station file) to shard the deck's cards")
        cards = list(the_plan.cards)
        return cards[:the_plan.max_cards] if the_plan.max_cards else cards
    try:
        deck = load_deck(load_station(station))
        return [c.id for c in choose_cards(the_plan, deck)]
    except (StationConfigError, DeckError, PlanError) as exc:
        raise FleetError(str(exc)) from None


@app.command("campaign")
def campaign(plan: Path = typer.Option(..., "--plan", help="Campaign plan (TOML) to split over the rigs."),
             rigs: list[str] = typer.Option(None, "--rigs", help="Rig names or tags (repeat or comma-separate); "
                                                                      "default: every registered rig."),
             station: Path = typer.Option(None, "--station", help="A station file whose deck gives the cards "
                                                                  "when the plan lists none."),
             firmware: str = typer.Option(None, "--firmware", help="Reader firmware every rig must run."),
             broker: str = typer.Option(None, "--broker", help=f"Celery broker URL, redis://... (or {BROKER_ENV})."),
             db: str = typer.Option(None, "--db", help=f"Shared records DB, postgresql://... (or {DB_ENV})."),
             deadline: float = typer.Option(3 * 3600.0, "--deadline", help="Seconds after which a rig that has "
                                                                           "not reported counts as failed."),
             poll: float = typer.Option(1.0, "--poll", help="Seconds between progress updates."),
             as_json: bool = typer.Option(False, "--json", help="Print the merged figures as JSON."),
             ) -> None:
    """Split a campaign into one shard per rig (by card, dealt by the seed), run the shards on the
    rigs' queues, merge them into one campaign run and print its figures. Exits 1 if a verdict
    FAILs or a shard is missing (its rig quarantined, lost or failed: named, and the merged
    verdicts are at best INCONCLUSIVE)."""
    import secrets

    from harness.campaign.plan import PlanError, load_plan
    from harness.campaign.shard import ShardResult, merge_shards, plan_toml, shard_plan
    from harness.commands.campaign import _print_summary
    from harness.fleet import CAMPAIGN_JOB, enqueue_jobs

    try:
        the_plan = load_plan(plan)
    except PlanError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2)
    broker_url = _broker_url(broker)
    fleet = _open(db)
    try:
        try:
            cards = _campaign_cards(the_plan, station)
            selected = [r.name for r in fleet.select_rigs(_split(rigs))]
            if not selected:
                raise FleetError("no rigs to run on: start `facehil worker` on the rig hosts first, or check --rigs")
            seed = the_plan.seed if the_plan.seed is not None else secrets.randbelow(2 ** 31)
            shards = shard_plan(the_plan, cards, selected, seed)
            celery = make_app(BrokerSettings(broker_url))
            batch = enqueue_jobs(celery, fleet, CAMPAIGN_JOB, [
                (sh.rig, {"firmware": firmware, "shard": sh.index + 1, "shards": sh.count, "cards": list(sh.cards),
                          "plan_toml": plan_toml(sh.plan)}) for sh in shards], deadline_s=deadline)
        except (FleetError, ValueError) as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(2)
        by_job = {job_id: sh for (_, job_id), sh in zip(batch.jobs, shards)}
        console.print(f"batch {batch.id}: campaign {plan.name} (seed {seed}, {len(cards)} cards) in "
                      f"{len(shards)} shard(s): " + "; ".join(f"{sh.rig} {','.join(sh.cards)}" for sh in shards))
        if len(shards) < len(selected):
            console.print(f"[yellow]{len(selected) - len(shards)} rig(s) left idle: fewer cards than rigs[/yellow]")
        for st in fleet.status():
            if st.name in batch.rigs and st.state in ("offline", "quarantined"):
                console.print(f"[yellow]{st.name} is {st.state}[/yellow]: its shard waits in its queue "
                              f"(a health check runs first) until the deadline")
        last = None
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            for snap in follow(fleet, batch, poll_s=poll):
                live.update(_campaign_table(fleet, snap, by_job, f"campaign {plan.name}"))
                last = snap
        console.print()
        jobs: list[Job] = last.jobs if last else []
        results = [ShardResult(by_job[j.id], j.id, j.state, j.detail, j.run_ids[-1] if j.run_ids else None)
                   for j in jobs]
        try:
            merged = merge_shards(fleet.store, results)
        except RecordsError as exc:
            console.print(f"[red]cannot merge the shards:[/red] {exc}")
            raise typer.Exit(1)
        for r in merged.complete:
            console.print(f"{r.shard.label} {r.shard.rig} (cards {', '.join(r.shard.cards)}): run {r.run_id}")
        for r in merged.missing:
            console.print(f"[red]{r.shard.label} {r.shard.rig} (cards {', '.join(r.shard.cards)}) MISSING:[/red] "
                          f"{escape(merged.reasons[r.job_id])}")
        if merged.run_id is None:
            console.print("[red]no shard finished: nothing to merge[/red]")
            raise typer.Exit(1)
        from harness.campaign.metrics import summarize_run

        summary = summarize_run(fleet.store, merged.run_id)
        console.print(f"merged {len(merged.complete)} of {len(shards)} shard(s) into campaign run {merged.run_id}")
        _print_summary(summary, as_json)
        if merged.missing:
            console.print(f"[red]INCOMPLETE[/red]: {len(merged.missing)} shard(s) missing; the merged verdicts "
                          f"are at best INCONCLUSIVE")
        failed = bool(merged.missing) or any(v["verdict"] == "FAIL" for v in summary["verdicts"])
        raise typer.Exit(1 if failed else 0)
    finally:
        fleet.close()


# ---------------------------------------------------------------------------------------------
# facehil fleet status


def _when(ts: datetime | None) -> str:
    return ts.astimezone().strftime("%m-%d %H:%M:%S") if ts else "-"


@app.command("status")
def status(db: str = typer.Option(None, "--db", help=f"Shared records DB (or {DB_ENV})."),
           ) -> None:
    """Each rig: online, busy, offline or quarantined; its lease; its last job and run."""
    fleet = _open(db)
    try:
        rows = fleet.status()
    finally:
        fleet.close()
    if not rows:
        console.print("no rigs registered: start `facehil worker --station FILE` on each rig host")
        raise typer.Exit(1)
    table = Table(show_edge=False)
    for col in ("rig", "state", "tags", "host", "heartbeat", "lease", "last job", "last run"):
        table.add_column(col, overflow="fold")
    for r in rows:
        lease = (f"{r.lease.holder} job {r.lease.job_id[:8]} until {_when(r.lease.expires_at)}"
                 if r.lease.live else ("expired" if r.lease.holder else "free"))
        job = f"{_styled(r.last_job.state, _JOB_STYLE)} {r.last_job.suite} {_when(r.last_job.ended_at)}" \
            if r.last_job else "-"
        run_ = f"#{r.last_run.id} {r.last_run.suite} {r.last_run.status}" if r.last_run else "-"
        state = _styled(r.state, _RIG_STYLE)
        if r.state == "quarantined" and r.quarantine_reason:
            state += f"\n{r.quarantine_reason}"
        table.add_row(r.name, state, ",".join(r.tags), r.host or "-", _age(r.heartbeat_age_s), lease, job, run_)
    console.print(table)


# ---------------------------------------------------------------------------------------------
# facehil worker


@worker_app.callback()
def worker(station: Path = typer.Option(..., "--station", help="This rig's station file."),
           name: str = typer.Option(None, "--name", help="Rig name (default: the station file's station.name)."),
           tags: list[str] = typer.Option(None, "--tags", help="Rig tags for `fleet run --rigs` (repeat or "
                                                                 "comma-separate)."),
           broker: str = typer.Option(None, "--broker", help=f"Celery broker URL, redis://... (or {BROKER_ENV})."),
           db: str = typer.Option(None, "--db", help=f"Shared records DB, postgresql://... (or {DB_ENV})."),
           health: str = typer.Option(None, "--health", help="`facehil run` arguments of the health check "
                                                               "(default: 'nightly -k test_health')."),
           lease_ttl: float = typer.Option(60.0, "--lease-ttl", help="Seconds a rig lease lasts unless renewed."),
           heartbeat: float = typer.Option(10.0, "--heartbeat", help="Seconds between rig heartbeats."),
           visibility_timeout: float = typer.Option(DEFAULT_VISIBILITY_TIMEOUT_S, "--visibility-timeout",
                                                    help="Seconds before an unacknowledged job (a lost "
                                                         "worker's) is delivered again."),
           restore_interval: float = typer.Option(10.0, "--restore-interval",
                                                  help="Seconds between sweeps for lost workers' jobs."),
           suite_timeout: float = typer.Option(3 * 3600.0, "--suite-timeout", help="Seconds a suite may run."),
           log_dir: Path = typer.Option(None, "--log-dir", help="Suite logs (default ~/.local/state/facehil/fleet)."),
           log_dir_max_mb: float = typer.Option(500.0, "--log-dir-max-mb", help="Older jobs' logs are deleted once "
                                                                              "the log folder holds more."),
           run_command: str = typer.Option(None, "--run-command", help="Command that runs a suite, e.g. to wrap it "
                                                                        "(default: this facehil's `run`)."),
           loglevel: str = typer.Option("INFO", "--loglevel"),
           ) -> None:
    """Serve one rig: run the jobs of its queue, one at a time, health check first."""
    from harness.fleet_worker import DEFAULT_HEALTH_CHECK, WorkerConfig, serve, station_name

    if not station.is_file():
        console.print(f"[red]station file not found:[/red] {station}")
        raise typer.Exit(2)
    try:
        rig = name or station_name(station)
        cfg = WorkerConfig(rig=rig, station_file=str(station.resolve()), db_url=_db_url(db),
                           broker=BrokerSettings(_broker_url(broker), visibility_timeout, restore_interval),
                           tags=_split(tags), health_check=health or DEFAULT_HEALTH_CHECK,
                           lease_ttl_s=lease_ttl, heartbeat_interval_s=heartbeat, suite_timeout_s=suite_timeout,
                           log_dir=str(log_dir.resolve()) if log_dir else "",
                           log_dir_max_bytes=int(log_dir_max_mb * 1024 * 1024))
        if run_command:
            cfg.run_command = shlex.split(run_command)
        serve(cfg, loglevel=loglevel)
    except (FleetError, RecordsError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
