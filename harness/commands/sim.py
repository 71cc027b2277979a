"""`facehil sim up|status|down|deck`: the simulated station."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sim.station import StationError, default_state_dir, sim_down, sim_status, sim_up

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("up")
def up(state_dir: Path = typer.Option(None, help="Where the station keeps its state and logs."),
       firmware: str = typer.Option("1.4.0", help="Reference reader firmware version to boot."),
       dataset: Path = typer.Option(None, help="Face dataset (else FACEHIL_FACES, else packaged samples)."),
       private_pcscd: bool = typer.Option(False, "--private-pcscd",
                                          help="Run a pcscd of our own in a private mount namespace."),
       ) -> None:
    """Start the simulated station; prints the station file's path."""
    try:
        path = sim_up(state_dir, private_pcscd=private_pcscd, firmware=firmware,
                      dataset=str(dataset) if dataset else None)
    except (StationError, OSError, RuntimeError) as exc:
        console.print(f"[red]sim up failed:[/red] {exc}")
        raise typer.Exit(1)
    print(path)


@app.command("status")
def status(state_dir: Path = typer.Option(None)) -> None:
    """Show every process of the simulated station; exits 1 if any has died."""
    rows = sim_status(state_dir or default_state_dir())
    if not rows:
        console.print("no simulated station is running")
        raise typer.Exit(1)
    table = Table("part", "pid", "state", "log")
    for r in rows:
        table.add_row(r["name"], str(r["pid"]), "[green]running[/green]" if r["alive"] else "[red]dead[/red]",
                      r["log_path"])
    console.print(table)
    if not all(r["alive"] for r in rows):
        raise typer.Exit(1)


@app.command("down")
def down(state_dir: Path = typer.Option(None)) -> None:
    """Stop every process the station started, by PID."""
    stopped = sim_down(state_dir or default_state_dir())
    console.print(f"stopped {len(stopped)} process(es): {', '.join(stopped) or '-'}")
