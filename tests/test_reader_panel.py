"""The reference reader's panel: what it draws (sim/reader/display.py), and touches at panel
pixels through its real touch port (sim/reader/touch.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sim.reader.display import (BUTTON_TOP_PX, KEYPAD, PANEL_H_PX, PANEL_W_PX, button_at, button_rects,
                                render_panel, text_boxes)
from sim.reader.screens import BUTTONS, MESSAGES, TAKE_CARD, Screen, label


def state_of(screen: Screen, extra_msg=None) -> dict:
    buttons = BUTTONS.get(screen, ())
    text = MESSAGES[screen] + extra_msg if extra_msg else MESSAGES[screen]
    return {"screen": screen.value, "msg": text.ja, "msg_en": text.en, "buttons": ",".join(buttons),
            "labels": ",".join(label(screen, b) for b in buttons)}


ALL_STATES = [state_of(s) for s in Screen] + [state_of(Screen.DONE, TAKE_CARD), state_of(Screen.ERROR, TAKE_CARD)]


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s["screen"] + ("+take" if "取り出" in s["msg"] else ""))
def test_every_button_is_big_inside_the_panel_and_apart(state):
    img = render_panel(state)
    assert img.shape == (PANEL_H_PX, PANEL_W_PX, 3) and img.dtype == np.uint8
    rects = button_rects(state)
    keypad = [k for k, _ in KEYPAD] if state["screen"] == "pin_entry" else []
    assert list(rects) == [b for b in state["buttons"].split(",") if b] + keypad
    for x, y, w, h in rects.values():
        assert 0 <= x and x + w <= PANEL_W_PX and 0 <= y and y + h <= PANEL_H_PX
        assert h >= 60 and w >= 100
    boxes = list(rects.values())
    for i, (x0, y0, w0, h0) in enumerate(boxes):  # a gap between any two: a tap between them presses nothing
        for x1, y1, w1, h1 in boxes[i + 1:]:
            assert x0 + w0 + 8 <= x1 or x1 + w1 + 8 <= x0 or y0 + h0 + 8 <= y1 or y1 + h1 + 8 <= y0
    for line, (x, y, w, h) in text_boxes(state):  # every message line inside, above the buttons
        assert 0 <= x and x + w <= PANEL_W_PX and y + h <= BUTTON_TOP_PX, line


@pytest.mark.parametrize("state", [s for s in ALL_STATES if s["buttons"]], ids=lambda s: s["screen"])
def test_labels_and_message_are_drawn(state):
    img = render_panel(state).astype(int)
    for button, (x, y, w, h) in button_rects(state).items():
        inner = img[y + 10:y + h - 10, x + 10:x + w - 10]
        ink = np.abs(inner - np.median(inner.reshape(-1, 3), axis=0)).max(axis=2) > 100  # off the key's colour
        assert ink.sum() > 120 and ink.mean() < 0.5, f"{button}: label strokes: {ink.sum()} px"
    # the message: dark glyph pixels in each line's box, and a different message draws differently
    for line, (x, y, w, h) in text_boxes(state):
        dark = (img[y:y + h, x:x + w].max(axis=2) < 100).mean()
        assert dark > 0.08, f"line {line!r}: {dark:.2%} dark"
    other = render_panel({**state, "msg": state["msg"][::-1]}).astype(int)
    assert np.abs(other[:BUTTON_TOP_PX] - img[:BUTTON_TOP_PX]).sum() > 0
    assert np.array_equal(other[BUTTON_TOP_PX:], img[BUTTON_TOP_PX:])


def test_labels_are_the_japanese_ones_not_ids():
    """Drawing the id instead of the label would still leave strokes: compare with an explicit id render."""
    state = state_of(Screen.METHOD_SELECT)
    as_ids = {**state, "labels": ""}
    assert not np.array_equal(render_panel(state), render_panel(as_ids))
    assert np.array_equal(render_panel(state), render_panel(dict(state)))  # deterministic


def test_touch_outside_every_button_hits_nothing():
    state = state_of(Screen.METHOD_SELECT)
    rects = button_rects(state)
    for button, (x, y, w, h) in rects.items():
        assert button_at(state, x + w / 2, y + h / 2) == button
        assert button_at(state, x, y) == button and button_at(state, x + w - 1, y + h - 1) == button
        assert button_at(state, x - 1, y + h / 2) is None and button_at(state, x + w / 2, y - 1) is None
    assert button_at(state, 400, 100) is None  # on the message
    assert button_at(state_of(Screen.IDLE), 400, BUTTON_TOP_PX + 40) is None  # where buttons would be


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract (Debian tesseract-ocr-jpn) not installed")
def test_ocr_reads_the_rendered_japanese():
    """Tesseract jpn reads the message and each button's label as drawn (a sanity check of the
    font and layout; the host's recogniser lives in drivers/screen.py)."""
    import subprocess

    import cv2

    if "jpn" not in subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout.split():
        pytest.skip("tesseract has no jpn language data (Debian tesseract-ocr-jpn)")

    def ocr(img, psm: int) -> str:
        ok, png = cv2.imencode(".png", img)
        out = subprocess.run(["tesseract", "stdin", "stdout", "-l", "jpn", "--psm", str(psm), "-c",
                              "preserve_interword_spaces=1"], input=png.tobytes(), capture_output=True, timeout=60)
        return out.stdout.decode("utf-8").replace(" ", "").strip()

    state = state_of(Screen.METHOD_SELECT)
    img = render_panel(state)
    message = ocr(img[:BUTTON_TOP_PX], 6)
    assert "本人確認の方法を選んでください" in message, message
    for button, (x, y, w, h) in button_rects(state).items():
        inner = img[y + 12:y + h - 12, x + 12:x + w - 12]  # inside the rounded edge
        grey = 255 - cv2.cvtColor(inner, cv2.COLOR_BGR2GRAY)  # white on colour -> dark on light
        assert ocr(grey, 7) == label(Screen.METHOD_SELECT, button), button


