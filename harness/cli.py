"""`facehil` command line: one Typer app, one sub-app per area (see harness/commands/)."""

from __future__ import annotations

import logging

import typer

from harness.commands import card as card_cmd
from harness.commands import bench as bench_cmd
from harness.commands import sim as sim_cmd
from harness.commands import report as report_cmd
from harness.commands import demo as demo_cmd
from harness.commands import run as run_cmd
from harness.commands import fleet as fleet_cmd
from harness.commands import campaign as campaign_cmd
from harness.commands import screens as screens_cmd

app = typer.Typer(help="facehil: hardware-in-the-loop tests for face-authentication card readers.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(bench_cmd.app, name="bench", help="Face-match accuracy and latency benches.")
app.add_typer(sim_cmd.app, name="sim", help="Start, inspect and stop the simulated station.")
app.add_typer(report_cmd.app, name="report", help="HTML run reports and trend pages from the records.")
app.add_typer(card_cmd.app, name="card", help="Read the cards in PC/SC readers.")
app.add_typer(run_cmd.app, name="run", help="Run a scenario suite (smoke, nightly) with a progress display.")
app.add_typer(demo_cmd.app, name="demo", help="Run the nightly suite on the simulated station; print the report path.")
app.add_typer(fleet_cmd.app, name="fleet", help="Run suites across many rigs (Celery + Redis) and show their status.")
app.add_typer(campaign_cmd.app, name="campaign",
              help="Reader accuracy and attack campaigns: run, plan, compare, report.")
app.add_typer(screens_cmd.app, name="screens", help="Onboard a reader model through its screen (learn a screen map).")
app.add_typer(fleet_cmd.worker_app, name="worker", help="Serve one rig's fleet queue (run on each rig host).")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(show_path=False)])


if __name__ == "__main__":
    app()
