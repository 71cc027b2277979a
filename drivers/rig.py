"""Rig controller driver: power relay, lighting, card placer and subject display over one line.

The port is opened with ``serial.serial_for_url``, so ``/dev/ttyUSB0``, a pty path,
``serial:/dev/ttyACM0`` and ``socket://host:port`` all work. The wire protocol (hardware.md,
"Rig controller protocol") is ASCII lines: ``<seq> <VERB> [args]*<xor>`` out,
``<seq> ACK k=v...*<xor>`` / ``<seq> NAK <CODE> <detail>*<xor>`` back, and ``! <EVENT> ...``
lines at any time.

Every wait has a deadline. A reply that does not come is retransmitted with the same sequence
number (the controller answers a duplicate from its cache and does not act twice); garbage
and stale replies are skipped (resync); a port that disappears is reopened a bounded number
of times. Failures raise the named exceptions below, never hang.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import serial

from drivers.station_auth import authenticate

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "1.0"
MAX_LINE_BYTES = 512  # including the LF (hardware.md 4.2)
TRAVEL_HEIGHT_MM = 40.0  # hardware.md: the placer carries cards this high above the reader


# -- errors -------------------------------------------------------------------------------------
class RigError(Exception):
    """Base of every rig driver error."""


class RigUnavailable(RigError):
    """The port cannot be opened (no such device, refused connection)."""


class RigDisconnected(RigError):
    """The port disappeared while in use and could not be reopened."""


class RigTimeout(RigError):
    """The controller stayed silent past the deadline."""


class RigProtocolError(RigError):
    """The controller answered with something that is not the protocol."""


class RigGarbage(RigProtocolError):
    """Only unparseable lines (bad framing or checksum) arrived before the deadline."""


class RigPartialLine(RigProtocolError):
    """A line started but its LF never came before the deadline."""


class RigVersionMismatch(RigError):
    """The controller speaks another major version of the protocol."""


class RigNak(RigError):
    """The controller refused the command."""

    def __init__(self, code: str, detail: str, command: str):
        super().__init__(f"{command!r} refused: {code} {detail}")
        self.code = code
        self.detail = detail
        self.command = command


# -- wire format --------------------------------------------------------------------------------
def xor_checksum(body: bytes) -> str:
    x = 0
    for b in body:
        x ^= b
    return f"{x:02X}"


def encode_request(seq: int, command: str) -> bytes:
    body = f"{seq} {command}".encode("ascii")
    if len(body) + 4 > MAX_LINE_BYTES:
        raise ValueError(f"command too long for one line: {command!r}")
    return body + b"*" + xor_checksum(body).encode("ascii") + b"\n"


@dataclass(frozen=True)
class Reply:
    seq: int
    ok: bool
    fields: dict[str, str]
    code: str = ""
    detail: str = ""
    elapsed_ms: float = 0.0

    def get(self, key: str) -> str | None:
        v = self.fields.get(key)
        return None if v in (None, "-") else v


@dataclass(frozen=True)
class RigEvent:
    name: str
    fields: dict[str, str]
    monotonic_s: float


class _Unparseable(ValueError):
    pass


def parse_line(line: bytes, now_s: float = 0.0) -> Reply | RigEvent:
    """One line from the controller (without LF). Raises _Unparseable for anything else."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) < 4 or any(b < 0x20 or b > 0x7E for b in line) or line[-3:-2] != b"*":
        raise _Unparseable("not a framed line")
    body, cs = line[:-3], line[-2:].decode("ascii")
    if xor_checksum(body) != cs:
        raise _Unparseable("checksum mismatch")
    parts = body.decode("ascii").split(" ")
    if parts[0] == "!" and len(parts) >= 2:
        return RigEvent(parts[1], _kv(parts[2:]), now_s)
    if len(parts) < 2 or not parts[0].isdigit():
        raise _Unparseable("no sequence number")
    seq = int(parts[0])
    if parts[1] == "ACK":
        return Reply(seq, True, _kv(parts[2:]))
    if parts[1] == "NAK" and len(parts) >= 3:
        return Reply(seq, False, {}, code=parts[2], detail=" ".join(parts[3:]))
    raise _Unparseable("neither ACK nor NAK")


