"""The cards component of the simulated station (sim/card/station.py), on the test pcscd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from harness.facedata import resolve_faces
from sim.card.control import CardControl
from sim.card.station import REFERENCE_CARD_ID, demo_card_slot, start_cards
from sim.pcscd import pid_alive
from sim.station import SimContext, sim_down, sim_status

PROBE = """
from smartcard.System import readers
from smartcard.scard import SCARD_LEAVE_CARD
for r in readers():
    c = r.createConnection(); c.connect(disposition=SCARD_LEAVE_CARD)
    d, s1, s2 = c.transmit(list(bytes.fromhex("00A4040C0AD392F000260100000001")))
    print(str(r), bytes(c.getATR()).hex(), f"{s1:02X}{s2:02X}")
    c.disconnect()
"""


@pytest.fixture
def station(pcscd, card_deck, tmp_path):
    shutil.copytree(card_deck, tmp_path / "deck")  # reuse the session's deck: no key generation
    ctx = SimContext(state_dir=tmp_path, pcscd=pcscd, faces=resolve_faces(), options={"deck": "cards"})
    try:
        start_cards(ctx)
        yield ctx
    finally:
        stopped = sim_down(tmp_path)
        assert set(stopped) <= {"card-standard", "card-face-auth"}


def test_start_cards_serves_both_profiles_and_describes_them(station, pcscd):
    cards = station.station["cards"]
    assert [(c["profile"], c["slot"]) for c in cards] == [("standard", 0), ("face-auth", 1)]
    assert station.station["pki"]["dir"].endswith("pki")
    for card in cards:
        st = CardControl.from_address(card["control"]).status()
        assert st["connected"] == "1" and st["persona"] == card["id"] and st["profile"] == card["profile"]
        assert os.path.exists(card["persona"])
    assert all(p["alive"] for p in sim_status(station.state_dir))
    # A separate process, as a station client would be, sees both cards through pcscd.
    env = dict(os.environ, **pcscd.client_env())
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == ["9000", "9000"]
    assert all("3be000ff8131fe4514" in line for line in lines)
    assert demo_card_slot(station) is None  # issue 2's layout has its cards inserted already


def test_default_layout_is_the_placer_deck_plus_a_reference_card(pcscd, card_deck, tmp_path):
    """`facehil sim up`'s cards: every deck card in the placer, off the reader; a face-auth reference
    card inserted for good in the reference reader's slot, outside [[cards]] (not placeable)."""
    shutil.copytree(card_deck, tmp_path / "deck")
    ctx = SimContext(state_dir=tmp_path, pcscd=pcscd, faces=resolve_faces())
    try:
        start_cards(ctx)
        cards = ctx.station["cards"]
        assert [(c["slot"], c["placer_slot"]) for c in cards] == [(0, i) for i in range(4)]
        assert all(CardControl.from_address(c["control"]).status()["inserted"] == "0" for c in cards)
        ref = ctx.station["pcsc"]["reference_card"]
        assert (ref["id"], ref["profile"], ref["slot"]) == (REFERENCE_CARD_ID, "face-auth", 1)
        assert "placer_slot" not in ref and ref["id"] not in {c["id"] for c in cards}
        st = CardControl.from_address(ref["control"]).status()
        assert (st["inserted"], st["powered"], st["persona"]) == ("1", "1", REFERENCE_CARD_ID)
        # its persona is kept out of the deck's personas/, which the reader and eligibility list
        assert len(list((tmp_path / "deck" / "personas").glob("*.toml"))) == 4
        assert demo_card_slot(ctx) == 0  # p001: the first registered standard card
        ctx.options["place_card"] = False
        assert demo_card_slot(ctx) is None
    finally:
        stopped = sim_down(tmp_path)
    assert "card-reference" in stopped and len(stopped) == 5


def test_sim_down_stops_the_cards(pcscd, card_deck, tmp_path):
    shutil.copytree(card_deck, tmp_path / "deck")
    ctx = SimContext(state_dir=tmp_path, pcscd=pcscd, faces=resolve_faces(), options={"deck": "cards"})
    start_cards(ctx)
    pids = [p.pid for p in ctx.processes]
    assert sorted(sim_down(tmp_path)) == ["card-face-auth", "card-standard"]
    for pid in pids:
        assert not pid_alive(pid)
    # The deck was reused, not regenerated: still the session's four personas.
    assert len(list((tmp_path / "deck" / "personas").glob("*.toml"))) == 4
