"""`facehil sim card switch ID --to face-auth|standard`: the municipality switches a card in place (N4)."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import typer
from rich.console import Console

log = logging.getLogger(__name__)
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


def switch_card(persona: Path, to: str, *, control: str | None = None, pin: str | None = None,
                state_path: Path | None = None, token: str | None = None):
    """Switch the card in place (sim.card.switch) and have its running card process serve it.

    Returns (SwitchResult, served). Without a reachable card process the retry counters in
    ``state_path`` (sim.card.station's ``cards/<id>.state.json``) are reset as RELOAD would."""
    from sim.card.control import CardControl, ControlError
    from sim.card.persona import COUNTERS
    from sim.card.state import CardState
    from sim.card.switch import reset_switched_counters, switch_profile

    result = switch_profile(persona, to, pin=pin)
    if control:
        try:
            CardControl.from_address(str(control), token=token).reload()
            return result, True
        except ControlError as exc:
            log.warning("card process at %s not reached: %s", control, exc)
    if state_path is not None and state_path.exists():
        reset_switched_counters(CardState.load(state_path, result.persona.start_tries(), COUNTERS))
    return result, False


@app.command("switch")
def switch(card_id: str = typer.Argument(..., metavar="ID", help="The card's id in the station file."),
           to: str = typer.Option(..., "--to", help="The new profile: face-auth or standard."),
           pin: bool = typer.Option(False, "--pin", help="Standard only: set the new 4-digit PIN, from "
                                                         "$FACEHIL_CARD_PIN, else a hidden prompt; never from argv "
                                                         "(default: random). It is written to the persona file."),
           state_dir: Path = typer.Option(None, "--state-dir", help="The simulated station's folder.")) -> None:
    """Switch a card between standard and face-auth in place, as the municipality does: the same card
    (My Number, user-auth certificate and serial), a new profile. A running card process serves it at once."""
    from sim.card.switch import SwitchError
    from sim.station import default_state_dir, read_station_token

    from harness.commands.card import read_secret

    folder = state_dir or default_state_dir()
    entry = _card_entry(folder / STATION_FILE, card_id)
    new_pin = read_secret("pin") if pin else None
    try:
        result, served = switch_card(Path(entry["persona"]), to, control=entry.get("control"), pin=new_pin,
                                     state_path=folder / "cards" / f"{card_id}.state.json",
                                     token=read_station_token(folder))
    except SwitchError as exc:
        console.print(f"[red]switch refused:[/red] {exc}")
        raise typer.Exit(1)
    if entry.get("control") and not served:
        console.print("[yellow]card process not reached; it serves the new profile when started[/yellow]")
    console.print(f"card {card_id}: {result.previous_profile} -> {to}; user-auth certificate {result.auth_serial} "
                  "kept (its registration stays valid)")
    if result.pin is not None:
        console.print(f"the new PIN is in the persona file {entry['persona']}")