def _kv(parts: list[str]) -> dict[str, str]:
    out = {}
    for p in parts:
        k, sep, v = p.partition("=")
        if not sep:
            raise _Unparseable(f"field without '=': {p!r}")
        out[k] = v
    return out


_MAX_ABS_NUMBER = 1e9  # far beyond any rig argument's range; its decimal text still fits a line


def _num(value: float, name: str = "value") -> str:
    """Two-decimal text of ``value``; a value no rig could accept and no line could carry is refused here."""
    if not math.isfinite(value) or abs(value) >= _MAX_ABS_NUMBER:
        raise ValueError(f"{name} must be a finite number below {_MAX_ABS_NUMBER:g} in magnitude, got {value!r}")
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# -- typed values -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CardPose:
    """Where the placer puts the card, relative to the reader's card mark."""

    x_mm: float = 0.0
    y_mm: float = 0.0
    z_mm: float = 0.0  # height above the reader surface
    tilt_deg: float = 0.0

    @classmethod
    def nominal(cls) -> "CardPose":
        return cls()

    @classmethod
    def offset(cls, x_mm: float, y_mm: float) -> "CardPose":
        return cls(x_mm=x_mm, y_mm=y_mm)

    @classmethod
    def height(cls, z_mm: float) -> "CardPose":
        return cls(z_mm=z_mm)

    @classmethod
    def tilted(cls, tilt_deg: float) -> "CardPose":
        return cls(tilt_deg=tilt_deg)


@dataclass(frozen=True)
class RigInfo:
    proto: str
    firmware: str
    serial: str
    slots: tuple[int, ...]
    caps: tuple[str, ...]


@dataclass(frozen=True)
class Lighting:
    lux: float
    cct_k: float
    backlight_lux: float


@dataclass(frozen=True)
class Tap:
    x_mm: float
    y_mm: float
    hold_ms: int
    moved_ms: int  # the whole tap: travel, descent, hold, ascent


@dataclass(frozen=True)
class Placement:
    slot: int | None
    pose: CardPose | None
    moved_ms: int
    coupling: str | None = None  # reported by simulated rigs only
    error_rate: float | None = None


@dataclass(frozen=True)
class RigStatus:
    power_on: bool
    lighting: Lighting
    card_slot: int | None
    pose: CardPose | None
    display: str
    subject: str | None
    condition: str | None
    carer: str | None
    cut_in_ms: int | None
    coupling: str | None = None  # simulated rigs only
    error_rate: float | None = None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RigHealth:
    ok: bool
    uptime_s: float
    faults: tuple[str, ...]


class Rig(Protocol):
    """What a scenario may ask of a rig controller."""

    def power_on(self) -> None: ...
    def power_off(self) -> None: ...
    def power_cycle(self, off_ms: int = 1000) -> None: ...
    def power_cut(self, at_ms: int, restore_ms: int | None = None) -> None: ...
    def set_lighting(self, lux: float | None = None, cct_k: float | None = None,
                     backlight_lux: float | None = None) -> Lighting: ...
    def place_card(self, slot: int, pose: CardPose = CardPose(), speed_mm_s: float | None = None) -> Placement: ...
    def remove_card(self, speed_mm_s: float | None = None) -> Placement: ...
    def show_subject(self, subject_id: str, condition: str = "nominal", image: int | None = None,
                     carer: str | None = None) -> None: ...
    def show_no_face(self) -> None: ...
    def show_attack(self, subject_id: str, image: int | None = None, species: str | None = None) -> None: ...
    def blank_display(self) -> None: ...
    def tap(self, x_mm: float, y_mm: float, hold_ms: int = 100) -> Tap: ...  # rigs with a finger (caps: finger)
    def reset(self) -> None: ...
    def status(self) -> RigStatus: ...
    def health(self) -> RigHealth: ...
    def close(self) -> None: ...


