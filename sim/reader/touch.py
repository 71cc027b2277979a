"""The reference reader's touch panel as a port of the reader process (hardware.md 11.2).

The touch port is the glass, not a host interface: whatever touches it at panel pixel (x, y)
for ``hold_ms`` presses the button drawn there (sim/reader/display.py's table), exactly as the
control port's PRESS does; a touch outside every button, on a screen without buttons, or while
the reader is off does nothing. The line answers ``ACK <seq>`` once the finger is lifted and
never says what was hit: a host learns that from the screen, as on a real panel.

On the PIN screen the panel shows a keypad (display.py ``KEYPAD``): the panel itself collects
the digits (訂正 clears them; they are never logged) and hands the flow the whole PIN at the
fourth, as the control port's ``PIN`` does; it forgets them when the screen changes.

    <seq> TOUCH <x_px> <y_px> <hold_ms>   -> ACK <seq> t_ms=<ms since the port started>
    <seq> DOWN <x_px> <y_px>              -> ACK at once: the finger rests on the glass
    <seq> UP                              -> ACK once lifted (a DOWN then UP is a TOUCH)
    <seq> PING                            -> ACK <seq> t_ms=...

Same framing, token and NAK format as the control port (hardware.md 6).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from drivers.reader import format_ack, format_nak
from sim.mjpeg import MjpegServer
from sim.reader.display import KEYPAD, PANEL_H_PX, PANEL_W_PX, PIN_DIGITS, PanelSource, button_at
from sim.reader.flow import EnterPin, Press
from sim.reader.transport import SocketTransport

log = logging.getLogger(__name__)

MAX_HOLD_MS = 10_000
KEYPAD_KEYS = frozenset(k for k, _ in KEYPAD)


class TouchPort:
    """Line handler of the touch port. ``device`` is a ReaderDevice (screen_fields, submit)."""

    def __init__(self, device: Any, sleep: Callable[[float], None] = time.sleep):
        self.device = device
        self._sleep = sleep
        self._t0 = time.monotonic()
        self.touches = 0
        self.presses = 0
        self.contact: tuple[float, float, str | None, dict] | None = None  # (x, y, button, screen at down)
        self.last_down: tuple[float, float] | None = None
        self._pin = ""  # digits typed on the keypad (never logged)
        self._pin_for: tuple = ()  # the PIN screen (id, message) they were typed on

    def _t_ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    def handle(self, raw: bytes) -> list[str]:
        try:
            tokens = raw.decode("ascii").split()
        except UnicodeDecodeError:
            return [format_nak(None, "SYNTAX", "non-ASCII bytes in the line")]
        if not tokens:
            return []
        try:
            seq = int(tokens[0])
            if not 1 <= seq <= 65535:
                raise ValueError
        except ValueError:
            return [format_nak(None, "SYNTAX", "a command starts with a sequence number 1..65535")]
        verb = tokens[1].upper() if len(tokens) > 1 else ""
        if verb == "PING" and len(tokens) == 2:
            return [format_ack(seq, {"t_ms": self._t_ms()})]
        if verb == "UP" and len(tokens) == 2:
            self.up()
            return [format_ack(seq, {"t_ms": self._t_ms()})]
        if verb not in ("TOUCH", "DOWN"):
            return [format_nak(seq, "UNKNOWN", f"the touch port takes TOUCH, DOWN, UP or PING, not {verb or '-'}")]
        want = 5 if verb == "TOUCH" else 4
        try:
            if len(tokens) != want:
                raise ValueError
            x, y = float(tokens[2]), float(tokens[3])
            hold = int(tokens[4]) if verb == "TOUCH" else 0
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError
        except ValueError:
            usage = "TOUCH <x_px> <y_px> <hold_ms>" if verb == "TOUCH" else "DOWN <x_px> <y_px>"
            return [format_nak(seq, "ARGS", f"{usage} (numbers)")]
        if not (0 <= x < PANEL_W_PX and 0 <= y < PANEL_H_PX):
            return [format_nak(seq, "RANGE", f"({x:g}, {y:g}) is outside the {PANEL_W_PX}x{PANEL_H_PX} panel")]
        if not 0 <= hold <= MAX_HOLD_MS:
            return [format_nak(seq, "RANGE", f"hold_ms must be within 0..{MAX_HOLD_MS}")]
        if verb == "DOWN":
            self.down(x, y)
        else:
            self.touch(x, y, hold)
        return [format_ack(seq, {"t_ms": self._t_ms()})]

    def touch(self, x_px: float, y_px: float, hold_ms: int) -> str | None:
        """Touch down at (x, y), hold, lift; the button pressed, or None."""
        self.down(x_px, y_px)
        self._sleep(hold_ms / 1000)
        return self.up()

    def down(self, x_px: float, y_px: float) -> None:
        """The finger meets the glass. The button is the one under it now; it fires at lift-off
        if the screen still shows it (as touch UIs do)."""
        self.touches += 1
        state = self.device.screen_fields() if self.device.booted else {}
        button = button_at(state, x_px, y_px) if state.get("screen") else None
        self.contact = (x_px, y_px, button, state)
        self.last_down = (x_px, y_px)

    def up(self) -> str | None:
        contact, self.contact = self.contact, None
        if contact is None or contact[2] is None:
            return None
        _, _, button, down = contact
        up = self.device.screen_fields() if self.device.booted else {}
        if (up.get("screen"), up.get("buttons")) != (down.get("screen"), down.get("buttons")):
            log.info("touch on %s: the screen changed under the finger; nothing pressed", button)
            return None
        if button in KEYPAD_KEYS:
            self._key(button, up)
            return button
        if self.device.post(Press(button)):  # the glass reports the touch; the flow acts in its own time
            self.presses += 1
        return button

    # -- the PIN keypad: panel-local, the flow gets the whole PIN ----------------------------------
    def _pin_screen(self, state: dict) -> tuple:
        return (state.get("screen"), state.get("msg"))

    def _key(self, key: str, state: dict) -> None:
        if self._pin_for != self._pin_screen(state):
            self._pin, self._pin_for = "", self._pin_screen(state)
        if key == "clear":
            self._pin = ""
            return
        self._pin += key.removeprefix("digit_")
        if len(self._pin) < PIN_DIGITS:
            return
        digits, self._pin = self._pin, ""
        if self.device.post(EnterPin(digits)):
            self.presses += 1

    def panel_fields(self) -> dict:
        """The panel's own state for drawing: how many PIN digits it holds on this PIN screen."""
        state = self.device.screen_fields() if self.device.booted else {}
        if not self._pin or self._pin_for != self._pin_screen(state):
            return {"pin_entered": 0}
        return {"pin_entered": len(self._pin)}

    def touch_point(self) -> tuple[float, float] | None:
        """Where the glass is touched now (the physical contact: a camera sees the stylus there)."""
        contact = self.contact
        return None if contact is None else (contact[0], contact[1])


class PanelPorts:
    """What the reader process serves for its face: the panel's MJPEG stream and the touch port."""

    def __init__(self, device: Any, host: str = "127.0.0.1", touch_port: int = 0, video_port: int = 0,
                 fps: float = 15.0):
        self.touch = TouchPort(device)
        self.transport = SocketTransport(host, touch_port)
        self.video = MjpegServer(PanelSource(device.screen_fields, self.touch.touch_point, self.touch.panel_fields),
                                 fps, host, video_port, jpeg_quality=90)
        self._thread: threading.Thread | None = None

    @property
    def touch_url(self) -> str:
        return self.transport.url()

    @property
    def panel_url(self) -> str:
        return self.video.url

    def start(self) -> "PanelPorts":
        self._thread = threading.Thread(target=self.transport.serve, args=(self.touch.handle,),
                                        name="reader-touch", daemon=True)
        self._thread.start()
        self.video.start()
        return self

    def stop(self) -> None:
        self.transport.stop()
        self.video.stop()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.transport.close()
