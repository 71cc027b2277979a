"""N18: the user-auth PIN locks on the third wrong entry IN A ROW; a right PIN in between resets
the count. Runs before the standard-card flow, whose lock scenario locks the disposable card."""

from __future__ import annotations

import pytest

from scenarios.steps import Visit, pick

pytestmark = [pytest.mark.flow("pin_counter"),
              pytest.mark.requires("card_placer", "subject_display", "dut", "cards")]


def _wrong(card) -> str:
    return "0000" if card.pin != "0000" else "1111"


def _two_wrong_then(v: Visit, last: str) -> list:
    v.show_nobody()
    v.place()
    results = []
    for pin in (_wrong(v.card), _wrong(v.card)):
        ev = v.pin_auth(pin, choose=not results)
        results.append(ev)
        assert v.dut.screen().id == "pin_entry", \
            f"after {len(results)} wrong PIN(s) the reader shows {v.dut.screen().id}, not the PIN screen"
    results.append(v.pin_auth(last, choose=False))
    return results


@pytest.mark.clause("N18")
def test_right_pin_in_between_resets_the_count(cards, visit):
    v = visit(pick(cards, "standard", disposable=True))
    if not v.card.pin:
        pytest.skip(f"{v.card.id} has no PIN in the deck")
    first = _two_wrong_then(v, v.card.pin)
    assert first[-1].get("result") == "ok", f"the right PIN after two wrong ones was refused: {first[-1].fields}"
    v.take_card_back()
    # the count started again at the right PIN: two more wrong ones do not lock the card
    second = visit(v.card)
    again = _two_wrong_then(second, second.card.pin)
    tries = [e.get("tries_left") for e in again[:2]]
    assert tries == ["2", "1"], f"after a right PIN the reader counted {tries} tries left, expected 2 then 1"
    assert again[-1].get("result") == "ok", \
        f"two wrong PINs after a right one locked the card: {again[-1].fields} (a right PIN resets the count)"
    second.take_card_back()
