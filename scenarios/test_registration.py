"""Health-insurance-use registration (利用登録) at the reader: by PIN or face auth, and by a staff
visual check only on firmware with the `visual_check_registration` feature (N7: refused before the
reader's system update, possible after it, for standard and face-auth cards alike). While the
service completes a registration the reader shows that it is waiting (N17).

Registration changes the card's state at the eligibility service for good, so the scenarios that
register need a card that is still unregistered; the ones that must not register run first.
"""

from __future__ import annotations

import pytest

from harness.measure import Limit
from scenarios.steps import Visit, await_event, await_screen, has_feature, pick, require_feature

pytestmark = [pytest.mark.flow("registration"),
              pytest.mark.requires("card_placer", "subject_display", "dut", "cards")]

FEATURE = "visual_check_registration"
# N17: "completing the application may take a little time"; a station's [limits.registration_ms] replaces it
REGISTRATION_LIMIT = Limit(high=15000, marginal=5000)


def place_unregistered(v: Visit) -> None:
    """Place the card; skip if the reader reports it registered already (an earlier visit registered it)."""
    v.show_holder()
    v.place()
    read = [e for e in v.events() if e.kind == "card" and e.get("state") == "read"]
    if read and read[-1].get("registered") == "1":
        pytest.skip(f"{v.card.id} is registered already (an earlier scenario registered it)")


def visual_check_confirmed(v: Visit) -> None:
    """Face auth (standard card: the PIN) is hard: staff launch visual mode and confirm the person."""
    if v.card.profile == "face-auth":
        v.dut.staff_visual_mode()
        v.dut.press("face")
    else:
        v.dut.press("pin")
        await_screen(v.dut, "pin_entry")
        v.dut.staff_visual_mode()
    await_screen(v.dut, "visual_check")
    v.dut.staff_confirm()


@pytest.mark.clause("N7", "N12")
@pytest.mark.parametrize("profile", ["face-auth", "standard"])
def test_visual_registration_refused_before_update(cards, visit, station, profile):
    v = visit(pick(cards, profile, registered=False))
    if has_feature(station, v.dut, FEATURE):
        pytest.skip(f"the reader's firmware has {FEATURE} (test_visual_registration_after_update)")
    place_unregistered(v)
    visual_check_confirmed(v)
    shown = await_screen(v.dut, "registration", "error", "done")
    assert shown.get("id") != "registration", f"a reader without {FEATURE} offered registration after a visual check"
    # the reason: the reader's error event, or what its ending screen says
    errors = [e for e in v.events() if e.kind == "error"] or [shown]
    assert errors and errors[-1].get("msg"), "the refusal gives no reason"
    if profile == "face-auth":  # the card has no PIN: its holder must not be sent to one
        said = f"{errors[-1].get('msg')} {errors[-1].get('msg_en') or ''}"
        assert "暗証番号" not in said and "PIN" not in said, f"a face-auth card holder was told to use a PIN: {said!r}"
    assert not [e for e in v.events() if e.kind == "registration" and e.get("result") == "ok"]
    v.take_card_back()
    assert v.dut.screen().mode == "face"


@pytest.mark.clause("N17", "N6")
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
    """Press 登録する: the reader shows it is waiting until the service completes (N17), then consents."""
    await_screen(v.dut, "registration")
    v.dut.press("register")
    reg = await_event(v.dut, "registration", timeout_s=REGISTRATION_LIMIT.high / 1000 + 10)
    assert reg.get("result") == "ok", f"registration by {method} failed: {reg.fields}"
    assert reg.get("method") == method, f"registration recorded method {reg.get('method')}, expected {method}"
    waiting = [e for e in v.events() if e.kind == "screen" and e.get("id") == "registering"
               and e.seq < reg.seq]
    assert waiting, "the reader showed no waiting screen (registering) while the registration completed"
    v.measure("registration_ms", reg.reader_ms - waiting[-1].reader_ms, limit=REGISTRATION_LIMIT)
    v.consents()
    assert v.finish().get("method") == method


@pytest.mark.clause("N6", "N17", "N18")
def test_register_by_pin(cards, visit):
    v = visit(pick(cards, "standard", registered=False))
    place_unregistered(v)
    ev = v.pin_auth(v.card.pin)
    assert ev.get("result") == "ok", f"PIN auth failed: {ev.fields}"
    register_and_finish(v, "pin")


@pytest.mark.clause("N6", "N17", "N1")
def test_register_by_face(cards, visit):
    v = visit(pick(cards, "face-auth", registered=False))
    place_unregistered(v)
    auth = v.face_auth()
    assert auth.get("result") == "ok", f"face auth of the holder failed: {auth.fields}"
    register_and_finish(v, "face")


@pytest.mark.clause("N7", "N12", "N17")
@pytest.mark.parametrize("profile", ["face-auth", "standard"])
def test_visual_registration_after_update(cards, visit, station, profile):
    """After the update a visual check registers the card; a station that declares the update
    ([dut] expect_features) fails here if the reader lacks it. Last in the file: it takes the last
    unregistered card, which the scenarios above may need first."""
    v = visit(pick(cards, profile, registered=False, index=-1))
    require_feature(station, v.dut, FEATURE)
    place_unregistered(v)
    visual_check_confirmed(v)
    register_and_finish(v, "visual")
    v.take_card_back()
