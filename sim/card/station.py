"""The cards of the simulated station (a component of sim/station.py).

``start_cards(ctx)``: make (or reuse) a deck under ``<state_dir>/deck``, then serve a standard
card in vpcd slot 0 and a face-auth card in slot 1, one process each, and describe them in the
station file (``[[cards]]`` and ``[pki]``).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from sim.card.control import CardControl, ControlError
from sim.card.deck import generate_deck, load_deck
from sim.card.persona import Persona

log = logging.getLogger(__name__)

DECK_SIZE = 6
PLACER_DECK_SIZE = 10  # two unregistered face-auth cards, under-40s of both profiles, one revoked
READY_TIMEOUT_S = 30.0
SEEN_TIMEOUT_S = 5.0
_READY = re.compile(rb"^READY control=(\d+)\s*$", re.M)


class CardStartError(RuntimeError):
    """A card process did not come up; the message names its log."""


def ensure_deck(folder: Path, faces, count: int = DECK_SIZE, seed: int = 0) -> list[Persona]:
    """The deck in ``folder``, generated first if it has no personas."""
    personas = load_deck(folder) if (folder / "personas").is_dir() else []
    if not personas:
        generate_deck(faces, folder, count=count, seed=seed)
        personas = load_deck(folder)
    return personas


def _pick(personas: list[Persona], profile: str) -> Persona:
    for p in personas:
        if p.profile == profile and not p.revoked and p.registered_for_insurance:
            return p
    for p in personas:
        if p.profile == profile:
            return p
    raise CardStartError(f"the deck has no {profile} persona")


def wait_ready(proc, log_path: Path, timeout_s: float = READY_TIMEOUT_S) -> int:
    """The control port a card process announced in its log (it logs stdout there)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_path.exists():
            m = _READY.search(log_path.read_bytes())
            if m:
                return int(m.group(1))
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-600:] if log_path.exists() else ""
            raise CardStartError(f"card process exited with {proc.returncode}; see {log_path}:\n{tail}")
        time.sleep(0.05)
    raise CardStartError(f"card process gave no READY line within {timeout_s:.0f}s; see {log_path}")


def spawn_card(ctx, persona: Persona, slot: int, name: str, removed: bool = False):
    state = ctx.state_dir / "cards" / f"{persona.id}.state.json"
    argv = ctx.python("sim.card", "serve", "--persona", str(persona.source), "--state", str(state),
                      "--vpcd", f"127.0.0.1:{ctx.pcscd.slot_port(slot)}", "--control-port", "0")
    return ctx.spawn(name, argv + (["--removed"] if removed else []))


def await_card(ctx, proc, persona: Persona, slot: int, name: str) -> dict:
    """Wait for a spawned card's READY and for pcscd to see it; its ``[[cards]]`` entry."""
    port = ctx.pcscd.slot_port(slot)
    control_port = wait_ready(proc, ctx.state_dir / "logs" / f"{name}.log")
    control = CardControl("127.0.0.1", control_port)
    # Wait until pcscd has seen the card (it powers a card up when its poll finds it), so
    # that `facehil sim up && facehil card read` finds both cards.
    deadline = time.monotonic() + SEEN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if control.status().get("powered") == "1":
                break
        except ControlError:
            pass
        time.sleep(0.05)
    else:
        log.warning("pcscd has not powered card %s on vpcd port %d within %.0f s", persona.id, port,
                    SEEN_TIMEOUT_S)
    return {"id": persona.id, "persona": str(persona.source), "profile": persona.profile,
            "control": f"127.0.0.1:{control_port}", "slot": slot, "placer_slot": slot}


def start_placer_deck(ctx, deck_dir: Path) -> None:
    """``ctx.options["deck"] == "placer"`` (the scenario suites): every card of a larger deck in the
    rig's placer, all off the reader and all on vpcd slot 0 (the DUT's one antenna); the placer puts
    one at a time on it, as on a real rig. One standard card is marked ``disposable``: scenarios may
    lock its PIN."""
    personas = ensure_deck(deck_dir, ctx.faces, count=int(ctx.options.get("deck_size", PLACER_DECK_SIZE)))
    standard = [p for p in personas if p.profile == "standard" and not p.revoked]
    if len(standard) > 2 and all(p.registered_for_insurance for p in standard):
        standard[-2].registered_for_insurance = False  # registration by PIN needs an unregistered standard card
        standard[-2].save(standard[-2].source)
    procs = [(p, spawn_card(ctx, p, 0, f"card-{p.id}", removed=True)) for p in personas]
    disposable = standard[-1].id if standard else None
    cards = []
    for slot, (persona, proc) in enumerate(procs):
        control_port = wait_ready(proc, ctx.state_dir / "logs" / f"card-{persona.id}.log")
        cards.append({"id": persona.id, "persona": str(persona.source), "profile": persona.profile,
                      "control": f"127.0.0.1:{control_port}", "slot": 0, "placer_slot": slot,
                      "disposable": persona.id == disposable})
    ctx.station["cards"] = cards
    ctx.station["pki"] = {"dir": str(deck_dir / "pki")}


def start_cards(ctx) -> None:
    deck_dir = ctx.state_dir / "deck"
    if ctx.options.get("deck") == "placer":
        return start_placer_deck(ctx, deck_dir)
    personas = ensure_deck(deck_dir, ctx.faces)
    plan = [(_pick(personas, "standard"), 0, "card-standard"), (_pick(personas, "face-auth"), 1, "card-face-auth")]
    procs = [spawn_card(ctx, *item) for item in plan]  # both start in parallel
    ctx.station["cards"] = [await_card(ctx, proc, *item) for proc, item in zip(procs, plan)]
    ctx.station["pki"] = {"dir": str(deck_dir / "pki")}
