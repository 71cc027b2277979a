"""A Grbl 1.1 robot finger (Tapster style) on its own serial line, through pyserial
(hardware.md 11.3).

The finger is an XY gantry with a Z stylus, in fixture millimetres (origin: bezel marker 0's
centre, x right, y down; Z up, 0 = on the glass). A tap is ``G0 X Y`` at travel height,
``G1 Z0``, ``G4 P<hold s>``, ``G1 Z<travel>``, then ``G4 P0`` so that its ``ok`` means the
stylus is up again. Every command waits for ``ok`` or ``error:N`` with a deadline.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import serial

log = logging.getLogger(__name__)

TRAVEL_Z_MM = 5.0
Z_FEED_MM_MIN = 3000.0
MIN_SPEED_MM_S = 20.0  # the slowest finger we wait for; a slower one needs a longer timeout_s


class FingerError(RuntimeError):
    """The finger did not do what was asked: no answer, ``error:N``, or a garbled status."""


@dataclass(frozen=True)
class FingerStatus:
    state: str  # Idle, Run, Hold, Alarm, ...
    x_mm: float
    y_mm: float
    z_mm: float


def port_url(url: str) -> str:
    return url[len("serial:"):] if url.startswith("serial:") else url


class GrblFinger:
    def __init__(self, url: str, *, baudrate: int = 115200, timeout_s: float = 2.0):
        self.url = port_url(url)
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self._port: serial.SerialBase | None = None
        self._x_mm = self._y_mm = 0.0

    def open(self) -> "GrblFinger":
        try:
            self._port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.05)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise FingerError(f"cannot open finger port {self.url}: {exc}") from exc
        self._port.reset_input_buffer()  # a banner from a reset, old replies
        self.command("$X")  # Grbl boots locked after a reset without homing
        self.command("G21")  # millimetres
        self.command("G90")  # absolute
        st = self.status()
        self._x_mm, self._y_mm = st.x_mm, st.y_mm
        return self

    def close(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None

    def __enter__(self) -> "GrblFinger":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _readline(self, deadline: float) -> str:
        assert self._port is not None
        buf = bytearray()
        while time.monotonic() < deadline:
            chunk = self._port.read_until(b"\n")
            buf += chunk
            if buf.endswith(b"\n"):
                return buf.decode("ascii", "replace").strip()
        raise FingerError(f"finger {self.url}: no reply in time" + (f" (partial {bytes(buf)!r})" if buf else ""))

    def command(self, line: str, timeout_s: float | None = None) -> list[str]:
        """Send one block; the lines before its ``ok``. Raises FingerError on ``error:N`` or silence."""
        if self._port is None:
            raise FingerError("finger port not open")
        self._port.write(line.encode("ascii") + b"\n")
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        out = []
        while True:
            reply = self._readline(deadline)
            if reply == "ok":
                return out
            if reply.startswith("error:"):
                raise FingerError(f"finger refused {line!r}: {reply}")
            if reply.startswith("ALARM:"):
                raise FingerError(f"finger alarm on {line!r}: {reply}")
            if reply:
                out.append(reply)

    def status(self) -> FingerStatus:
        assert self._port is not None
        self._port.write(b"?\n")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._readline(deadline)
            if reply.startswith("<") and reply.endswith(">"):
                break
        fields = reply[1:-1].split("|")
        try:
            pos = next(f for f in fields if f.startswith(("MPos:", "WPos:"))).split(":", 1)[1]
            x, y, z = (float(v) for v in pos.split(","))
        except (StopIteration, ValueError) as exc:
            raise FingerError(f"finger status unreadable: {reply!r}") from exc
        return FingerStatus(fields[0], x, y, z)

    def tap(self, x_mm: float, y_mm: float, hold_ms: int = 100) -> float:
        """Tap at (x, y) fixture mm, hold ``hold_ms``; returns the seconds the tap took."""
        for v, name in ((x_mm, "x_mm"), (y_mm, "y_mm")):
            if not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number")
        if not 0 <= hold_ms <= 10_000:
            raise ValueError("hold_ms must be within 0..10000")
        t0 = time.monotonic()
        travel_s = math.hypot(x_mm - self._x_mm, y_mm - self._y_mm) / MIN_SPEED_MM_S
        self.command(f"G0 Z{TRAVEL_Z_MM:.3f}", self.timeout_s + TRAVEL_Z_MM / MIN_SPEED_MM_S)
        self.command(f"G0 X{x_mm:.3f} Y{y_mm:.3f}", self.timeout_s + travel_s)
        self._x_mm, self._y_mm = x_mm, y_mm
        self.command(f"G1 Z0 F{Z_FEED_MM_MIN:g}", self.timeout_s + TRAVEL_Z_MM / MIN_SPEED_MM_S)
        self.command(f"G4 P{hold_ms / 1000:.3f}", self.timeout_s + hold_ms / 1000)
        self.command(f"G1 Z{TRAVEL_Z_MM:.3f} F{Z_FEED_MM_MIN:g}", self.timeout_s + TRAVEL_Z_MM / MIN_SPEED_MM_S)
        self.command("G4 P0")  # Grbl's sync: its ok comes once every motion before it is done
        return time.monotonic() - t0
