"""Consent screens: past surgery, other past care and drugs, and health checkups for age 40 and over
(age from the card's birth date); the choices travel with the eligibility query.

N15 shows the checkup screen to everyone and is silent on an under-40 pressing 同意する: what the
reader does then is recorded, not judged. What is judged is that the choice reaching the
eligibility query matches what the patient pressed and the age rule the reader claims
(``checkup_consent`` = ``refuse_under40`` or ``as_pressed``, hardware.md 6.6)."""

from __future__ import annotations

import datetime as dt

import pytest

from drivers.reader import ReaderNak
from scenarios.steps import await_screen, buttons_of, other_person, pick, reader_claim, to_consent, visit_transaction

pytestmark = [pytest.mark.flow("consent"),
              pytest.mark.requires("card_placer", "subject_display", "dut", "cards")]


def _to_consent(v) -> None:
    v.show_holder()
    v.place()
    auth = v.face_auth()
    assert auth.get("result") == "ok", f"face auth of the holder failed: {auth.fields}"


@pytest.mark.clause("N15", "N5")
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


@pytest.mark.clause("N15")
@pytest.mark.requires("eligibility")
def test_under_40_pressing_consent(cards, visit, station, measure):
    """An under-40 presses 同意する on the checkup screen. Refusing it or passing it on are both allowed
    (recorded as an observation); the query must carry what the reader's claimed rule says."""
    v = visit(pick(cards, registered=True, over40=False))
    rule = reader_claim(station, v.dut, "checkup_consent")
    _to_consent(v)
    v.dut.press("consent")
    await_screen(v.dut, "consent_care")
    v.dut.press("consent")
    await_screen(v.dut, "consent_checkup")
    try:
        v.dut.press("consent")
        refused = None
    except ReaderNak as nak:
        refused = nak
    measure("under40_checkup_consent_refused_count", int(refused is not None))  # observed, not judged
    if refused is not None:
        assert rule != "as_pressed", f"the reader claims checkup_consent=as_pressed but refused: {refused}"
        assert refused.message, "the refusal gives the patient no reason"
        assert v.dut.screen().id == "consent_checkup", "a refused checkup consent left the screen"
        v.dut.press("decline_or_under40")
        expected = "under40"
    else:
        assert rule != "refuse_under40", \
            "the reader claims checkup_consent=refuse_under40 but accepted 同意する from an under-40"
        expected = "consent"
    elig = v.finish()
    row = visit_transaction(station, v, elig)
    assert row.get("consents", {}).get("checkup") == expected, \
        f"the query carried checkup={row.get('consents')}, the patient's press and the reader's rule give {expected}"


@pytest.mark.clause("N15")
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


@pytest.mark.clause("N15", "N5")
@pytest.mark.requires("eligibility")
@pytest.mark.parametrize("surgery,care", [("consent", "decline"), ("decline", "consent")])
def test_choices_reach_the_eligibility_service(cards, visit, station, surgery, care):
    """What the patient chose is what the eligibility service received with the query."""
    v = visit(pick(cards, registered=True))
    _to_consent(v)
    chosen = v.consents(surgery, care)
    elig = v.finish()
    row = visit_transaction(station, v, elig)
    expected_checkup = {"consent": "consent", "decline_or_under40": "decline" if v.card.over40() else "under40"}
    expected = {"surgery": surgery, "care": care, "checkup": expected_checkup[chosen["checkup"]]}
    assert row.get("ok"), f"the eligibility service refused the query: {row}"
    assert row.get("consents") == expected, f"the service received {row.get('consents')}, the patient chose {expected}"
    assert row.get("method") == "face"


def _boundary_card(cards, kind: str):
    """The deck's age-boundary persona of this kind, as of today (sim/card/deck.py makes them)."""
    today = dt.date.today()
    for c in cards.select(with_holder=True):
        b = c.birth_date
        if b is None:
            continue
        if kind == "40_today" and c.turns40_on(today):
            return c
        if kind == "40_tomorrow" and c.turns40_on(today + dt.timedelta(days=1)):
            return c
        if kind == "leap_day" and (b.month, b.day) == (2, 29):
            return c
    pytest.skip(f"the station's deck has no placeable card on the age boundary {kind} as of {today} "
                "(boundary personas are made for the day the deck is generated)")


@pytest.mark.clause("N15")
@pytest.mark.requires("eligibility")
@pytest.mark.parametrize("kind", ["40_today", "40_tomorrow", "leap_day"])
def test_age_rule_at_the_birthday(cards, visit, station, kind):
    """The 40-and-over rule pinned at the birthday (completed years; 29 Feb reached on 1 Mar in common
    years): 同意しない・40歳未満の方 reaches the query as "decline" from 40 on, as "under40" before."""
    v = visit(_boundary_card(cards, kind))
    over40 = v.card.over40()
    to_consent(v)
    v.consents("decline", "decline", "decline_or_under40")
    elig = v.finish()
    row = visit_transaction(station, v, elig)
    expected = "decline" if over40 else "under40"
    assert row.get("consents", {}).get("checkup") == expected, \
        (f"{v.card.describe()} born {v.card.birth_date}: the query carried checkup={row.get('consents')}, "
         f"expected {expected} (age {v.card.age_on(dt.date.today())} today)")


@pytest.mark.clause("N14", "N9")
@pytest.mark.requires("eligibility")
def test_carer_operates_the_consent_screens(cards, visit, station):
    """N14: on the patient's request a carer operates the screens. With the carer beside the patient in
    the frame, the carer's presses are taken, and the choices that reach the query are the patient's."""
    v = visit(pick(cards, registered=True, over40=True))
    carer = other_person(cards, v.card, role="carer")
    _to_consent(v)
    v.show_holder(carer=carer)  # the carer steps in to help with the choices
    try:
        chosen = v.consents("decline", "consent", "decline_or_under40")
    except ReaderNak as nak:
        pytest.fail(f"the reader refused a consent choice the carer pressed for the patient: {nak}")
    elig = v.finish()
    row = visit_transaction(station, v, elig)
    assert row.get("consents") == {"surgery": "decline", "care": "consent", "checkup": "decline"}, \
        f"the service received {row.get('consents')}, the choices pressed for the patient were {chosen}"
    assert row.get("method") == "face", f"the query recorded method {row.get('method')}"