def port_url(url: str) -> str:
    """Station-file device URL -> what serial_for_url takes (``serial:/dev/x`` -> ``/dev/x``)."""
    if url.startswith("serial:") and not url.startswith("serial://"):
        return url[len("serial:"):]
    return url


# -- the driver ---------------------------------------------------------------------------------
class RigController:
    """The rig protocol over pyserial. Open with ``open()`` or use as a context manager."""

    def __init__(self, url: str, *, baudrate: int = 115200, timeout_s: float = 2.0, retries: int = 1,
                 reconnect_attempts: int = 3, backoff_s: float = 0.2, token: str | None = None):
        self.url = port_url(url)
        self._token = token  # a simulated station's token for a socket:// port (drivers/station_auth.py)
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.retries = retries
        self.reconnect_attempts = reconnect_attempts
        self.backoff_s = backoff_s
        self.info: RigInfo | None = None
        self._port: serial.SerialBase | None = None
        self._rx = bytearray()
        self._seq = random.randint(1, 65535)  # a fresh session never collides with the rig's duplicate filter
        self._events: collections.deque[RigEvent] = collections.deque(maxlen=256)
        self._lock = threading.RLock()
        self.stats = collections.Counter()

    # -- connection -----------------------------------------------------------------------
    def open(self) -> RigInfo:
        with self._lock:
            self._open_port()
            return self._hello()

    def __enter__(self) -> "RigController":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._port is not None:
                try:
                    self._port.close()
                except (OSError, serial.SerialException):
                    pass
                self._port = None

    def _open_port(self) -> None:
        self.close()
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.05,
                                         write_timeout=self.timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise RigUnavailable(f"cannot open rig port {self.url}: {exc}") from exc
        self._port = port
        self._rx.clear()
        try:
            port.reset_input_buffer()
            authenticate(port, self.url, token=self._token)  # a simulated station's TCP port wants its token first
            port.write(b"\n")  # end whatever partial line the controller holds (resync)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise RigUnavailable(f"rig port {self.url} not usable: {exc}") from exc

    def _hello(self) -> RigInfo:
        try:
            r = self._exchange(f"HELLO {PROTOCOL_VERSION}", self.timeout_s, reconnect=False)
        except RigNak as exc:
            if exc.code == "E_VERSION":
                raise RigVersionMismatch(f"rig at {self.url}: {exc.detail}") from exc
            raise
        proto = r.get("proto") or ""
        if proto.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
            raise RigVersionMismatch(f"rig at {self.url} speaks {proto or '?'}, this driver {PROTOCOL_VERSION}")
        slots = tuple(int(s) for s in (r.get("slots") or "").split(",") if s.isdigit())
        self.info = RigInfo(proto=proto, firmware=r.get("fw") or "", serial=r.get("serial") or "", slots=slots,
                            caps=tuple((r.get("caps") or "").split(",")))
        return self.info

    def _reconnect(self) -> None:
        last: Exception | None = None
        for attempt in range(self.reconnect_attempts):
            time.sleep(self.backoff_s * (2 ** attempt))
            try:
                self._open_port()
                self._hello()
                self.stats["reconnects"] += 1
                log.info("rig %s reconnected (attempt %d)", self.url, attempt + 1)
                return
            except (RigUnavailable, RigDisconnected, RigTimeout, RigProtocolError) as exc:
                last = exc
        self.close()
        raise RigDisconnected(f"rig port {self.url} is gone; {self.reconnect_attempts} reconnect attempt(s) "
                              f"failed: {last}")

    # -- one command ----------------------------------------------------------------------
    def command(self, command: str, timeout_s: float | None = None) -> Reply:
        """Send one command (``"POWER ON"``), return its ACK. Raises RigNak on a NAK."""
        with self._lock:
            if self._port is None:
                raise RigDisconnected(f"rig port {self.url} is not open")
            return self._exchange(command, timeout_s or self.timeout_s, reconnect=self.reconnect_attempts > 0)

    def _next_seq(self) -> int:
        self._seq = self._seq % 65535 + 1
        return self._seq

    def _exchange(self, command: str, timeout_s: float, reconnect: bool) -> Reply:
        seq = self._next_seq()
        frame = encode_request(seq, command)
        started = time.monotonic()
        attempt = 0
        reconnects_left = 1 if reconnect else 0
        while True:
            try:
                self._write(frame)
                reply = self._await(seq, timeout_s)
                break
            except RigDisconnected:
                if reconnects_left <= 0:
                    raise
                reconnects_left -= 1
                self._reconnect()  # raises RigDisconnected when the port stays gone
                self.stats["retransmits"] += 1
            except (RigTimeout, RigProtocolError) as exc:
                if attempt >= self.retries:
                    raise
                attempt += 1
                self.stats["retransmits"] += 1
                log.debug("rig %s: %s; retransmitting seq %d", self.url, exc, seq)
                self._resync()
        reply = Reply(reply.seq, reply.ok, reply.fields, reply.code, reply.detail,
                      elapsed_ms=(time.monotonic() - started) * 1000.0)
        if not reply.ok:
            raise RigNak(reply.code, reply.detail, command)
        return reply

    def _resync(self) -> None:
        self._rx.clear()
        try:
            self._port.reset_input_buffer()
            self._write(b"\n")
        except RigDisconnected:
            pass

    def _write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except serial.SerialTimeoutException as exc:
            raise RigTimeout(f"rig port {self.url}: write blocked for {self.timeout_s:.1f}s") from exc
        except (serial.SerialException, OSError) as exc:
            raise RigDisconnected(f"rig port {self.url}: {exc}") from exc

    def _await(self, seq: int, timeout_s: float) -> Reply:
        deadline = time.monotonic() + timeout_s
        garbage: list[bytes] = []
        while True:
            line = self._read_line(deadline)
            if line is None:
                break
            try:
                item = parse_line(line, time.monotonic())
            except _Unparseable:
                garbage.append(line)
                self.stats["garbage_lines"] += 1
                continue
            if isinstance(item, RigEvent):
                self._events.append(item)
                continue
            if item.seq == seq:
                return item
            self.stats["stale_replies"] += 1  # an old reply, or a NAK for line noise: skip it
        if self._rx:
            partial = bytes(self._rx[:40])
            self._rx.clear()
            raise RigPartialLine(f"rig {self.url}: line without LF after {timeout_s:.1f}s: {partial!r}")
        if garbage:
            raise RigGarbage(f"rig {self.url}: {len(garbage)} unparseable line(s), no reply to seq {seq} "
                             f"in {timeout_s:.1f}s; first: {garbage[0][:40]!r}")
        raise RigTimeout(f"rig {self.url}: no reply to seq {seq} within {timeout_s:.1f}s")

    def _read_line(self, deadline: float) -> bytes | None:
        """The next LF-terminated line, or None at the deadline. Over-long lines count as garbage."""
        while True:
            nl = self._rx.find(b"\n")
            if nl >= 0:
                line = bytes(self._rx[:nl])
                del self._rx[:nl + 1]
                return line
            if len(self._rx) >= MAX_LINE_BYTES:
                line = bytes(self._rx)
                self._rx.clear()
                return line  # unparseable by construction (no checksum at the end)
            if time.monotonic() >= deadline:
                return None
            try:
                waiting = self._port.in_waiting
                data = self._port.read(max(1, min(waiting, 4096)))
            except (serial.SerialException, OSError) as exc:
                raise RigDisconnected(f"rig port {self.url}: {exc}") from exc
            if data:
                self._rx += data

    # -- events ---------------------------------------------------------------------------
    def events(self) -> list[RigEvent]:
        """Events received so far (e.g. a scheduled power cut happening), oldest first; drains."""
        with self._lock:
            out = list(self._events)
            self._events.clear()
            return out

    def wait_event(self, name: str, timeout_s: float) -> RigEvent:
        """Read until an event called ``name`` arrives. Raises RigTimeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                for i, ev in enumerate(self._events):
                    if ev.name == name:
                        del self._events[i]
                        return ev
                if self._port is None:
                    raise RigDisconnected(f"rig port {self.url} is not open")
                line = self._read_line(deadline)
                if line is None:
                    raise RigTimeout(f"rig {self.url}: no {name} event within {timeout_s:.1f}s")
                try:
                    item = parse_line(line, time.monotonic())
                except _Unparseable:
                    self.stats["garbage_lines"] += 1
                    continue
                if isinstance(item, RigEvent):
                    self._events.append(item)

    # -- the commands ---------------------------------------------------------------------
    def ping(self) -> float:
        """One round trip; returns its time in ms."""
        return self.command("PING").elapsed_ms

    def power_on(self) -> None:
        self.command("POWER ON")

    def power_off(self) -> None:
        self.command("POWER OFF")

    def power_cycle(self, off_ms: int = 1000) -> None:
        self.command(f"POWER CYCLE off_ms={int(off_ms)}", self.timeout_s + off_ms / 1000.0)

    def power_cut(self, at_ms: int, restore_ms: int | None = None) -> None:
        """Schedule the relay to open ``at_ms`` from now (and close ``restore_ms`` after that)."""
        cmd = f"POWER CUT at_ms={int(at_ms)}"
        if restore_ms is not None:
            cmd += f" restore_ms={int(restore_ms)}"
        self.command(cmd)

    def set_lighting(self, lux: float | None = None, cct_k: float | None = None,
                     backlight_lux: float | None = None) -> Lighting:
        args = [f"{k}={_num(v, k)}" for k, v in (("lux", lux), ("cct_k", cct_k), ("backlight_lux", backlight_lux))
                if v is not None]
        r = self.command(" ".join(["LIGHT", *args]))
        return Lighting(float(r.fields["lux"]), float(r.fields["cct_k"]), float(r.fields["backlight_lux"]))

    def _motion_timeout_s(self, speed_mm_s: float | None) -> float:
        # the slowest default a real placer might use; below 1 mm/s (the protocol's minimum) the rig
        # refuses at once, and a zero or negative speed must not make the wait negative
        speed = max(speed_mm_s or 50.0, 1.0)
        return self.timeout_s + 2 * TRAVEL_HEIGHT_MM / speed

    def place_card(self, slot: int, pose: CardPose = CardPose(), speed_mm_s: float | None = None) -> Placement:
        """Put deck card ``slot`` on the reader at ``pose`` (a card already there goes back first)."""
        args = [f"slot={int(slot)}"]
        for key in ("x_mm", "y_mm", "z_mm", "tilt_deg"):
            value = getattr(pose, key)
            if value:
                args.append(f"{key}={_num(value, key)}")
        if speed_mm_s is not None:
            args.append(f"speed_mm_s={_num(speed_mm_s, 'speed_mm_s')}")
        r = self.command("PLACE " + " ".join(args), self._motion_timeout_s(speed_mm_s))
        return Placement(slot=int(r.fields["card"]), pose=_pose(r), moved_ms=int(r.fields.get("moved_ms", 0)),
                         coupling=r.get("coupling"), error_rate=_opt_float(r.get("error_rate")))

    def remove_card(self, speed_mm_s: float | None = None) -> Placement:
        cmd = "REMOVE" if speed_mm_s is None else f"REMOVE speed_mm_s={_num(speed_mm_s, 'speed_mm_s')}"
        r = self.command(cmd, self._motion_timeout_s(speed_mm_s))
        return Placement(slot=None, pose=None, moved_ms=int(r.fields.get("moved_ms", 0)))

    def tap(self, x_mm: float, y_mm: float, hold_ms: int = 100) -> Tap:
        """The finger taps the panel at (x, y) fixture mm (origin: bezel marker 0's centre; hardware.md
        4.5 ``TAP``) and holds ``hold_ms``; returns once it is lifted again."""
        if not 0 <= int(hold_ms) <= 10_000:
            raise ValueError("hold_ms must be within 0..10000")
        # the longest move across a 300 mm fixture at the slowest finger (50 mm/s), the hold, the Z strokes
        timeout_s = self.timeout_s + 300 / 50.0 + hold_ms / 1000 + 1.0
        r = self.command(f"TAP {_num(x_mm, 'x_mm')} {_num(y_mm, 'y_mm')} {int(hold_ms)}", timeout_s)
        return Tap(float(r.fields["x_mm"]), float(r.fields["y_mm"]), int(r.fields["hold_ms"]),
                   int(r.fields.get("moved_ms", 0)))

    def show_subject(self, subject_id: str, condition: str = "nominal", image: int | None = None,
                     carer: str | None = None) -> None:
        cmd = f"SHOW SUBJECT id={_ident(subject_id)} condition={_ident(condition)}"
        if image is not None:
            cmd += f" image={int(image)}"
        if carer is not None:
            cmd += f" carer={_ident(carer)}"
        self.command(cmd)

    def show_no_face(self) -> None:
        self.command("SHOW NOFACE")

    def show_attack(self, subject_id: str, image: int | None = None, species: str | None = None) -> None:
        """Present the subject's card photo as an attack: a printed photo (default ``species``), or
        another attack species the display can render (``screen``, ``cutout``)."""
        cmd = f"SHOW ATTACK id={_ident(subject_id)}"
        if image is not None:
            cmd += f" image={int(image)}"
        if species is not None:
            cmd += f" species={_ident(species)}"
        self.command(cmd)

    def blank_display(self) -> None:
        self.command("SHOW BLANK")

    def reset(self) -> None:
        """Card back to the deck, default lighting, blank display (the relay is left alone)."""
        self.command("RESET", self._motion_timeout_s(None))

    def status(self) -> RigStatus:
        r = self.command("STATUS")
        f = r.fields
        card = r.get("card")
        slot = int(card) if card and card.isdigit() else None
        return RigStatus(power_on=f.get("power") == "on",
                         lighting=Lighting(float(f["lux"]), float(f["cct_k"]), float(f["backlight_lux"])),
                         card_slot=slot, pose=_pose(r) if slot is not None else None,
                         display=f.get("display", "blank"), subject=r.get("subject"), condition=r.get("condition"),
                         carer=r.get("carer"), cut_in_ms=_opt_int(r.get("cut_in_ms")), coupling=r.get("coupling"),
                         error_rate=_opt_float(r.get("error_rate")), fields=dict(f))

    def health(self) -> RigHealth:
        r = self.command("HEALTH")
        faults = r.fields.get("faults", "none")
        return RigHealth(ok=r.fields.get("ok") == "1", uptime_s=float(r.fields.get("uptime_s", 0)),
                         faults=() if faults == "none" else tuple(faults.split(",")))


def _ident(text: str) -> str:
    if not text or any(c in text for c in " =*\n\r") or not text.isascii():
        raise ValueError(f"not usable on the rig line (ASCII, no spaces, '=' or '*'): {text!r}")
    return text


def _pose(r: Reply) -> CardPose:
    return CardPose(float(r.fields.get("x_mm", 0)), float(r.fields.get("y_mm", 0)),
                    float(r.fields.get("z_mm", 0)), float(r.fields.get("tilt_deg", 0)))


def _opt_float(v: str | None) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: str | None) -> int | None:
    return None if v is None else int(v)
