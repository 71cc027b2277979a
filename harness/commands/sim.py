"""`facehil sim up|status|down|deck`: the simulated station."""

from __future__ import annotations

import datetime as dt
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
                                          help="Run a pcscd of our own in private mount and network namespaces: "
                                               "its vpcd ports are off every network (hardware.md 9.1)."),
       ) -> None:
    """Start the simulated station; prints the station file's path."""
    try:
        path = sim_up(state_dir, private_pcscd=private_pcscd, firmware=firmware,
                      dataset=str(dataset) if dataset else None)
    except StationError as exc:
        console.print(f"[red]sim up failed:[/red] {exc}")
        raise typer.Exit(1)
    if not private_pcscd:  # stdout stays the path alone, for S=$(facehil sim up)
        typer.echo("note: the system pcscd's vpcd listens on every interface (TCP 35963-35964); "
                   "--private-pcscd keeps the card slots off the network (hardware.md 9.1)", err=True)
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


@app.command("deck")
def deck(dataset: Path = typer.Option(None, help="Face dataset (else FACEHIL_FACES, else packaged samples)."),
         out: Path = typer.Option(..., help="Folder to write personas/, cards/ and pki/ into."),
         count: int = typer.Option(6, min=1, max=999, help="How many personas."),
         seed: int = typer.Option(0, help="Seed: the same seed gives the same deck."),
         ) -> None:
    """Generate a deck of personas (standard and face-auth cards) and their PKI."""
    from harness.facedata import FaceDataError, resolve_faces
    from sim.card.deck import generate_deck
    from sim.card.persona import Persona

    try:
        faces = resolve_faces(dataset)
        paths = generate_deck(faces, out, count=count, seed=seed)
    except (FaceDataError, OSError, ValueError) as exc:
        console.print(f"[red]sim deck failed:[/red] {exc}")
        raise typer.Exit(1)
    table = Table("id", "profile", "age", "registered", "revoked", "file")
    today = dt.date.today()
    for path in paths:
        p = Persona.load(path)
        table.add_row(p.id, p.profile, str(p.age_on(today)), "yes" if p.registered_for_insurance else "no",
                      "yes" if p.revoked else "no", str(path))
    console.print(table)
    if faces.low_fidelity:
        console.print("[yellow]faces are low-fidelity packaged samples; set FACEHIL_FACES for a real dataset[/yellow]")
    print(out.resolve())


from harness.commands.sim_card import app as card_app  # noqa: E402  (`facehil sim card switch`)

app.add_typer(card_app, name="card")
