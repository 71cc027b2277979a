"""The simulated rig's finger: a stylus on an XY gantry with a Z axis, over the reader's panel.

A tap is a move at ``XY_SPEED_MM_S`` to (x, y) at travel height, a descent at ``Z_SPEED_MM_S``
to the glass, a hold, and the ascent: all in real time. Where the stylus meets the glass is
the commanded point through the gantry's *mounting error*, a small rotation and offset that
a host cannot know and must fit from taps it watches through the screen camera. Contact inside
the panel's active area goes to the reader's touch port (sim/reader/touch.py, DOWN/UP at panel
pixels); on the bezel it touches nothing.

Two ways to drive it (hardware.md 4.5 ``TAP``, 11.3 Grbl): the rig protocol (sim/rig_firmware.py)
and a Grbl 1.1 G-code line on its own serial port (``GrblLine``, Tapster style).
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sim.context import TOKEN_ENV
from sim.fixture import FIXTURE, Fixture
from sim.reader.display import PANEL_H_PX, PANEL_W_PX

log = logging.getLogger(__name__)

XY_SPEED_MM_S = 150.0
Z_SPEED_MM_S = 50.0
TRAVEL_Z_MM = 5.0  # stylus height between taps; 0 = on the glass
MAX_HOLD_MS = 10_000
LINK_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Mounting:
    """The gantry's mounting error: the stylus lands at R(rotation) (x, y) + (dx, dy) in fixture mm."""

    rotation_deg: float = 0.6
    dx_mm: float = 0.9
    dy_mm: float = -0.6

    @classmethod
    def parse(cls, text: str) -> "Mounting":
        """``ROT_DEG,DX_MM,DY_MM``."""
        try:
            rot, dx, dy = (float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"finger mounting must be ROT_DEG,DX_MM,DY_MM, got {text!r}") from None
        if abs(rot) > 5 or abs(dx) > 10 or abs(dy) > 10:
            raise ValueError("finger mounting error must be within 5 degrees and 10 mm")
        return cls(rot, dx, dy)

    def command_for(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        """The commanded point whose stylus lands at fixture (x, y): the inverse of ``contact_mm``
        (for tests and benches that know the hidden error; a host fits it instead)."""
        a = math.radians(self.rotation_deg)
        x, y = x_mm - self.dx_mm, y_mm - self.dy_mm
        return x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)

    def contact_mm(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        a = math.radians(self.rotation_deg)
        return (x_mm * math.cos(a) - y_mm * math.sin(a) + self.dx_mm,
                x_mm * math.sin(a) + y_mm * math.cos(a) + self.dy_mm)


class TouchLink:
    """The reader's touch port, found through the address file the reader writes (it starts
    after the rig). Connects per contact; sends the station token first when there is one."""

    def __init__(self, address_file: Path | None = None, address: str | None = None):
        self.address_file = address_file
        self.address = address

    def _target(self) -> tuple[str, int] | None:
        text = self.address
        if text is None and self.address_file is not None and self.address_file.exists():
            text = self.address_file.read_text().strip()
        if not text:
            return None
        host, _, port = text.split("://", 1)[-1].rpartition(":")
        return host or "127.0.0.1", int(port)

    def send(self, line: str) -> bool:
        """One command; True if the glass acknowledged it. A missing or dead reader is a dark
        panel: the stylus touches glass, nothing answers, and that is logged, not raised."""
        try:
            target = self._target()
        except (OSError, ValueError) as exc:
            log.warning("touch port address unreadable: %s", exc)
            return False
        if target is None:
            log.info("no reader touch port: %s touches nothing", line)
            return False
        try:
            with socket.create_connection(target, timeout=LINK_TIMEOUT_S) as s:
                f = s.makefile("rb")
                token = os.environ.get(TOKEN_ENV)
                if token:
                    s.sendall(f"AUTH {token}\n".encode())
                    if not f.readline().startswith(b"AUTH OK"):
                        log.warning("touch port refused the station token")
                        return False
                s.sendall(f"1 {line}\n".encode())
                reply = f.readline().decode("ascii", "replace").strip()
        except OSError as exc:
            log.warning("touch port %s:%d: %s", *target, exc)
            return False
        if not reply.startswith("ACK 1"):
            log.warning("touch port refused %r: %s", line, reply)
        return reply.startswith("ACK 1")


class Finger:
    """Position, motion and contact of the stylus. Thread-safe: one motion at a time."""

    def __init__(self, link: TouchLink | None = None, mounting: Mounting = Mounting(), fixture: Fixture = FIXTURE,
                 sleep: Callable[[float], None] = time.sleep, xy_speed_mm_s: float = XY_SPEED_MM_S):
        self.link = link or TouchLink()
        self.mounting = mounting
        self.fixture = fixture
        self.sleep = sleep
        self.xy_speed_mm_s = xy_speed_mm_s
        self.x_mm, self.y_mm, self.z_mm = 0.0, 0.0, TRAVEL_Z_MM
        self.touching = False
        self.taps = 0
        self._lock = threading.RLock()

    @property
    def limits_mm(self) -> tuple[float, float]:
        return self.fixture.width_mm, self.fixture.height_mm

    def check_xy(self, x_mm: float, y_mm: float) -> None:
        w, h = self.limits_mm
        if not (0 <= x_mm <= w and 0 <= y_mm <= h):
            raise ValueError(f"x_mm must be within 0..{w:.2f} and y_mm within 0..{h:.2f}")

    def contact_px(self, x_mm: float, y_mm: float) -> tuple[float, float] | None:
        """Panel pixel the stylus meets when commanded to (x, y); None on the bezel."""
        px, py = self.fixture.mm_to_panel_px(*self.mounting.contact_mm(x_mm, y_mm))
        return (px, py) if 0 <= px < PANEL_W_PX and 0 <= py < PANEL_H_PX else None

    def move_xy(self, x_mm: float, y_mm: float, speed_mm_s: float | None = None) -> float:
        """Straight move; lifts to travel height first if the stylus is down. Returns seconds taken."""
        self.check_xy(x_mm, y_mm)
        with self._lock:
            took = 0.0
            if self.z_mm <= 0:  # never drag the stylus across the glass
                took += self.move_z(TRAVEL_Z_MM)
            dt = math.hypot(x_mm - self.x_mm, y_mm - self.y_mm) / (speed_mm_s or self.xy_speed_mm_s)
            self.sleep(dt)
            self.x_mm, self.y_mm = x_mm, y_mm
            return took + dt

    def move_z(self, z_mm: float) -> float:
        if not 0 <= z_mm <= 2 * TRAVEL_Z_MM:
            raise ValueError(f"z_mm must be within 0..{2 * TRAVEL_Z_MM:g}")
        with self._lock:
            dt = abs(z_mm - self.z_mm) / Z_SPEED_MM_S
            if z_mm > 0 and self.touching:
                self.link.send("UP")
                self.touching = False
            self.sleep(dt)
            self.z_mm = z_mm
            if z_mm <= 0 and not self.touching:
                self.touching = True
                px = self.contact_px(self.x_mm, self.y_mm)
                if px is not None:
                    self.link.send(f"DOWN {px[0]:.1f} {px[1]:.1f}")
                    self.taps += 1
            return dt

    def tap(self, x_mm: float, y_mm: float, hold_ms: int) -> float:
        """Move, touch, hold, lift; returns the seconds the motion takes by the finger's speeds
        (what it spends, the link round trips aside; the reply comes after all of it)."""
        if not 0 <= hold_ms <= MAX_HOLD_MS:
            raise ValueError(f"hold_ms must be within 0..{MAX_HOLD_MS}")
        with self._lock:
            took = self.move_xy(x_mm, y_mm)
            took += self.move_z(0.0)
            self.sleep(hold_ms / 1000)
            return took + hold_ms / 1000 + self.move_z(TRAVEL_Z_MM)


# -- Grbl 1.1 G-code, the subset a Tapster-style finger driver uses -------------------------------
GRBL_BANNER = b"\r\nGrbl 1.1h ['$' for help]\r\n"
_WORD_RE = re.compile(r"([A-Z])(-?[0-9]*\.?[0-9]+)")


class GrblLine:
    """One G-code line in -> reply bytes. Replies ``ok`` when the block has been *executed*
    (a planner one block deep, so a host's ``ok`` means the stylus is there); ``error:N`` with
    Grbl's codes; ``?`` (a realtime byte) -> ``<Idle|MPos:x,y,z|FS:0,0>``."""

    def __init__(self, finger: Finger):
        self.finger = finger
        self.feed_mm_min = XY_SPEED_MM_S * 60

    def status(self) -> bytes:
        f = self.finger
        return f"<Idle|MPos:{f.x_mm:.3f},{f.y_mm:.3f},{f.z_mm:.3f}|FS:0,0>\r\n".encode()

    def handle(self, line: bytes | None) -> bytes | None:
        if line is None:
            return b"error:14\r\n"  # line overflow
        text = line.decode("ascii", "replace").strip().upper()
        if text.startswith("?"):
            return self.status()
        if not text:
            return None
        if text in ("$X", "$H", "$I"):
            return b"[VER:1.1h.facehil-sim:]\r\nok\r\n" if text == "$I" else b"ok\r\n"
        if text.startswith("$"):
            return b"error:3\r\n"  # unsupported $ statement
        words = _WORD_RE.findall(text.replace(" ", ""))
        if not words or "".join(a + b for a, b in words) != text.replace(" ", ""):
            return b"error:1\r\n"  # expected command letter / bad number
        values: dict[str, float] = {}
        for letter, num in words:
            if letter in values and letter != "G":
                return b"error:25\r\n"  # repeated word
            values[letter] = float(num)
        g = values.get("G")
        try:
            if "F" in values:
                self.feed_mm_min = max(1.0, values["F"])
            if g == 4:
                if not 0 <= values.get("P", 0) <= MAX_HOLD_MS / 1000:
                    return b"error:33\r\n"
                self.finger.sleep(values.get("P", 0.0))
            elif g in (0, 1) or (g is None and ({"X", "Y", "Z"} & values.keys())):
                speed = None if g == 0 else self.feed_mm_min / 60
                if "X" in values or "Y" in values:
                    self.finger.move_xy(values.get("X", self.finger.x_mm), values.get("Y", self.finger.y_mm), speed)
                if "Z" in values:
                    self.finger.move_z(values["Z"])
            elif g in (20, 21, 90, 94):
                pass  # inches refused below; mm, absolute, feed per minute are what we are
            else:
                return b"error:20\r\n"  # unsupported command
            if g == 20:
                return b"error:20\r\n"
        except ValueError as exc:
            log.info("grbl: %s: %s", text, exc)
            return b"error:15\r\n"  # travel exceeded (soft limit)
        return b"ok\r\n"
