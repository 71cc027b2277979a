"""The reference reader's touch-screen face: its screen state drawn as the 800x480 panel a
patient sees (hardware.md 11.2). Pure functions of the screen state, so the same picture comes
out of the reader process, the tests and a host's reference frames.

``screen_state`` is what the control port's SCREEN query reports (``ReaderFlow.state()``):
``screen`` (id), ``msg`` (the Japanese message, lines split by LF), ``buttons`` and ``labels``
(comma-separated, or sequences). Panel coordinates: pixels of this image, origin top-left,
x right, y down. The layout is a table of rectangles (``button_rects``); the flow never sees
a pixel.
"""

from __future__ import annotations

import functools
import glob
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

PANEL_W_PX = 800
PANEL_H_PX = 480
HEADER_H_PX = 52
MARGIN_PX = 24
BUTTON_H_PX = 96  # big: a gloved or elderly finger, and a robot finger with a few mm of error
BUTTON_GAP_PX = 20
BUTTON_TOP_PX = PANEL_H_PX - MARGIN_PX - BUTTON_H_PX
MSG_TOP_PX = HEADER_H_PX + 28
MSG_BOTTOM_PX = BUTTON_TOP_PX - 16
MSG_FONT_PX = (34, 30, 26, 22)  # the largest that fits the message area
LABEL_FONT_PX = (32, 28, 24, 20)
TITLE = "顔認証付きカードリーダー"
# The PIN screen's keypad: panel-local keys (the panel collects the digits and hands the flow the
# whole PIN, as a real reader's UI does). Right half, 3 columns x 4 rows; the flow's own buttons
# (キャンセル) sit bottom left.
PIN_SCREEN = "pin_entry"
PIN_DIGITS = 4
KEYPAD = (("digit_1", "1"), ("digit_2", "2"), ("digit_3", "3"), ("digit_4", "4"), ("digit_5", "5"), ("digit_6", "6"),
          ("digit_7", "7"), ("digit_8", "8"), ("digit_9", "9"), ("clear", "訂正"), ("digit_0", "0"))
KEYPAD_X_PX = 412
KEYPAD_TOP_PX = HEADER_H_PX + 16
KEY_GAP_PX = 10
KEY_FONT_PX = 44
KEY_H_PX = (PANEL_H_PX - MARGIN_PX - KEYPAD_TOP_PX - 3 * KEY_GAP_PX) // 4
KEY_W_PX = (PANEL_W_PX - MARGIN_PX - KEYPAD_X_PX - 2 * KEY_GAP_PX) // 3

BG = (255, 255, 255)  # RGB (Pillow); converted to BGR on the way out
HEADER_BG = (0, 70, 140)
TEXT = (20, 20, 20)
BUTTON_BG = (0, 110, 200)
BUTTON_END_BG = (90, 90, 90)  # the buttons that end or leave: grey, as the notice's screens show
BUTTON_FG = (255, 255, 255)
QUIET_BUTTONS = frozenset({"end", "skip", "decline", "decline_or_under40"})

FONT_GLOBS = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
              "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
              "/usr/share/fonts/**/NotoSansCJK*.ttc")
CLOSERS = "、。，．」』）！？!?・ー"  # never first on a line
JP_FACE_INDEX = 0  # in the Noto CJK collections, face 0 is "Noto Sans CJK JP"


class PanelError(RuntimeError):
    """The panel cannot be drawn (no Japanese font installed)."""


@functools.lru_cache(maxsize=1)
def font_path() -> str:
    for pattern in FONT_GLOBS:
        found = sorted(glob.glob(pattern, recursive=True))
        if found:
            return found[0]
    raise PanelError("no Noto Sans CJK font found under /usr/share/fonts: install Debian fonts-noto-cjk "
                     "(make setup does)")


@functools.lru_cache(maxsize=16)
def _font(size_px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(), size_px, index=JP_FACE_INDEX)