# -- through the real ports of a running reader (recorded card and face, real sockets) ------------
import os  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402

from panel_reader import panel_reader  # noqa: E402
from sim.context import TOKEN_ENV  # noqa: E402


WAIT_S = 5.0


@pytest.fixture
def live(tmp_path):
    with panel_reader(tmp_path) as parts:
        yield parts


class Glass:
    """A host on the touch port: one line out, one reply line back."""

    def __init__(self, url: str):
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5.0)
        self.file = self.sock.makefile("rb")
        self.seq = 0
        token = os.environ.get(TOKEN_ENV)  # a port started under a station token wants it first
        if token:
            self.sock.sendall(f"AUTH {token}\n".encode())
            assert self.file.readline() == b"AUTH OK\n"

    def send(self, line: str) -> str:
        self.seq += 1
        self.sock.sendall(f"{self.seq} {line}\n".encode())
        return self.file.readline().decode().strip()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _centre(rect):
    x, y, w, h = rect
    return x + w / 2, y + h / 2


def test_touch_presses_the_button_under_it_and_nothing_elsewhere(live):
    sim, hw, dut, panel = live
    glass = Glass(panel.touch_url)
    try:
        dut.wait_for_screen("idle", WAIT_S)
        hw.insert()
        state = dut.wait_for_screen("method_select", WAIT_S).fields
        rects = button_rects(state)
        # outside every button: on the message, in the gap between two buttons, on the bezel edge
        (fx, fy, fw, fh), (px, _, _, _) = rects["face"], rects["pin"]
        for x, y in ((400, 150), ((fx + fw + px) / 2, fy + fh / 2), (799, 479)):
            assert glass.send(f"TOUCH {x:g} {y:g} 30").startswith(f"ACK {glass.seq}")
        time.sleep(0.2)
        assert dut.screen().id == "method_select"
        assert not [e for e in dut.history() if e.kind in ("refused", "auth")]
        # bad input is refused with a reason, and presses nothing
        assert glass.send("TOUCH 900 100 30").startswith(f"NAK {glass.seq} RANGE")
        assert glass.send("TOUCH a b c").startswith(f"NAK {glass.seq} ARGS")
        assert glass.send("PRESS face").startswith(f"NAK {glass.seq} UNKNOWN")
        # on the face button: the face screen, as the control port's PRESS face would
        t0 = time.monotonic()
        x, y = _centre(rects["face"])
        assert glass.send(f"TOUCH {x:g} {y:g} 150").startswith(f"ACK {glass.seq}")
        assert time.monotonic() - t0 >= 0.15  # the reply comes when the finger is lifted
        assert dut.wait_for_event("screen", WAIT_S, id="face_auth")
        assert panel.touch.presses == 1 and panel.touch.touches == 4
    finally:
        glass.close()


