"""N16: 「忘れずに、顔認証付きカードリーダーからマイナンバーカードを取り出してください」 however the visit ends.

The notice orders a visit as method selection, authentication and consent, then the reminder to
take the card. A visit can end in eight ways; each must leave the patient with the reminder
(the ``remind what=take_card`` event, or the reminder on the screen) before the card is taken.
"""

from __future__ import annotations

import pytest

from drivers.reader import ReaderNak
from scenarios.steps import Visit, await_screen, other_person, pick, reminded_to_take_card

pytestmark = [pytest.mark.flow("take_card_reminder"),
              pytest.mark.requires("card_placer", "subject_display", "dut", "cards")]

ENDING_SCREENS = ("done", "error", "pin_locked")


def _ends(v: Visit) -> str:
    shown = await_screen(v.dut, *ENDING_SCREENS)
    return shown.get("id")


def _done(cards, visit) -> Visit:
    v = visit(pick(cards, "face-auth", registered=True))
    v.show_holder()
    v.place()
    assert v.face_auth().get("result") == "ok", "face auth of the holder failed"
    v.consents()
    v.finish()
    return v


def _skip_registration(cards, visit) -> Visit:
    v = visit(pick(cards, registered=False))
    v.show_holder()
    v.place()
    read = [e for e in v.events() if e.kind == "card" and e.get("state") == "read"]
    if read and read[-1].get("registered") == "1":
        pytest.skip(f"{v.card.id} is registered already (an earlier scenario registered it)")
    assert v.face_auth().get("result") == "ok", "face auth of the holder failed"
    await_screen(v.dut, "registration")
    v.dut.press("skip")  # 登録せずに終了
    _ends(v)
    return v


def _end_on(screen: str):
    def run(cards, visit) -> Visit:
        v = visit(pick(cards, "standard", registered=True))
        v.show_nobody()  # nobody in the frame: the face screen waits
        v.place()
        if screen == "face_auth":
            v.choose_face()
        elif screen == "pin_entry":
            v.dut.press("pin")
            await_screen(v.dut, "pin_entry")
        v.dut.press("end")  # 終了する (on the PIN screen: キャンセル)
        _ends(v)
        return v
    return run


def _error(cards, visit) -> Visit:
    """A revoked certificate: the reader ends the visit with an error."""
    v = visit(pick(cards, revoked=True))
    v.show_holder()
    v.place(expect=("error",))
    return v


def _pin_lock(cards, visit) -> Visit:
    """Three wrong PINs in a row (or a card locked by an earlier scenario): the PIN lock ends the visit."""
    v = visit(pick(cards, "standard", disposable=True))
    v.show_nobody()
    v.place()
    v.dut.press("pin")
    shown = await_screen(v.dut, "pin_entry", "pin_locked")
    wrong = "0000" if v.card.pin != "0000" else "1111"
    for _ in range(3):
        if shown.get("id") == "pin_locked" or v.dut.screen().id == "pin_locked":
            break
        try:
            v.pin_auth(wrong, choose=False)  # waits for the reader's verdict on it
        except ReaderNak:
            break  # refused because it is locked already
    assert v.dut.screen().id == "pin_locked", f"after 3 wrong PINs the reader shows {v.dut.screen().id}"
    return v


def _visual_rejection(cards, visit) -> Visit:
    v = visit(pick(cards, "face-auth", registered=True))
    v.show(other_person(cards, v.card))
    v.place()
    v.dut.staff_visual_mode()
    v.dut.press("face")
    await_screen(v.dut, "visual_check")
    v.dut.staff_reject()
    _ends(v)
    return v


ENDINGS = {
    "done": _done,
    "registration_skipped": _skip_registration,
    "end_on_method_select": _end_on("method_select"),
    "end_on_face_auth": _end_on("face_auth"),
    "end_on_pin_entry": _end_on("pin_entry"),
    "error": _error,
    "pin_lock": _pin_lock,
    "visual_check_rejected": _visual_rejection,
}


@pytest.mark.clause("N16")
@pytest.mark.parametrize("ending", list(ENDINGS))
def test_reminder_after_every_ending(cards, visit, ending):
    v = ENDINGS[ending](cards, visit)
    assert reminded_to_take_card(v), \
        f"the visit ended ({ending}, screen {v.dut.screen().id}) without the reminder to take the card"
    v.take_card_back()