def _split(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return value.split(",")
    return [str(v) for v in value]


def _is_pin(screen_state: Mapping[str, Any]) -> bool:
    return screen_state.get("screen") == PIN_SCREEN


def buttons_of(screen_state: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``[(button_id, label), ...]`` in display order (a missing label shows the id); on the PIN
    screen the keypad's keys follow the flow's buttons."""
    ids = _split(screen_state.get("buttons"))
    labels = _split(screen_state.get("labels"))
    out = [(b, labels[i] if i < len(labels) and labels[i] else b) for i, b in enumerate(ids)]
    return out + list(KEYPAD) if _is_pin(screen_state) else out


def button_rects(screen_state: Mapping[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    """Each offered button's rectangle ``(x, y, w, h)`` in panel pixels: one row along the
    bottom, equal widths, in display order."""
    ids = _split(screen_state.get("buttons"))
    right = KEYPAD_X_PX - BUTTON_GAP_PX if _is_pin(screen_state) else PANEL_W_PX - MARGIN_PX
    rects: dict[str, tuple[int, int, int, int]] = {}
    if ids:
        n = len(ids)
        width = (right - MARGIN_PX - (n - 1) * BUTTON_GAP_PX) // n
        rects = {b: (MARGIN_PX + i * (width + BUTTON_GAP_PX), BUTTON_TOP_PX, width, BUTTON_H_PX)
                 for i, b in enumerate(ids)}
    if _is_pin(screen_state):
        for i, (key, _) in enumerate(KEYPAD):
            row, col = divmod(i, 3)
            rects[key] = (KEYPAD_X_PX + col * (KEY_W_PX + KEY_GAP_PX), KEYPAD_TOP_PX + row * (KEY_H_PX + KEY_GAP_PX),
                          KEY_W_PX, KEY_H_PX)
    return rects


def button_at(screen_state: Mapping[str, Any], x_px: float, y_px: float) -> str | None:
    """The button under a touch at (x, y), or None: outside every button a touch does nothing."""
    for button, (x, y, w, h) in button_rects(screen_state).items():
        if x <= x_px < x + w and y <= y_px < y + h:
            return button
    return None


def _wrap(text: str, font: ImageFont.FreeTypeFont, width_px: int) -> list[str]:
    """Break Japanese text into lines that fit: at LF, else at any character (Japanese has no
    spaces to break at), never starting a line with closing punctuation (kinsoku, simply)."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for ch in para:
            if line and font.getlength(line + ch) > width_px:
                carry = ""
                if ch in CLOSERS and len(line) > 1:  # carry the last character along with it
                    line, carry = line[:-1], line[-1]
                lines.append(line)
                line = carry + ch
            else:
                line += ch
        lines.append(line)
    return lines


def _message_layout(msg: str, pin: bool = False) -> tuple[ImageFont.FreeTypeFont, list[str], int]:
    width = (KEYPAD_X_PX - BUTTON_GAP_PX if pin else PANEL_W_PX - MARGIN_PX) - MARGIN_PX
    height = MSG_BOTTOM_PX - MSG_TOP_PX
    for size in MSG_FONT_PX:
        font = _font(size)
        lines = _wrap(msg, font, width)
        line_h = int(size * 1.45)
        if len(lines) * line_h <= height or size == MSG_FONT_PX[-1]:
            return font, lines, line_h
    raise AssertionError("unreachable")


def _fit_label(label: str, width_px: int) -> ImageFont.FreeTypeFont:
    for size in LABEL_FONT_PX:
        if _font(size).getlength(label) <= width_px - 16:
            return _font(size)
    return _font(LABEL_FONT_PX[-1])


def render_panel(screen_state: Mapping[str, Any]) -> np.ndarray:
    """The panel image, BGR uint8, 480 rows x 800 columns."""
    return _render_state(screen_state).copy()


def _render_state(screen_state: Mapping[str, Any]) -> np.ndarray:
    pin = _pin_entered(screen_state) if _is_pin(screen_state) else None
    return _render(str(screen_state.get("msg", "")), tuple(buttons_of(screen_state)), pin)


def _pin_entered(screen_state: Mapping[str, Any]) -> int:
    """How many PIN digits the panel holds (``pin_entered``, panel-local; never the digits)."""
    try:
        return max(0, min(PIN_DIGITS, int(screen_state.get("pin_entered", 0))))
    except (TypeError, ValueError):
        return 0


@functools.lru_cache(maxsize=64)
def _render(msg: str, buttons: tuple[tuple[str, str], ...], pin_entered: int | None = None) -> np.ndarray:
    img = Image.new("RGB", (PANEL_W_PX, PANEL_H_PX), BG)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, PANEL_W_PX, HEADER_H_PX), fill=HEADER_BG)
    draw.text((MARGIN_PX, HEADER_H_PX // 2), TITLE, font=_font(24), fill=(255, 255, 255), anchor="lm")
    font, lines, line_h = _message_layout(msg, pin_entered is not None)
    for i, line in enumerate(lines):
        draw.text((MARGIN_PX, MSG_TOP_PX + i * line_h), line, font=font, fill=TEXT)
    keypad = dict(KEYPAD)
    flow_ids = [b for b, _ in buttons if b not in keypad]
    rects = button_rects({"buttons": flow_ids, "screen": PIN_SCREEN if pin_entered is not None else ""})
    if pin_entered is not None:  # the PIN field: one dot per digit held, filled as they come
        y = BUTTON_TOP_PX - 70
        for i in range(PIN_DIGITS):
            x = MARGIN_PX + 40 + i * 80
            draw.ellipse((x, y, x + 40, y + 40), outline=TEXT, width=3, fill=TEXT if i < pin_entered else BG)
    for button, label in buttons:
        x, y, w, h = rects[button]
        fill = (BUTTON_END_BG if button in QUIET_BUTTONS or button == "clear"
                else (225, 230, 238) if button in keypad else BUTTON_BG)
        draw.rounded_rectangle((x, y, x + w - 1, y + h - 1), radius=14, fill=fill)
        if button in keypad and button != "clear":  # keypad digits: dark on light, as phone keypads
            draw.text((x + w / 2, y + h / 2), label, font=_font(KEY_FONT_PX), fill=TEXT, anchor="mm")
            continue
        draw.text((x + w / 2, y + h / 2), label, font=_fit_label(label, w), fill=BUTTON_FG, anchor="mm")
    out = np.asarray(img)[:, :, ::-1].copy()  # RGB -> BGR (OpenCV's order)
    out.setflags(write=False)
    return out


def text_boxes(screen_state: Mapping[str, Any]) -> Sequence[tuple[str, tuple[int, int, int, int]]]:
    """Where each message line was drawn ``(line, (x, y, w, h))``: for tests and benches that
    check what a host read against what the panel showed."""
    font, lines, line_h = _message_layout(str(screen_state.get("msg", "")), _is_pin(screen_state))
    out = []
    for i, line in enumerate(lines):
        x0, y0, x1, y1 = font.getbbox(line)
        out.append((line, (MARGIN_PX + x0, MSG_TOP_PX + i * line_h + y0, x1 - x0, y1 - y0)))
    return out


class PanelSource:
    """The lit panel of a running reader, for sim/mjpeg.py: the current screen drawn, or black
    while the reader is off or booting (no backlight). ``meta`` says which screen a frame shows
    and since when (``since_monotonic_s``: the first frame that showed it), and where a finger
    rests on the glass (``touch``: physical, not drawn; the screen camera draws the stylus)."""

    def __init__(self, screen_fields, touch_point=lambda: None, panel_fields=dict):
        self._screen_fields = screen_fields  # () -> the SCREEN query's fields ({} while off)
        self._touch_point = touch_point  # () -> (x, y) where a finger rests on the glass, or None
        self._panel_fields = panel_fields  # () -> the panel's own state (``pin_entered``)
        self._key: tuple | None = None
        self._since_s = 0.0
        self._black = np.zeros((PANEL_H_PX, PANEL_W_PX, 3), np.uint8)

    def __call__(self) -> tuple[np.ndarray, dict[str, Any]]:
        t_s = time.monotonic()
        state = self._screen_fields() or {}
        key = (state.get("screen"), state.get("msg"), state.get("buttons"), state.get("labels"),
               self._panel_fields().get("pin_entered"))
        if key != self._key:
            self._key, self._since_s = key, time.monotonic()
        frame = _render_state({**state, **self._panel_fields()}) if state.get("screen") else self._black
        touch = self._touch_point()
        return frame, {"screen": state.get("screen") or "off", "since_monotonic_s": self._since_s, "t_monotonic_s": t_s,
                       "touch": list(touch) if touch else None}
