"""Several faces in the frame (not in the notice, so not a house rule): a reader may ask the others
to step out, or may decide on the holder's face when it is among them. Either way it never
authenticates a card with a face that is not the holder's (N1), and a carer who helps the patient
(N9) and then steps aside does not strand the visit: it still ends in a decision."""

from __future__ import annotations

import time

import pytest

from drivers.reader import ReaderTimeout
from scenarios.steps import FACE_TIMEOUT_S, await_event, other_person, pick

pytestmark = [pytest.mark.flow("several_faces"),
              pytest.mark.requires("card_placer", "subject_display", "dut", "cards")]

CARER_IN_FRAME_S = 3.0


@pytest.mark.clause("N1")
def test_no_holder_in_a_crowded_frame_is_never_authenticated(cards, visit):
    """Someone else and a carer in the frame, the holder absent: whatever the reader does, no 'ok'."""
    v = visit(pick(cards, "face-auth", registered=True))
    others = list(dict.fromkeys([other_person(cards, v.card, role="carer")]
                                + [c.holder for c in cards if c.holder and c.holder != v.card.holder]))
    if len(others) < 2:
        pytest.skip("the station names fewer than two people other than the holder")
    carer, stranger = others[:2]
    v.show(stranger, carer=carer)
    v.place()
    v.choose_face()
    deadline = time.monotonic() + FACE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            ev = v.dut.next_event(max(0.1, deadline - time.monotonic()))
        except ReaderTimeout:
            continue
        if ev.kind == "auth":
            assert ev.get("result") != "ok", \
                f"the reader authenticated {v.card.id} with {stranger} and carer {carer} in the frame, not its holder"
            break


@pytest.mark.clause("N9", "N1")
def test_carer_steps_aside_and_the_visit_ends_in_a_decision(cards, visit, measure):
    """The carer is in the frame for a few seconds, then steps aside: the holder is decided on."""
    v = visit(pick(cards, "face-auth", registered=True))
    carer = other_person(cards, v.card, role="carer")
    v.show_holder(carer=carer)
    v.place()
    chosen_s = time.monotonic()
    v.choose_face()
    time.sleep(CARER_IN_FRAME_S)
    decided_with_carer = [e for e in v.events() if e.kind == "auth"]
    if decided_with_carer:
        auth = decided_with_carer[-1]
    else:
        v.show_holder()
        try:
            auth = await_event(v.dut, "auth", FACE_TIMEOUT_S, method="face")
        except AssertionError as exc:
            pytest.fail(f"the visit was stranded: no decision {FACE_TIMEOUT_S:.0f} s after the carer stepped aside ({exc})")
    measure("carer_decision_ms", (auth.host_monotonic_s - chosen_s) * 1000.0)
    assert auth.get("result") == "ok", f"the holder was not matched once the carer stepped aside: {auth.fields}"
