"""Visual mode (目視モード): face authentication fails, staff launch the visual check from the
terminal, confirm or reject, and the reader goes back to unattended face-auth mode afterwards.

N12: staff compare the person with the face photo recorded on the card, so the reader presents
that photo to staff (the ``staff_view photo=shown`` event, or ``photo=1`` on the visual-check
screen: format and size only, never the image); the visual check works with a standard card too."""

from __future__ import annotations

import time

import pytest

from drivers.reader import ReaderTimeout
from scenarios.steps import (
    FACE_TIMEOUT_S,
    SCREEN_TIMEOUT_S,
    await_event,
    await_screen,
    other_person,
    pick,
    reminded_to_take_card,
)

pytestmark = [pytest.mark.flow("visual_fallback"),
              pytest.mark.requires("card_placer", "subject_display", "dut", "cards")]

FAILED_ATTEMPTS = ("no_match", "no_face", "multiple_faces", "attack")


def _struggle(v) -> str:
    """Choose face auth; return as soon as the reader shows it is struggling (a failed attempt or a
    failed verdict): the moment reception staff step in. 'matched' if it matched after all."""
    v.choose_face()
    deadline = time.monotonic() + FACE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            ev = v.dut.next_event(max(0.1, deadline - time.monotonic()))
        except ReaderTimeout:
            continue
        if ev.kind == "auth":
            return "matched" if ev.get("result") == "ok" else "failed"
        if ev.kind == "face" and ev.get("outcome") in FAILED_ATTEMPTS:
            return "struggling"
    raise AssertionError(f"face auth gave no attempt and no verdict within {FACE_TIMEOUT_S:.0f} s")


def _photo_presented(v) -> None:
    """N12: the card's recorded face photo is in front of the staff (described, never the image)."""
    shown = v.dut.screen()  # answered after every event the reader sent before it
    views = [e for e in v.events() if e.kind == "staff_view"]
    flag = shown.fields["photo"] if "photo" in shown.fields else None  # the control port's SCREEN says it too
    presented = (views and views[-1].get("photo") == "shown") or flag == "1"
    assert presented, (f"the visual check did not present the card's face photo to staff "
                       f"(staff_view events {[e.fields for e in views]}, screen photo={flag})")
    for e in views:
        assert not {"image", "data", "jp2"} & set(e.fields), f"image data left the reader: {sorted(e.fields)}"


def _visual_auth_recorded(v) -> None:
    """After staff confirm: the reader's verdict is a visual auth (a screen shows it a moment later)."""
    try:
        await_event(v.dut, "auth", SCREEN_TIMEOUT_S, method="visual")
    except AssertionError:
        pass  # judged below, naming what was recorded
    auth = [e for e in v.auth_events() if e.get("method") == "visual"]
    assert auth and auth[-1].get("result") == "ok", f"staff confirmation not recorded as a visual auth: {auth}"


def _back_in_face_mode(v) -> None:
    v.take_card_back()
    screen = v.dut.screen()
    assert screen.mode == "face", (f"after the visit the reader stayed in {screen.mode} mode: "
                                   "the next patient would not get unattended face authentication")
    modes = [e.get("mode") for e in v.events() if e.kind == "mode"]
    if "visual" in modes:
        assert modes[-1] == "face", f"no switch back to face mode was announced (mode events: {modes})"


@pytest.mark.clause("N12", "N20")
@pytest.mark.parametrize("condition", ["mask", "backlight", "card_greyscale"])
def test_holder_under_hard_condition_gets_through(cards, visit, measure, condition):
    """The holder under a condition that makes face auth hard: either the reader still matches, or staff
    step in with the visual check and confirm. Either way the visit completes and the reader is back in
    face mode for the next patient."""
    v = visit(pick(cards, "face-auth", registered=True))
    v.show_holder(condition)
    v.place()
    verdict = _struggle(v)
    measure("visual_check_needed_count", 0 if verdict == "matched" else 1)
    if verdict == "matched":
        v.consents()
        assert v.finish().get("method") == "face"
    else:
        _confirm_by_staff(v)
    _back_in_face_mode(v)


def _confirm_by_staff(v) -> None:
    v.staff_visual_check()
    assert v.dut.screen().mode == "visual"
    _photo_presented(v)
    v.dut.staff_confirm()
    _visual_auth_recorded(v)
    v.consents()
    elig = v.finish()
    assert elig.get("method") == "visual", f"the eligibility query recorded method {elig.get('method')}"


@pytest.mark.clause("N12", "N1")
def test_staff_switch_to_visual_mode_before_face_step(cards, visit):
    """Staff who know the patient cannot use face auth switch to visual mode first; the face step then
    opens the visual check at once."""
    v = visit(pick(cards, "face-auth", registered=True))
    v.show_nobody()
    v.place()
    v.dut.staff_visual_mode()
    assert v.dut.screen().mode == "visual"
    v.dut.press("face")
    await_screen(v.dut, "visual_check")
    _photo_presented(v)
    v.dut.staff_confirm()
    v.consents()
    assert v.finish().get("method") == "visual"
    _back_in_face_mode(v)


@pytest.mark.clause("N12")
def test_visual_check_with_a_standard_card(cards, visit):
    """A standard card whose holder finds face auth and the PIN hard: staff check visually, as for a face-auth card."""
    v = visit(pick(cards, "standard", registered=True))
    v.show_nobody()
    v.place()
    v.dut.press("pin")
    await_screen(v.dut, "pin_entry")
    v.staff_visual_check()
    _photo_presented(v)
    v.dut.staff_confirm()
    _visual_auth_recorded(v)
    v.consents()
    assert v.finish().get("method") == "visual", "the eligibility query did not record the visual check"
    assert not [e for e in v.events() if e.kind == "pin"], "a PIN was tried although staff checked visually"
    _back_in_face_mode(v)


@pytest.mark.clause("N12", "N16")
def test_impostor_rejected_by_staff(cards, visit):
    """Someone else with the card: face auth fails, staff reject, the visit ends without authentication."""
    v = visit(pick(cards, "face-auth", registered=True))
    v.show(other_person(cards, v.card))
    v.place()
    verdict = _struggle(v)
    assert verdict != "matched", f"the reader matched another person to {v.card.id}"
    v.staff_visual_check()
    _photo_presented(v)
    v.dut.staff_reject()
    await_screen(v.dut, "error", "idle", timeout_s=SCREEN_TIMEOUT_S)
    assert not v.auth_events("ok"), f"a rejected visit was authenticated: {v.auth_events('ok')}"
    assert reminded_to_take_card(v), "after the staff's rejection the patient was not told to take the card"
    assert not [e for e in v.events() if e.kind == "eligibility"], "a rejected visit reached the eligibility service"
    _back_in_face_mode(v)


@pytest.mark.clause("N12", "N1", "N10")
def test_staff_call_after_failed_face_auth(cards, visit):
    """A face-auth card whose face auth fails is referred to staff (no PIN), and waits for them."""
    v = visit(pick(cards, "face-auth", registered=True))
    v.show(other_person(cards, v.card))
    v.place()
    auth = v.face_auth()
    assert auth.get("result") == "fail"
    shown = await_screen(v.dut, "staff_call", "pin_entry")
    assert shown.get("id") == "staff_call", f"a failed face-auth card went to {shown.get('id')} instead of staff"
    v.staff_visual_check()
    v.dut.staff_reject()
    _back_in_face_mode(v)
