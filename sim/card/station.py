"""The cards of the simulated station (a component of sim/station.py).

``start_cards(ctx)``: make (or reuse) a deck under ``<state_dir>/deck`` and serve its cards, one
process each, described in the station file (``[[cards]]`` and ``[pki]``). ``ctx.options["deck"]``
picks the layout:

* unset (``"station"``, what ``facehil sim up`` starts): the placer deck on vpcd slot 0, all off
  the reader, plus a face-auth *reference card* always inserted in slot 1, the station's
  ``[pcsc] reference_reader``. It is described as ``[pcsc.reference_card]``, not in
  ``[[cards]]``: it is not a deck card, so neither the rig, nor the reader's antenna, nor the
  scenarios' deck see it. :func:`demo_card_slot` names the deck card ``sim up`` then places.
* ``"placer"``: the placer deck alone (fleet stations).
* ``"cards"``: issue 2's layout, a standard card inserted in slot 0 and a face-auth card in slot 1.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from pathlib import Path

from harness.facedata import list_identities
from sim.card.control import CardControl, ControlError
from sim.card.deck import generate_deck, load_deck, make_persona
from sim.card.issue import issue_card
from sim.card.persona import Persona
from sim.card.pki import ensure_pki
from sim.context import SimContext, Spawned, StationError

log = logging.getLogger(__name__)

DECK_SIZE = 6
PLACER_DECK_SIZE = 10  # two unregistered face-auth cards, under-40s of both profiles, one revoked
READY_TIMEOUT_S = 30.0
SEEN_TIMEOUT_S = 5.0
REFERENCE_CARD_ID = "ref001"
REFERENCE_SLOT = 1  # vpcd slot of the station's [pcsc] reference_reader (sim/station.py)
LAYOUTS = ("station", "placer", "cards")


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
    raise StationError(f"the deck has no {profile} persona")


def control_port(ctx: SimContext, spawned: Spawned) -> int:
    """The control port a card process announced on its READY line (``READY control=<port>``)."""
    fields = ctx.wait_ready(spawned, READY_TIMEOUT_S)
    port = fields.get("control", "")
    if not port.isdigit():
        raise StationError(f"{spawned.name} announced no control port: READY {fields}")
    return int(port)


def spawn_card(ctx: SimContext, persona: Persona, slot: int, name: str, removed: bool = False) -> Spawned:
    state = ctx.state_dir / "cards" / f"{persona.id}.state.json"
    argv = ctx.python("sim.card", "serve", "--persona", str(persona.source), "--state", str(state),
                      *ctx.pcscd.card_args(slot), "--control-port", "0")
    return ctx.spawn(name, argv + (["--removed"] if removed else []))


def wait_powered(control: CardControl, timeout_s: float = SEEN_TIMEOUT_S) -> bool:
    """Wait until pcscd has seen the card (it powers a card up when its poll finds it), so
    that `facehil sim up && facehil card read` finds it. A card whose control port never
    answers is not "not powered yet": that raises StationError naming the port."""
    deadline = time.monotonic() + timeout_s
    error: ControlError | None = None
    while time.monotonic() < deadline:
        try:
            if control.status().get("powered") == "1":
                return True
            error = None
        except ControlError as exc:
            error = exc
        time.sleep(0.05)
    if error is not None:
        raise StationError(f"card control {control.host}:{control.port} did not answer: {error}") from error
    return False


def await_card(ctx: SimContext, spawned: Spawned, persona: Persona, slot: int, name: str) -> dict:
    """Wait for a spawned card's READY and for pcscd to see it; its ``[[cards]]`` entry."""
    port = ctx.pcscd.slot_port(slot)
    control = control_port(ctx, spawned)
    started = time.monotonic()
    if wait_powered(CardControl("127.0.0.1", control, token=ctx.token)):
        log.info("pcscd powered card %s on vpcd port %d after %.2f s", persona.id, port, time.monotonic() - started)
    else:
        log.warning("pcscd has not powered card %s on vpcd port %d within %.0f s", persona.id, port,
                    SEEN_TIMEOUT_S)
    return {"id": persona.id, "persona": str(persona.source), "profile": persona.profile,
            "control": f"127.0.0.1:{control}", "slot": slot, "placer_slot": slot}


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
    for slot, (persona, spawned) in enumerate(procs):
        cards.append({"id": persona.id, "persona": str(persona.source), "profile": persona.profile,
                      "control": f"127.0.0.1:{control_port(ctx, spawned)}", "slot": 0, "placer_slot": slot,
                      "disposable": persona.id == disposable})
    ctx.station["cards"] = cards
    ctx.station["pki"] = {"dir": str(deck_dir / "pki")}


