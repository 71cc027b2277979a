"""The simulated rig controller's firmware: one request line in, one reply line out.

Transport-independent (sim/rig_transport.py feeds it bytes from a pty or a socket). The
protocol is specified in hardware.md, "Rig controller protocol"; keep the two in step.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from sim.rig_links import CardLink, LinkError, LinkRefused, PresenterLink, SupplyLink
from sim.rig_model import ABSENT, CardPose, Coupling, OperatingVolume, Waypoint, ascent, descent
from sim.rig_protocol import PROTOCOL_VERSION, FrameError, Request, ack, event, nak, parse_request

if TYPE_CHECKING:
    from sim.finger import Finger

log = logging.getLogger(__name__)

FIRMWARE = "facehil-sim-rig/0.1"
CONDITIONS = ("nominal", "low_light", "backlight", "motion_blur", "jpeg", "jpeg2000", "card_greyscale",
              "mask", "glasses")
DEFAULT_SPEED_MM_S = 200.0
_ID_RE = re.compile(r"^[A-Za-z0-9_.\-']{1,64}$")


class _Nak(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class RigState:
    power_on: bool = True  # the relay is wired normally-closed: a controller reset never cuts the reader
    lux: float = 500.0
    cct_k: float = 5000.0
    backlight_lux: float = 0.0
    card_slot: int | None = None
    pose: CardPose = field(default_factory=CardPose)
    coupling: Coupling = ABSENT
    display: str = "blank"  # subject, noface, attack, blank
    subject: str | None = None
    condition: str | None = None
    carer: str | None = None
    image: int | None = None
    cut_due_monotonic_s: float | None = None
    faults: set[str] = field(default_factory=set)


class RigFirmware:
    def __init__(self, *, volume: OperatingVolume | None = None, cards: dict[int, CardLink | None] | None = None,
                 supply: SupplyLink | None = None, presenter: PresenterLink | None = None,
                 send_event: Callable[[bytes], None] = lambda data: None, serial: str = "SIM-RIG-0001",
                 sleep: Callable[[float], None] = time.sleep, finger: "Finger | None" = None):
        self.volume = volume or OperatingVolume()
        self.cards = dict(cards or {})
        self.supply = supply or SupplyLink()
        self.presenter = presenter or PresenterLink(None)
        self.send_event = send_event
        self.serial = serial
        self.sleep = sleep  # motions take real time; in-process fuzzing passes a no-op to run them at once
        self.finger = finger  # the stylus over the reader's panel (sim/finger.py), if fitted
        self.state = RigState()
        self.booted_monotonic_s = time.monotonic()
        self._lock = threading.RLock()
        self._last: tuple[int, str, bytes] | None = None  # duplicate filter: (seq, body, reply)
        self._cut_timer: threading.Timer | None = None
        self._restore_timer: threading.Timer | None = None
        self._link_errors: list[str] = []

    # -- entry point -------------------------------------------------------------------------
    def handle(self, line: bytes) -> bytes | None:
        """One request line (without LF) -> one reply line (with LF); None for an empty line."""
        if not line.strip(b"\r"):
            return None  # an empty line is the host's resync
        try:
            req = parse_request(line)
        except FrameError as exc:
            return nak(exc.seq, exc.code, exc.detail)
        with self._lock:
            if self._last and self._last[0] == req.seq and self._last[1] == req.body and req.verb != "HELLO":
                return self._last[2]  # a retransmission: answer again, do not act twice
            self._link_errors = []
            try:
                reply = self._dispatch(req)
                if self._link_errors:
                    reply = nak(req.seq, "E_HW", self._link_errors[0])
            except _Nak as exc:
                reply = nak(req.seq, exc.code, exc.detail)
            except Exception as exc:  # noqa: BLE001 - firmware must answer, never die
                log.exception("internal error on %r", req.body)
                reply = nak(req.seq, "E_INTERNAL", type(exc).__name__)
            if req.verb != "HELLO":  # HELLO leaves the filter alone: a reconnecting host retransmits after it
                self._last = (req.seq, req.body, reply)
            return reply

    def _dispatch(self, req: Request) -> bytes:
        handler = getattr(self, f"_cmd_{req.verb.lower()}", None)
        if handler is None:
            raise _Nak("E_VERB", f"unknown verb {req.verb}")
        return handler(req)

    # -- commands ----------------------------------------------------------------------------
    def _cmd_hello(self, req: Request) -> bytes:
        _only(req, words=1, keys=())
        version = req.words[0]
        if not re.fullmatch(r"[0-9]+\.[0-9]+", version):
            raise _Nak("E_ARG", "expected HELLO <major>.<minor>")
        if version.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
            raise _Nak("E_VERSION", f"this rig speaks {PROTOCOL_VERSION}")
        slots = ",".join(str(s) for s in sorted(self.cards)) or "-"
        return ack(req.seq, proto=PROTOCOL_VERSION, fw=FIRMWARE, serial=self.serial, slots=slots,
                   caps="power,light,placer,display," + ("finger," if self.finger else "") + "sim")

    def _cmd_ping(self, req: Request) -> bytes:
        _only(req, words=0, keys=())
        return ack(req.seq)

    def _cmd_status(self, req: Request) -> bytes:
        _only(req, words=0, keys=())
        s = self.state
        cut_in = None
        if s.cut_due_monotonic_s is not None:
            cut_in = max(0, int((s.cut_due_monotonic_s - time.monotonic()) * 1000))
        return ack(req.seq, power="on" if s.power_on else "off", lux=float(s.lux), cct_k=float(s.cct_k),
                   backlight_lux=float(s.backlight_lux),
                   card=s.card_slot if s.card_slot is not None else "none",
                   x_mm=float(s.pose.x_mm), y_mm=float(s.pose.y_mm), z_mm=float(s.pose.z_mm),
                   tilt_deg=float(s.pose.tilt_deg), coupling=s.coupling.state,
                   error_rate=float(s.coupling.error_rate), display=s.display, subject=s.subject,
                   condition=s.condition, carer=s.carer, cut_in_ms=cut_in)

    def _cmd_health(self, req: Request) -> bytes:
        _only(req, words=0, keys=())
        faults = ",".join(sorted(self.state.faults)) or "none"
        return ack(req.seq, ok=not self.state.faults, uptime_s=round(time.monotonic() - self.booted_monotonic_s, 1),
                   faults=faults)

    def _cmd_reset(self, req: Request) -> bytes:
        """Back to the boot state except the relay: card in the deck, default light, blank display."""
        _only(req, words=0, keys=())
        self._cancel_cut()
        if self.state.card_slot is not None:
            self._lift(DEFAULT_SPEED_MM_S * 5)
        self.state.lux, self.state.cct_k, self.state.backlight_lux = 500.0, 5000.0, 0.0
        self._show({"mode": "blank"})
        self._push_lighting()
        self.state.faults.clear()
        return ack(req.seq)

    def _cmd_power(self, req: Request) -> bytes:
        if not req.words:
            raise _Nak("E_ARG", "expected POWER ON|OFF|CYCLE|CUT")
        action = req.words[0]
        if action in ("ON", "OFF"):
            _only(req, words=1, keys=())
            self._cancel_cut()
            supply = self._relay(action == "ON")
            return ack(req.seq, power=action.lower(), supply=supply)
        if action == "CYCLE":
            _only(req, words=1, keys=("off_ms",))
            off_ms = _int(req, "off_ms", 1000, 0, 60000)
            self._cancel_cut()
            self._relay(False)
            self.sleep(off_ms / 1000.0)
            supply = self._relay(True)
            return ack(req.seq, power="on", off_ms=off_ms, supply=supply)
        if action == "CUT":
            _only(req, words=1, keys=("at_ms", "restore_ms"))
            if "at_ms" not in req.kwargs:
                raise _Nak("E_ARG", "POWER CUT needs at_ms=")
            at_ms = _int(req, "at_ms", 0, 0, 600000)
            restore_ms = _int(req, "restore_ms", None, 0, 600000)
            self._schedule_cut(at_ms, restore_ms)
            return ack(req.seq, cut_at_ms=at_ms, restore_ms=restore_ms)
        raise _Nak("E_ARG", f"unknown POWER action {action}")

    def _cmd_light(self, req: Request) -> bytes:
        _only(req, words=0, keys=("lux", "cct_k", "backlight_lux"))
        s = self.state
        lux = _num(req, "lux", s.lux, 0, 100000)
        cct = _num(req, "cct_k", s.cct_k, 1500, 15000)
        back = _num(req, "backlight_lux", s.backlight_lux, 0, 100000)
        s.lux, s.cct_k, s.backlight_lux = lux, cct, back
        self._push_lighting()
        return ack(req.seq, lux=float(lux), cct_k=float(cct), backlight_lux=float(back))

    def _cmd_place(self, req: Request) -> bytes:
        _only(req, words=0, keys=("slot", "x_mm", "y_mm", "z_mm", "tilt_deg", "speed_mm_s"))
        if "slot" not in req.kwargs:
            raise _Nak("E_ARG", "PLACE needs slot=")
        slot = _int(req, "slot", None, 0, 99)
        if slot not in self.cards:
            raise _Nak("E_SLOT", f"no card in deck slot {slot}")
        pose = CardPose(x_mm=_num(req, "x_mm", 0.0, -60, 60), y_mm=_num(req, "y_mm", 0.0, -60, 60),
                        z_mm=_num(req, "z_mm", 0.0, 0, 40), tilt_deg=_num(req, "tilt_deg", 0.0, -45, 45))
        speed = _num(req, "speed_mm_s", DEFAULT_SPEED_MM_S, 1, 2000)
        moved_ms = 0.0
        if self.state.card_slot is not None:
            moved_ms += self._lift(speed)  # a different card (or the same one re-placed) goes back first
        points, ms = descent(self.volume, pose, speed)
        self.state.card_slot = slot
        self.state.pose = pose
        self._link(slot, "enter")
        self._follow(slot, points)
        moved_ms += ms
        s = self.state
        return ack(req.seq, card=slot, x_mm=float(pose.x_mm), y_mm=float(pose.y_mm), z_mm=float(pose.z_mm),
                   tilt_deg=float(pose.tilt_deg), coupling=s.coupling.state, error_rate=float(s.coupling.error_rate),
                   moved_ms=int(round(moved_ms)))

    def _cmd_remove(self, req: Request) -> bytes:
        _only(req, words=0, keys=("speed_mm_s",))
        speed = _num(req, "speed_mm_s", DEFAULT_SPEED_MM_S, 1, 2000)
        moved_ms = self._lift(speed) if self.state.card_slot is not None else 0.0
        return ack(req.seq, card="none", moved_ms=int(round(moved_ms)))

    def _cmd_show(self, req: Request) -> bytes:
        if len(req.words) != 1:
            raise _Nak("E_ARG", "expected SHOW SUBJECT|NOFACE|ATTACK|BLANK")
        what = req.words[0]
        if what == "SUBJECT":
            _only(req, words=1, keys=("id", "condition", "image", "carer"))
            subject = _ident(req, "id", required=True)
            condition = req.kwargs.get("condition", "nominal")
            if condition not in CONDITIONS:
                raise _Nak("E_ARG", f"condition must be one of {','.join(CONDITIONS)}")
            payload = {"mode": "subject", "id": subject, "condition": condition,
                       "image": _int(req, "image", None, 0, 9999), "carer": _ident(req, "carer")}
        elif what == "ATTACK":
            _only(req, words=1, keys=("id", "image", "species"))
            payload = {"mode": "attack", "id": _ident(req, "id", required=True),
                       "image": _int(req, "image", None, 0, 9999), "species": _ident(req, "species") or "print"}
        elif what in ("NOFACE", "BLANK"):
            _only(req, words=1, keys=())
            payload = {"mode": what.lower()}
        else:
            raise _Nak("E_ARG", f"unknown SHOW target {what}")
        self._show(payload)
        s = self.state
        return ack(req.seq, display=s.display, subject=s.subject, condition=s.condition, carer=s.carer)

    # -- actuators ---------------------------------------------------------------------------
    def _cmd_tap(self, req: Request) -> bytes:
        """``TAP <x_mm> <y_mm> <hold_ms>``: the finger taps the panel; the reply comes when it is up again."""
        _only(req, words=3, keys=())
        if self.finger is None:
            raise _Nak("E_HW", "no finger fitted on this rig")
        x, y = (_decimal(w, name) for w, name in zip(req.words[:2], ("x_mm", "y_mm")))
        if not re.fullmatch(r"[0-9]{1,5}", req.words[2]):
            raise _Nak("E_ARG", "hold_ms must be a whole number")
        hold = int(req.words[2])
        w, h = self.finger.limits_mm
        if not (0 <= x <= w and 0 <= y <= h):
            raise _Nak("E_RANGE", f"x_mm must be within 0..{w:.2f} and y_mm within 0..{h:.2f}")
        if hold > 10_000:
            raise _Nak("E_RANGE", "hold_ms must be within 0..10000")
        took_s = self.finger.tap(x, y, hold)
        return ack(req.seq, x_mm=x, y_mm=y, hold_ms=hold, moved_ms=int(round(took_s * 1000)))

    def _relay(self, on: bool) -> str:
        self.state.power_on = on
        try:
            result = self.supply.switch(on)
        except LinkError as exc:
            log.warning("%s", exc)
            self.state.faults.add("supply")
            return "error"
        self.state.faults.discard("supply")
        return result

    def _cancel_cut(self) -> None:
        for t in (self._cut_timer, self._restore_timer):
            if t is not None:
                t.cancel()
        self._cut_timer = self._restore_timer = None
        self.state.cut_due_monotonic_s = None

    def _schedule_cut(self, at_ms: int, restore_ms: int | None) -> None:
        self._cancel_cut()
        self.state.cut_due_monotonic_s = time.monotonic() + at_ms / 1000.0

        def cut() -> None:
            with self._lock:
                self.state.cut_due_monotonic_s = None
                supply = self._relay(False)
                self.send_event(event("POWER", power="off", cause="cut", supply=supply))
                if restore_ms is not None:
                    self._restore_timer = threading.Timer(restore_ms / 1000.0, restore)
                    self._restore_timer.daemon = True
                    self._restore_timer.start()

        def restore() -> None:
            with self._lock:
                supply = self._relay(True)
                self.send_event(event("POWER", power="on", cause="restore", supply=supply))

        self._cut_timer = threading.Timer(at_ms / 1000.0, cut)
        self._cut_timer.daemon = True
        self._cut_timer.start()

    def _lift(self, speed_mm_s: float) -> float:
        slot = self.state.card_slot
        points, ms = ascent(self.volume, self.state.pose, speed_mm_s)
        self._follow(slot, points)
        self._link(slot, "leave")
        self.state.card_slot = None
        self.state.pose = CardPose()
        self.state.coupling = ABSENT
        return ms

    def _link(self, slot: int, action: str) -> None:
        link = self.cards.get(slot)
        if link is None:
            return
        try:
            getattr(link, action)()
        except LinkError as exc:
            log.warning("%s", exc)
            self.state.faults.add(f"slot{slot}")
            self._link_errors.append(str(exc))

    def adopt(self) -> None:
        """At boot, take over what the card processes say: a card already inserted is on the
        reader at the nominal pose (the station starts its cards that way)."""
        for slot in sorted(self.cards):
            link = self.cards[slot]
            if link is None:
                continue
            try:
                on = link.on_reader()
            except LinkError as exc:
                log.warning("%s", exc)
                self.state.faults.add(f"slot{slot}")
                continue
            if on and self.state.card_slot is None:
                self.state.card_slot = slot
                self.state.pose = CardPose()
                self.state.coupling = self.volume.coupling(CardPose())
            elif on:
                log.warning("deck card %d is also inserted; a one-reader placer can hold only card %d",
                            slot, self.state.card_slot)

    def _follow(self, slot: int | None, points: list[Waypoint]) -> None:
        """Move along the path in real time, telling the card process each coupling change."""
        link = self.cards.get(slot) if slot is not None else None
        start = time.monotonic()
        failed = None
        for wp in points:
            delay = start + wp.at_ms / 1000.0 - time.monotonic()
            if delay > 0:
                self.sleep(delay)
            self.state.coupling = wp.coupling
            if link is not None and failed is None:
                try:
                    link.apply(wp.coupling)
                except LinkError as exc:
                    failed = exc
        key = f"slot{slot}"
        if failed is not None:
            # The mechanics moved anyway; the command reports the failure once the motion is over.
            log.warning("%s", failed)
            self.state.faults.add(key)
            self._link_errors.append(str(failed))
        else:
            self.state.faults.discard(key)

    def _show(self, payload: dict) -> None:
        try:
            self.presenter.post("/subject", payload)
        except LinkRefused as exc:
            raise _Nak("E_ARG", exc.detail) from exc
        except LinkError as exc:
            self.state.faults.add("presenter")
            raise _Nak("E_HW", str(exc)) from exc
        self.state.faults.discard("presenter")
        s = self.state
        s.display = payload["mode"]
        s.subject = payload.get("id")
        s.condition = payload.get("condition")
        s.carer = payload.get("carer")
        s.image = payload.get("image")

    def _push_lighting(self) -> None:
        s = self.state
        try:
            self.presenter.post("/lighting", {"lux": s.lux, "cct_k": s.cct_k, "backlight_lux": s.backlight_lux})
        except LinkError as exc:
            self.state.faults.add("presenter")
            raise _Nak("E_HW", str(exc)) from exc
        self.state.faults.discard("presenter")

    def shutdown(self) -> None:
        self._cancel_cut()
        if self._restore_timer is not None:
            self._restore_timer.cancel()


# -- argument helpers -------------------------------------------------------------------------
def _only(req: Request, *, words: int, keys: tuple[str, ...]) -> None:
    if len(req.words) != words:
        raise _Nak("E_ARG", f"{req.verb} takes {words} word(s), got {len(req.words)}")
    extra = sorted(set(req.kwargs) - set(keys))
    if extra:
        raise _Nak("E_ARG", f"unknown argument {extra[0]}")


def _num(req: Request, key: str, default, lo: float, hi: float) -> float:
    if key not in req.kwargs:
        return default
    text = req.kwargs[key]
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
        raise _Nak("E_ARG", f"{key} must be a decimal number")
    value = float(text)
    if not lo <= value <= hi:
        raise _Nak("E_RANGE", f"{key} must be within {lo:g}..{hi:g}")
    return value


def _decimal(text: str, name: str) -> float:
    if not re.fullmatch(r"-?[0-9]{1,4}(\.[0-9]{1,2})?", text):
        raise _Nak("E_ARG", f"{name} must be a decimal number (at most 2 places)")
    return float(text)


def _int(req: Request, key: str, default, lo: int, hi: int):
    if key not in req.kwargs:
        return default
    text = req.kwargs[key]
    if not re.fullmatch(r"[0-9]+", text):
        raise _Nak("E_ARG", f"{key} must be a whole number")
    value = int(text)
    if not lo <= value <= hi:
        raise _Nak("E_RANGE", f"{key} must be within {lo}..{hi}")
    return value


def _ident(req: Request, key: str, required: bool = False) -> str | None:
    value = req.kwargs.get(key)
    if value is None:
        if required:
            raise _Nak("E_ARG", f"needs {key}=")
        return None
    if not _ID_RE.match(value):
        raise _Nak("E_ARG", f"{key} has characters outside A-Z a-z 0-9 _ . - '")
    return value


