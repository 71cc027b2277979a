"""The face-auth My Number Card (from Dec 2023): face authentication is the only method.

Happy path: the holder is matched and the visit completes. Failure paths: the PIN cannot be
used (the method screen may hide its button or show it and refuse it: N10 allows both), a PIN
entered anyway is refused with a pointer to face authentication, PIN-only services are refused
by the card, and the card holds no signing certificate.
"""

from __future__ import annotations

import pytest

from drivers.mynumber import CardStatusError, FileNotFound, MyNumberCard
from drivers.reader import ReaderNak
from scenarios.steps import (await_screen, buttons_of, complete_visit, pick, require_face_data_for, tells, tells_to_use_face_auth,
                             visit_transaction)

pytestmark = [pytest.mark.flow("face_auth_card"),
              pytest.mark.requires("card_placer", "subject_display", "dut", "cards")]

FACE_AUTH = "face-auth"
PIN_ANSWER_S = 5.0  # a press of a PIN button is answered (refused, or the PIN screen) within this


@pytest.mark.clause("N1", "N5", "N8")
@pytest.mark.parametrize("condition", [
    pytest.param("nominal", marks=pytest.mark.smoke),
    "glasses",
    "low_light",
])
def test_face_success(cards, visit, station, condition):
    require_face_data_for(station, condition)
    v = visit(pick(cards, FACE_AUTH, registered=True))
    elig = complete_visit(v, method="face", condition=condition)
    if tells(v.dut, "reader_events"):
        assert elig.get("transaction"), "the eligibility service returned no transaction id"
    if station.eligibility is not None:  # what the service recorded: seen without the reader's help
        row = visit_transaction(station, v, elig)
        assert row.get("ok") and row.get("method") == "face", f"the eligibility service recorded {row}"


@pytest.mark.clause("N10", "N8")
def test_pin_hidden_or_refused(cards, visit, measure):
    """N10: the method screen is the notice's for every card. A face-auth card's PIN button may be hidden,
    or shown and refused with a pointer to face authentication; the PIN is never tried either way."""
    v = visit(pick(cards, FACE_AUTH, registered=True))
    v.show_nobody()
    shown = v.place()
    buttons = buttons_of(shown)
    assert "face" in buttons and "end" in buttons, f"method selection offers {buttons} to a face-auth card"
    assert v.dut.screen().buttons == buttons
    measure("pin_button_shown_count", int("pin" in buttons))  # an observation: both are allowed
    if "pin" in buttons:
        try:
            v.dut.press("pin")
            # no refusal code: a reader seen through its screen answers with what it shows next
            after = await_screen(v.dut, "method_select", "pin_entry", "face_auth", "error", timeout_s=PIN_ANSWER_S)
            if after.get("id") != "method_select":
                pytest.fail(f"the reader accepted the PIN button for a face-auth card (now {after.get('id')})")
            told = (after.get("msg"),)
        except ReaderNak as refused:
            told = (refused.message, refused.fields.get("msg_en"), v.dut.screen().message)
        assert tells_to_use_face_auth(*told), f"the PIN refusal does not point to face authentication: {told}"
        assert v.dut.screen().id == "method_select", "a refused PIN button left the method screen"
    assert not [e for e in v.events() if e.kind == "pin"], "the reader tried a PIN on a face-auth card"
    assert not [e for e in v.events() if e.kind == "auth" and e.get("method") == "pin"], \
        "the reader ran PIN authentication for a face-auth card"


@pytest.mark.clause("N10", "N11")
@pytest.mark.requires("raw_pin")  # a PIN typed where no keypad is: only a control port can send one
@pytest.mark.parametrize("where", ["method_select", "face_auth"])
def test_pin_attempt_refused(cards, visit, where):
    """Pressing PIN, or typing a PIN on the method or face screen, is refused with a clear message."""
    v = visit(pick(cards, FACE_AUTH, registered=True))
    v.show_nobody()  # nobody in the frame: the face screen stays up while we try
    v.place()
    if where == "method_select":
        with pytest.raises(ReaderNak) as pressed:
            v.dut.press("pin")
        assert pressed.value.message, "the refusal carries no message for the patient"
    else:
        v.choose_face()
    with pytest.raises(ReaderNak) as typed:
        v.dut.enter_pin("1234")
    told = (typed.value.message, typed.value.fields.get("msg_en"))
    assert tells_to_use_face_auth(*told), f"the PIN refusal does not point to face authentication: {told}"
    screen = v.dut.screen()
    assert screen.id == where, f"a refused PIN moved the reader from {where} to {screen.id}"
    assert not [e for e in v.events() if e.kind == "pin"], "the reader tried a PIN on a face-auth card"
    assert not [e for e in v.events() if e.kind == "auth" and e.get("method") == "pin"], \
        "the reader ran PIN authentication for a face-auth card"


@pytest.mark.clause("N1", "N2")
@pytest.mark.requires("pcsc")
def test_pin_only_services_refused(cards, visit, card_reader):
    """The card itself refuses what PIN-only services need: a PIN verify, and the user-auth key without
    a terminal authorization."""
    v = visit(pick(cards, FACE_AUTH, registered=True))
    v.place()
    with card_reader.connect() as conn:
        card = MyNumberCard(conn)
        assert card.detect_profile().name == "face-auth"
        assert not card.tries_left("jpki_auth_pin"), "a face-auth card has a usable user-auth PIN"
        with pytest.raises(CardStatusError):
            card.verify("jpki_auth_pin", "1234")
        with pytest.raises(CardStatusError):
            card.sign_auth(b"PIN-only service challenge")


@pytest.mark.clause("N1", "N2")
@pytest.mark.requires("pcsc")
def test_no_signing_certificate(cards, visit, card_reader):
    v = visit(pick(cards, FACE_AUTH, registered=True))
    v.place()
    with card_reader.connect() as conn:
        card = MyNumberCard(conn)
        with pytest.raises(FileNotFound):
            card.certificate_der("sign")
        assert card.certificate_der("auth")[:2] == b"\x30\x82", "the user-auth certificate must be present"
    assert v.dut.screen().id == "method_select", "reading the card over PC/SC disturbed the reader"
