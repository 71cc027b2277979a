"""`facehil sim card switch ID --to face-auth|standard`: the municipality switches a card in place (N4)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, help="The simulated station's cards.")
console = Console()
STATION_FILE = "station.toml"


def _card_entry(station_file: Path, card_id: str) -> dict:
    try:
        doc = tomllib.loads(station_file.read_text(encoding="utf-8"))
    except OSError:
        raise typer.BadParameter(f"no simulated station in {station_file.parent} (no {station_file.name}): "
                                 "start one with `facehil sim up`", param_hint="--state-dir") from None
    except tomllib.TOMLDecodeError as exc:
        raise typer.BadParameter(f"{station_file}: not valid TOML: {exc}", param_hint="--state-dir") from None
    entries = list(doc.get("cards", []))
    ref = doc.get("pcsc", {}).get("reference_card")
    if ref:
        entries.append(ref)
    for entry in entries:
        if entry.get("id") == card_id:
            return entry
    known = ", ".join(str(e.get("id")) for e in entries) or "none"
    raise typer.BadParameter(f"the station in {station_file.parent} has no card {card_id!r} (cards: {known})",
                             param_hint="ID")


@app.command("switch")
def switch(card_id: str = typer.Argument(..., metavar="ID", help="The card's id in the station file."),
           to: str = typer.Option(..., "--to", help="The new profile: face-auth or standard."),
           pin: str = typer.Option(None, "--pin", help="Standard only: the new 4-digit PIN (default: random, "
                                                       "written to the persona file)."),
           state_dir: Path = typer.Option(None, "--state-dir", help="The simulated station's folder.")) -> None:
    """Switch a card between standard and face-auth in place, as the municipality does: the same card
    (My Number, user-auth certificate and serial), a new profile. A running card process serves it at once."""
    from sim.card.control import CardControl, ControlError
    from sim.card.switch import SwitchError, reset_switched_counters, switch_profile
    from sim.station import default_state_dir

    folder = state_dir or default_state_dir()
    entry = _card_entry(folder / STATION_FILE, card_id)
    try:
        result = switch_profile(Path(entry["persona"]), to, pin=pin)
    except SwitchError as exc:
        console.print(f"[red]switch refused:[/red] {exc}")
        raise typer.Exit(1)
    served = False
    if entry.get("control"):
        try:
            CardControl.from_address(str(entry["control"])).reload()
            served = True
        except ControlError as exc:
            console.print(f"[yellow]card process not reached ({exc}); it serves the new profile when started[/yellow]")
    if not served:  # the counters the card process would have reset on RELOAD
        from sim.card.persona import COUNTERS
        from sim.card.state import CardState

        state = folder / "cards" / f"{card_id}.state.json"  # sim.card.station.spawn_card's path
        if state.exists():
            reset_switched_counters(CardState.load(state, result.persona.start_tries(), COUNTERS))
    console.print(f"card {card_id}: {result.previous_profile} -> {to}; user-auth certificate {result.auth_serial} "
                  "kept (its registration stays valid)")
    if result.pin is not None:
        console.print(f"the new PIN is in the persona file {entry['persona']}")
