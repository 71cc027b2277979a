"""Consent screens: past surgery, other past care and drugs, and health checkups for age 40 and over
(age from the card's birth date); the choices travel with the eligibility query."""

from __future__ import annotations

import pytest

from drivers.reader import ReaderNak
from scenarios.steps import await_screen, buttons_of, eligibility_transaction, pick

pytestmark = [pytest.mark.flow("consent"),
              pytest.mark.requires("card_placer", "subject_display", "dut", "cards")]


def _to_consent(v) -> None:
    v.show_holder()
    v.place()
    auth = v.face_auth()
    assert auth.get("result") == "ok", f"face auth of the holder failed: {auth.fields}"


@pytest.mark.parametrize("surgery,care,checkup", [
    ("consent", "consent", "consent"),
    ("decline", "consent", "decline_or_under40"),
    ("consent", "decline", "decline_or_under40"),
])
def test_three_screens_over_40(cards, visit, surgery, care, checkup):
    v = visit(pick(cards, registered=True, over40=True))
    _to_consent(v)
    v.consents(surgery, care, checkup)
    assert set(v.notes["checkup_buttons"]) == {"consent", "decline_or_under40"}, v.notes["checkup_buttons"]
    v.finish()
    expected = {"surgery": surgery, "care": care, "checkup": "consent" if checkup == "consent" else "decline"}
    assert v.consent_choices() == expected, f"the reader recorded {v.consent_choices()}, the patient chose {expected}"
    screens = [e.get("id") for e in v.events() if e.kind == "screen"]
    order = [s for s in screens if s.startswith("consent_")]
    assert order == ["consent_surgery", "consent_care", "consent_checkup"], f"consent screens in order {order}"


def test_under_40_cannot_consent_to_checkups(cards, visit):
    """Under 40 (from the card's birth date) the checkup item can only be 'don't consent / under 40'."""
    v = visit(pick(cards, registered=True, over40=False))
    _to_consent(v)
    v.dut.press("consent")
    await_screen(v.dut, "consent_care")
    v.dut.press("consent")
    await_screen(v.dut, "consent_checkup")
    with pytest.raises(ReaderNak) as refused:
        v.dut.press("consent")
    assert refused.value.message, "the refusal gives the patient no reason"
    assert v.dut.screen().id == "consent_checkup", "a refused checkup consent left the screen"
    v.dut.press("decline_or_under40")
    v.finish()
    assert v.consent_choices().get("checkup") == "under40", f"checkup choice recorded as {v.consent_choices()}"


def test_age_rule_uses_the_birth_date(cards, visit):
    """The 40+ card may consent to checkups; the screen offers both buttons."""
    v = visit(pick(cards, registered=True, over40=True))
    _to_consent(v)
    v.dut.press("decline")
    await_screen(v.dut, "consent_care")
    v.dut.press("decline")
    shown = await_screen(v.dut, "consent_checkup")
    assert "consent" in buttons_of(shown)
    v.dut.press("consent")
    v.finish()
    assert v.consent_choices() == {"surgery": "decline", "care": "decline", "checkup": "consent"}


@pytest.mark.requires("eligibility")
@pytest.mark.parametrize("surgery,care", [("consent", "decline"), ("decline", "consent")])
def test_choices_reach_the_eligibility_service(cards, visit, station, surgery, care):
    """What the patient chose is what the eligibility service received with the query."""
    v = visit(pick(cards, registered=True))
    _to_consent(v)
    chosen = v.consents(surgery, care)
    elig = v.finish()
    row = eligibility_transaction(station, elig.get("transaction"))
    expected_checkup = {"consent": "consent", "decline_or_under40": "decline" if v.card.over40() else "under40"}
    expected = {"surgery": surgery, "care": care, "checkup": expected_checkup[chosen["checkup"]]}
    assert row.get("ok"), f"the eligibility service refused the query: {row}"
    assert row.get("consents") == expected, f"the service received {row.get('consents')}, the patient chose {expected}"
    assert row.get("method") == "face"