def test_panel_stream_shows_the_current_screen(live):
    sim, hw, dut, panel = live
    dut.wait_for_screen("idle", WAIT_S)
    cap = cv2.VideoCapture(panel.panel_url)
    try:
        assert cap.isOpened()

        def frame_like(state, timeout_s=WAIT_S):
            want = render_panel(state).astype(int)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                ok, frame = cap.read()
                assert ok and frame.shape == want.shape
                if np.abs(frame.astype(int) - want).mean() < 4:  # JPEG noise only
                    return True
            return False

        assert frame_like(dut.screen().fields)
        hw.insert()
        assert frame_like(dut.wait_for_screen("method_select", WAIT_S).fields)
    finally:
        cap.release()


def test_pin_keypad_on_the_panel_enters_the_pin(live):
    """The PIN screen's keypad: digits collected by the panel, 訂正 clears, the fourth digit hands
    the flow the PIN; a wrong one is refused by the flow, the right one authenticates."""
    sim, hw, dut, panel = live
    dut.wait_for_screen("idle", WAIT_S)
    hw.insert()
    state = dut.wait_for_screen("method_select", WAIT_S).fields
    glass = Glass(panel.touch_url)
    try:
        def tap(rects, key):
            x, y = _centre(rects[key])
            assert glass.send(f"TOUCH {x:g} {y:g} 20").startswith(f"ACK {glass.seq}")

        tap(button_rects(state), "pin")
        state = dut.wait_for_screen("pin_entry", WAIT_S).fields
        rects = button_rects(state)
        assert {f"digit_{d}" for d in range(10)} | {"clear", "end"} == set(rects)
        for x, y, w, h in rects.values():
            assert h >= 60 and x + w <= PANEL_W_PX and y + h <= PANEL_H_PX
        assert panel.touch.panel_fields() == {"pin_entered": 0}
        for key in ("digit_9", "digit_9", "clear"):  # typed, then cleared: nothing reaches the flow
            tap(rects, key)
        assert panel.touch.panel_fields() == {"pin_entered": 0}
        for key in ("digit_9", "digit_9", "digit_9"):
            tap(rects, key)
        assert panel.touch.panel_fields() == {"pin_entered": 3}
        drawn = render_panel({**state, "pin_entered": 3})
        assert not np.array_equal(drawn, render_panel({**state, "pin_entered": 0}))
        tap(rects, "digit_9")  # the fourth: "9999" goes to the flow, which refuses it
        assert dut.wait_for_event("pin", WAIT_S, result="wrong").get("tries_left") == "2"
        assert panel.touch.panel_fields() == {"pin_entered": 0}
        for key in ("digit_1", "digit_2", "digit_3", "digit_4"):
            tap(rects, key)
        assert dut.wait_for_event("auth", WAIT_S, method="pin").get("result") == "ok"
    finally:
        glass.close()
