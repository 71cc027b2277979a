"""The standard My Number Card: face or PIN; the PIN locks after 3 wrong entries; a failed face
authentication falls back to the PIN; switched to face-auth and back in place (N4), it stays
registered and its PIN works again."""

from __future__ import annotations

import dataclasses

import pytest

from drivers.mynumber import MyNumberCard
from drivers.reader import ReaderNak
from scenarios.steps import (await_screen, buttons_of, complete_visit, other_person, pick,
                             require_face_data_for)

pytestmark = [pytest.mark.flow("standard_card"),
              pytest.mark.requires("card_placer", "subject_display", "dut", "cards")]

STANDARD = "standard"


def _wrong_pin(pin: str) -> str:
    return "".join(str((int(d) + 1) % 10) for d in pin)


@pytest.mark.clause("N8", "N10")
@pytest.mark.parametrize("condition", [pytest.param("nominal", marks=pytest.mark.smoke), "glasses"])
def test_face_path(cards, visit, station, condition):
    require_face_data_for(station, condition)
    complete_visit(visit(pick(cards, STANDARD, registered=True)), method="face", condition=condition)


@pytest.mark.clause("N10", "N11")
@pytest.mark.smoke
def test_pin_path(cards, visit):
    v = visit(pick(cards, STANDARD, registered=True))
    v.show_holder()
    shown = v.place()
    assert {"face", "pin"} <= set(buttons_of(shown)), f"a standard card must be offered face and PIN: {buttons_of(shown)}"
    complete = v.pin_auth(v.card.pin)
    assert complete.get("result") == "ok", f"the right PIN was not accepted: {complete.fields}"
    v.consents()
    assert v.finish().get("method") == "pin"


@pytest.mark.clause("N18")
def test_wrong_pin_then_right(cards, visit):
    """One wrong PIN costs one try; the right one then passes (and the card resets its counter)."""
    v = visit(pick(cards, STANDARD, registered=True))
    v.show_holder()
    v.place()
    wrong = v.pin_auth(_wrong_pin(v.card.pin))
    assert wrong.kind == "pin" and wrong.get("result") == "wrong", f"a wrong PIN was not refused: {wrong.fields}"
    assert wrong.get("tries_left") == "2", f"tries left after one wrong PIN: {wrong.get('tries_left')}"
    right = v.pin_auth(v.card.pin, choose=False)
    assert right.get("result") == "ok", f"the right PIN was refused after one wrong one: {right.fields}"


@pytest.mark.clause("N11", "N18")
@pytest.mark.requires("raw_pin")  # a panel's keypad cannot type these
@pytest.mark.parametrize("digits", ["12", "12345", "abcd"])
def test_malformed_pin_refused_without_spending_a_try(cards, visit, digits):
    v = visit(pick(cards, STANDARD, registered=True))
    v.show_holder()
    v.place()
    v.dut.press("pin")
    await_screen(v.dut, "pin_entry")
    with pytest.raises(ReaderNak):
        v.dut.enter_pin(digits)
    right = v.pin_auth(v.card.pin, choose=False)
    assert right.get("result") == "ok", "the right PIN failed after a malformed entry"


@pytest.mark.clause("N18")
def test_lock_after_three_wrong_pins(cards, visit):
    """Three wrong PINs lock the card: the reader says so and refers the patient to the municipality.
    Uses a deck card marked `disposable` (its PIN stays locked until the lab resets it)."""
    v = visit(pick(cards, STANDARD, disposable=True))
    v.show_holder()
    v.place()
    wrong = _wrong_pin(v.card.pin)
    v.dut.press("pin")
    await_screen(v.dut, "pin_entry")
    for expected_left in (2, 1, 0):
        ev = v.pin_auth(wrong, choose=False)
        assert ev.kind == "pin" and ev.get("result") == "wrong", f"wrong PIN not refused: {ev.fields}"
        assert ev.get("tries_left") == str(expected_left), \
            f"after {3 - expected_left} wrong PINs the reader says {ev.get('tries_left')} tries left, not {expected_left}"
    locked = v.dut.screen()  # events and screen changes come before the PIN command's answer
    assert locked.id == "pin_locked", f"after 3 wrong PINs the reader shows {locked.id}: {locked.message!r}"
    said = f"{locked.message} {locked.fields.get('msg_en', '')}"  # msg is Japanese, msg_en English (hardware.md 6.2)
    assert "市区町村" in said or "municipality" in said.lower(), f"no referral to the municipality: {said!r}"
    with pytest.raises(ReaderNak):
        v.dut.enter_pin(v.card.pin)
    assert not v.auth_events("ok"), "a locked card was authenticated"
    v.take_card_back()


