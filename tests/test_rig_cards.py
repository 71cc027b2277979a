"""Rig placement -> the card process's coupling -> what pcscd sees, end to end.

Two software cards (python -m sim.card serve, one process each) share vpcd slot 0 of the
session's private pcscd, both starting off the reader; the simulated rig puts them on and
takes them off through their control ports; drivers.pcsc observes the reader.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from drivers.pcsc import PcscReader
from drivers.rig import CardPose, RigController
from sim.rig_process import SimProcess, rig_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from card_process import CardProcess, make_deck  # noqa: E402

pytestmark = pytest.mark.timeout(180)
EVENT_S = 10.0
FAST_MM_S = 2000


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    return make_deck(tmp_path_factory.mktemp("rig-deck"))


@pytest.fixture(scope="module")
def station(pcscd, deck, tmp_path_factory):
    state = tmp_path_factory.mktemp("rig-card-state")
    link = pcscd.card_args(0)
    reader = PcscReader(pcscd.reader_names[0])
    reader.wait_for_removal(EVENT_S)  # nothing left over from other tests
    cards = []
    try:
        for i, persona in enumerate(deck, start=1):
            cards.append(CardProcess(persona, state / f"{persona.id}.json", link, removed=True))
        args = []
        for i, card in enumerate(cards, start=1):
            args += ["--card", f"{i}=127.0.0.1:{card.control.port}"]
        with SimProcess("sim.rig", "--pty", *args) as rig_proc, RigController(rig_url(rig_proc)) as rig:
            yield rig, reader, cards
            rig.remove_card(FAST_MM_S)
    finally:
        for c in cards:
            c.stop()


def test_nominal_placement_makes_pcscd_see_the_card(station):
    rig, reader, cards = station
    placed = rig.place_card(1, CardPose.nominal(), FAST_MM_S)
    assert placed.coupling == "present"
    st = cards[0].control.status()
    assert (st["inserted"], st["coupling"]) == ("1", "present")
    event = reader.wait_for_insertion(EVENT_S)
    assert event.present and event.atr
    assert cards[1].control.status()["inserted"] == "0"


def test_edge_of_volume_is_flaky_and_outside_is_absent(station):
    rig, reader, cards = station
    edge = rig.place_card(1, CardPose.offset(14, 5), FAST_MM_S)
    st = cards[0].control.status()
    assert st["coupling"] == "flaky" and float(st["rate"]) == pytest.approx(edge.error_rate)
    rig.place_card(1, CardPose.offset(25, 0), FAST_MM_S)
    st = cards[0].control.status()
    assert (st["inserted"], st["coupling"]) == ("1", "absent")  # on the reader, out of the field
    reader.wait_for_removal(EVENT_S)
    rig.place_card(1, CardPose.height(10), FAST_MM_S)  # within the nominal height
    assert cards[0].control.status()["coupling"] == "present"
    reader.wait_for_insertion(EVENT_S)


def test_placing_another_deck_card_removes_the_first(station):
    rig, reader, cards = station
    rig.place_card(1, CardPose.nominal(), FAST_MM_S)
    first_atr = reader.wait_for_insertion(EVENT_S).atr
    rig.place_card(2, CardPose.nominal(), FAST_MM_S)
    assert cards[0].control.status()["inserted"] == "0"
    st = cards[1].control.status()
    assert (st["inserted"], st["coupling"]) == ("1", "present")
    assert reader.wait_for_insertion(EVENT_S).present
    assert rig.status().card_slot == 2
    rig.remove_card(FAST_MM_S)
    assert cards[1].control.status()["inserted"] == "0"
    reader.wait_for_removal(EVENT_S)
    assert first_atr  # the first card had been seen before the swap


def test_card_process_gone_is_reported_as_e_hw(station, deck, pcscd, tmp_path):
    rig, reader, cards = station
    rig.remove_card(FAST_MM_S)
    dead = CardProcess(deck[0], tmp_path / "dead.json", pcscd.card_args(0), removed=True)
    dead_port = dead.control.port
    dead.stop()
    with SimProcess("sim.rig", "--pty", "--card", f"5=127.0.0.1:{dead_port}") as p, RigController(rig_url(p)) as r2:
        from drivers.rig import RigNak

        with pytest.raises(RigNak) as info:
            r2.place_card(5, speed_mm_s=FAST_MM_S)
        assert info.value.code == "E_HW" and "slot 5" in info.value.detail
        assert "slot5" in r2.health().faults