def ensure_reference_persona(deck_dir: Path, faces) -> Persona:
    """The reference card's persona (registered face-auth), made once. It lives in
    ``<deck>/reference/``, apart from ``<deck>/personas/``, so nothing that lists the deck (the
    placer deck, the eligibility service, the reader's printed card faces) takes it for a deck card."""
    path = deck_dir / "reference" / f"{REFERENCE_CARD_ID}.toml"
    if path.exists():
        return Persona.load(path)
    identities = list_identities(faces)
    ident = identities[PLACER_DECK_SIZE % len(identities)]
    # index 1 of a one-card deck: face-auth, registered, not revoked (sim/card/deck.py's mix)
    persona = make_persona(1, random.Random(REFERENCE_CARD_ID), ident.images[0], ident.name, dt.date.today(),
                           deck_dir, count=1)
    persona.id = REFERENCE_CARD_ID
    persona.card_dir = deck_dir / "cards" / REFERENCE_CARD_ID
    persona.save(path)
    issue_card(Persona.load(path), ensure_pki(deck_dir / "pki"))
    return Persona.load(path)


def start_reference_card(ctx, deck_dir: Path) -> None:
    """The reference card, inserted in the reference reader's slot for good: ``[pcsc.reference_card]``."""
    persona = ensure_reference_persona(deck_dir, ctx.faces)
    proc = spawn_card(ctx, persona, REFERENCE_SLOT, "card-reference")
    entry = await_card(ctx, proc, persona, REFERENCE_SLOT, "card-reference")
    del entry["placer_slot"]  # not in the placer: the lab's card that never leaves the reference reader
    ctx.station.setdefault("pcsc", {})["reference_card"] = entry


def demo_card_slot(ctx) -> int | None:
    """The deck slot ``facehil sim up`` places on the reader at the end (the default layout only,
    unless ``ctx.options["place_card"]`` is false): the first registered standard deck card."""
    if ctx.options.get("deck", "station") != "station" or not ctx.options.get("place_card", True):
        return None
    for card in ctx.station.get("cards", []):
        persona = Persona.load(card["persona"])
        if persona.profile == "standard" and persona.registered_for_insurance and not persona.revoked:
            return int(card["placer_slot"])
    return None


def start_cards(ctx) -> None:
    deck_dir = ctx.state_dir / "deck"
    layout = ctx.options.get("deck", "station")
    if layout not in LAYOUTS:
        raise StationError(f"unknown deck layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if layout != "cards":
        start_placer_deck(ctx, deck_dir)
        if layout == "station":
            start_reference_card(ctx, deck_dir)
        return
    personas = ensure_deck(deck_dir, ctx.faces)
    plan = [(_pick(personas, "standard"), 0, "card-standard"), (_pick(personas, "face-auth"), 1, "card-face-auth")]
    procs = [spawn_card(ctx, *item) for item in plan]  # both start in parallel
    ctx.station["cards"] = [await_card(ctx, proc, *item) for proc, item in zip(procs, plan)]
    ctx.station["pki"] = {"dir": str(deck_dir / "pki")}