@pytest.mark.clause("N18")
@pytest.mark.requires("pcsc")
def test_locked_card_goes_to_the_lock_screen(cards, visit, card_reader):
    """A card whose PIN is locked (as the card itself says over PC/SC) gets the lock screen, not PIN entry."""
    v = visit(pick(cards, STANDARD, disposable=True))
    v.show_holder()
    v.place()
    with card_reader.connect() as conn:
        left = MyNumberCard(conn).tries_left("jpki_auth_pin")
    if left:
        pytest.skip(f"{v.card.id} is not locked ({left} tries left): the lock scenario has not run")
    v.dut.press("pin")
    shown = await_screen(v.dut, "pin_locked", "pin_entry", "error")
    assert shown.get("id") == "pin_locked", f"a locked card was offered {shown.get('id')}: {shown.get('msg')!r}"
    with pytest.raises(ReaderNak):
        v.dut.enter_pin(v.card.pin)


@pytest.mark.clause("N10")
def test_failed_face_falls_back_to_pin(cards, visit):
    """Someone else's face is refused (after the reader's retries); a standard card then offers the PIN."""
    v = visit(pick(cards, STANDARD, registered=True))
    v.show(other_person(cards, v.card))
    v.place()
    auth = v.face_auth()
    assert auth.get("result") == "fail", f"the reader matched another person to {v.card.id}: {auth.fields}"
    await_screen(v.dut, "pin_entry")
    ok = v.pin_auth(v.card.pin, choose=False)
    assert ok.get("result") == "ok", f"the PIN after a failed face auth was refused: {ok.fields}"
    v.consents()
    assert v.finish().get("method") == "pin"


# -- N4: switched in place at the municipality -----------------------------------------------------

@pytest.fixture
def municipality(station):
    """``switch(card, to, pin=None)``: the municipality switches a deck card in place (same card, new
    profile) and gives it back. Only the simulated station's cards can be switched from here (a lab
    takes a real card to the counter); every switched card is switched back to its deck profile."""
    from harness.commands.sim_card import switch_card

    done: list[tuple] = []

    def switch(card, to: str, pin: str | None = None):
        cfg = next((c for c in station.cards if c.id == card.id), None)
        if cfg is None or not cfg.control or not station.station.simulated:
            pytest.skip(f"switching card {card.id} in place needs the simulated station's card control "
                        "([[cards]] control): a real card is switched at the municipality")
        switch_card(cfg.persona, to, control=cfg.control, pin=pin)
        done.append((cfg, card))
        return dataclasses.replace(card, profile=to, pin=pin if to == STANDARD else None)

    yield switch
    for cfg, card in reversed(done):  # back to what the session's deck says, whatever failed
        from sim.card.persona import Persona

        if Persona.load(cfg.persona).profile != card.profile:
            switch_card(cfg.persona, card.profile, control=cfg.control, pin=card.pin)


def _amendment_field(card) -> list[tuple[str, bool]]:
    """The card's printed amendment field (追記欄) as its persona file records it: (text, struck)."""
    import tomllib

    doc = tomllib.loads(card.persona.read_text(encoding="utf-8"))
    default = [{"text": "顔認証"}] if doc.get("profile") == "face-auth" else []
    return [(a["text"], bool(a.get("struck", False))) for a in doc.get("amendments", default)]


@pytest.mark.clause("N3", "N4", "N8")
def test_switched_in_place_stays_registered_and_the_pin_works_again(cards, visit, municipality):
    """Standard -> face-auth at the municipality: 「顔認証」 in the amendment field, the reader reads a
    face-auth card, authenticates its holder by face and does not ask to register it again. Switched
    back: 「顔認証」 struck through, and the PIN works again."""
    card = pick(cards, STANDARD, registered=True, index=-1)
    face_auth = municipality(card, "face-auth")
    assert ("顔認証", False) in _amendment_field(face_auth), f"no 「顔認証」 on {card.id}: {_amendment_field(face_auth)}"
    v = visit(face_auth)
    complete_visit(v, method="face")  # place() checks the reader read it as face-auth
    screens = [e.get("id") for e in v.events() if e.kind == "screen"]
    assert "registration" not in screens, f"the switched card, registered before, was asked to register: {screens}"

    standard = municipality(face_auth, STANDARD, pin=card.pin)  # the holder sets a PIN again
    field = _amendment_field(standard)
    assert ("顔認証", True) in field and ("顔認証", False) not in field, f"「顔認証」 not struck through: {field}"
    v = visit(standard)
    assert complete_visit(v, method="pin").get("method") == "pin"
    screens = [e.get("id") for e in v.events() if e.kind == "screen"]
    assert "registration" not in screens, f"the card switched back was asked to register: {screens}"
