"""The reference reader's panel: what it draws (sim/reader/display.py), and touches at panel
pixels through its real touch port (sim/reader/touch.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sim.reader.display import (BUTTON_TOP_PX, PANEL_H_PX, PANEL_W_PX, button_at, button_rects, render_panel,
                                text_boxes)
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
    assert list(rects) == [b for b in state["buttons"].split(",") if b]
    for x, y, w, h in rects.values():
        assert 0 <= x and x + w <= PANEL_W_PX and 0 <= y and y + h <= PANEL_H_PX
        assert h >= 60 and w >= 120
    boxes = sorted(rects.values())
    for (x0, _, w0, _), (x1, _, _, _) in zip(boxes, boxes[1:]):
        assert x0 + w0 < x1  # a gap between neighbours: a tap between them presses nothing
    for line, (x, y, w, h) in text_boxes(state):  # every message line inside, above the buttons
        assert 0 <= x and x + w <= PANEL_W_PX and y + h <= BUTTON_TOP_PX, line


@pytest.mark.parametrize("state", [s for s in ALL_STATES if s["buttons"]], ids=lambda s: s["screen"])
def test_labels_and_message_are_drawn(state):
    img = render_panel(state).astype(int)
    for button, (x, y, w, h) in button_rects(state).items():
        inner = img[y + 10:y + h - 10, x + 10:x + w - 10]
        white = inner.min(axis=2) > 200
        assert white.sum() > 600 and white.mean() < 0.5, f"{button}: label strokes: {white.sum()} px"
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
    import subprocess

    import cv2

    state = state_of(Screen.METHOD_SELECT)
    ok, png = cv2.imencode(".png", render_panel(state))
    langs = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout.split()
    if "jpn" not in langs:
        pytest.skip("tesseract has no jpn language data (Debian tesseract-ocr-jpn)")
    out = subprocess.run(["tesseract", "stdin", "stdout", "-l", "jpn", "--psm", "6", "-c",
                          "preserve_interword_spaces=1"], input=png.tobytes(), capture_output=True, timeout=60)
    text = out.stdout.decode("utf-8").replace(" ", "")
    assert "本人確認" in text and "顔認証" in text, text
