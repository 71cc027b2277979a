"""Health-insurance-use registration (利用登録) at the reader: by PIN or face auth, and by a staff
visual check only on firmware with the `visual_check_registration` feature.

Registration changes the card's state at the eligibility service for good, so the scenarios that
register need a card that is still unregistered; the ones that must not register run first.
"""

from __future__ import annotations

import pytest

from scenarios.steps import Visit, await_event, await_screen, pick

pytestmark = [pytest.mark.flow("registration"),
              pytest.mark.requires("card_placer", "subject_display", "dut", "cards")]

FEATURE = "visual_check_registration"


def place_unregistered(v: Visit) -> None:
    """Place the card; skip if the reader reports it registered already (an earlier visit registered it)."""
    v.show_holder()
    v.place()
    read = [e for e in v.events() if e.kind == "card" and e.get("state") == "read"]
    if read and read[-1].get("registered") == "1":
        pytest.skip(f"{v.card.id} is registered already (an earlier scenario registered it)")


def visual_check_confirmed(v: Visit) -> None:
    """Staff switch to visual mode before the patient chooses, then confirm the person."""
    v.dut.staff_visual_mode()
    v.dut.press("face")
    await_screen(v.dut, "visual_check")
    v.dut.staff_confirm()


def test_visual_registration_refused_before_update(cards, visit):
    v = visit(pick(cards, "face-auth", registered=False))
    if FEATURE in v.dut.info().features:
        pytest.skip(f"the reader's firmware has {FEATURE} (covered by test_firmware_update)")
    place_unregistered(v)
    visual_check_confirmed(v)
    shown = await_screen(v.dut, "registration", "error", "done")
    assert shown.get("id") != "registration", \
        f"firmware {v.dut.info().version} without {FEATURE} offered registration after a visual check"
    errors = [e for e in v.events() if e.kind == "error"]
    assert errors and errors[-1].get("msg"), "the refusal gives no reason"
    assert not [e for e in v.events() if e.kind == "registration" and e.get("result") == "ok"]
    v.take_card_back()
    assert v.dut.screen().mode == "face"


def test_skip_registration(cards, visit):
    v = visit(pick(cards, registered=False))
    place_unregistered(v)
    auth = v.face_auth()
    assert auth.get("result") == "ok", f"face auth of the holder failed: {auth.fields}"
    shown = await_screen(v.dut, "registration")
    assert {"register", "skip"} <= set((shown.get("buttons") or "").split(","))
    v.dut.press("skip")
    done = await_screen(v.dut, "done", "error")
    assert done.get("id") == "done"
    assert not [e for e in v.events() if e.kind in ("registration", "eligibility")], \
        "a skipped registration still reached the eligibility service"


def register_and_finish(v: Visit, method: str) -> None:
    await_screen(v.dut, "registration")
    v.dut.press("register")
    reg = await_event(v.dut, "registration")
    assert reg.get("result") == "ok", f"registration by {method} failed: {reg.fields}"
    assert reg.get("method") == method, f"registration recorded method {reg.get('method')}, expected {method}"
    v.consents()
    assert v.finish().get("method") == method


def test_register_by_pin(cards, visit):
    v = visit(pick(cards, "standard", registered=False))
    place_unregistered(v)
    ev = v.pin_auth(v.card.pin)
    assert ev.get("result") == "ok", f"PIN auth failed: {ev.fields}"
    register_and_finish(v, "pin")


def test_register_by_face(cards, visit):
    v = visit(pick(cards, "face-auth", registered=False))
    place_unregistered(v)
    auth = v.face_auth()
    assert auth.get("result") == "ok", f"face auth of the holder failed: {auth.fields}"
    register_and_finish(v, "face")
