"""``ScreenReader``: a reader under test driven only through its screen and touch panel (issue 13).

The ``screen`` adapter of the ``facehil.reader_adapters`` group. It watches the panel through a
camera (drivers/screen.py), presses buttons by tapping their labels, and derives events from
screen transitions, stamped with the capture time of the first frame that showed the new screen.
Staff actions go to the station file's separate ``[staff]`` interface (for the reference reader:
its control port's STAFF commands); nothing else uses a control port.

What a screen cannot tell (match scores, internal events, firmware state, a PIN keypad the panel
does not draw) raises :class:`NotVisible`; harness/plugin.py turns it into a skip naming it.

Station file (hardware.md 11):

    [dut]
    adapter = "screen"
    url = "http://127.0.0.1:PORT/stream.mjpg"   # what the camera sees (any OpenCV source)
    [screen]
    map = "reference"                 # harness/screens/<name>.toml, or a path
    finger = "touch:socket://HOST:PORT"   # or "rig" (the rig's finger, fitted from taps)
    marker_side_mm = ...              # the bezel (drivers.screen.Bezel); absent: the source
                                      # already shows panel pixels (the panel's own video out)
    [staff]
    adapter = "reference"
    url = "socket://HOST:PORT"
"""

from __future__ import annotations

import logging
import re
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from drivers.reader import (
    HISTORY_MAX_EVENTS,
    MAX_CHUNK_BYTES,
    EventLog,
    FirmwareInfo,
    ReaderError,
    ReaderNak,
    ReaderEvent,
    ReaderTimeout,
    ScreenState,
    UpdateStatus,
)
from drivers.screen import (
    Bezel,
    Calibration,
    FrameGrabber,
    ScreenError,
    ScreenMap,
    ScreenRecognizer,
    Shown,
    StableScreen,
    FingerMap,
    calibrate_bezel,
    fit_finger,
    locate_touch,
)

log = logging.getLogger(__name__)

MAPS_DIR = Path(__file__).resolve().parent.parent / "harness" / "screens"
TAP_HOLD_MS = 120
PRESS_SETTLE_S = 3.0  # a button must be read on a stable screen before it is tapped
UNANSWERED_TAP_S = 4.0  # a button tap after which nothing was shown this long is tapped once more
CALIBRATION_FRAMES = 5


class NotVisible(ReaderError):
    """The screen cannot tell this (it needs the reader's control port or internal data)."""


# event fields only the reader itself knows: asking a derived event for one raises NotVisible
INTERNAL_FIELDS = {"transaction": "the eligibility transaction id", "tries_left": "the PIN tries left",
                   "score": "the face-match score", "outcome": "the face matcher's outcome",
                   "profile": "the card profile read", "registered": "the registration result",
                   "photo": "the card photo's presentation to staff", "consents": "the consents sent",
                   "checkup": "the checkup answer sent", "code": "the error code"}


class ScreenFields(dict):
    """Fields of what the screen showed: asking one only the reader knows raises NotVisible."""

    def get(self, key, default=None):
        if key not in self and key in INTERNAL_FIELDS:
            raise NotVisible(f"{INTERNAL_FIELDS[key]} ({key}) is internal to the reader")
        return super().get(key, default)


class ScreenEvent(ReaderEvent):
    """An event derived from the screen: a field the screen cannot show is NotVisible, not None."""

    def get(self, key: str, default: str | None = None) -> str | None:
        if key not in self.fields and key in INTERNAL_FIELDS:
            raise NotVisible(f"{INTERNAL_FIELDS[key]} ({self.kind}.{key}) is internal to the reader")
        return self.fields.get(key, default)


def map_path(name: str) -> Path:
    p = Path(name)
    if p.suffix == ".toml" or p.exists():
        return p
    return MAPS_DIR / f"{name}.toml"


class EventRule:
    """One ``[[events]]`` entry of a screen map: a transition (and maybe a press) -> an event."""

    def __init__(self, table: dict[str, Any]):
        self.kind = str(table["kind"])
        self.src = list(table.get("from", []))
        self.dst = list(table.get("to", []))
        self.pressed = list(table.get("pressed", []))
        said = table.get("message_contains") or []
        self.message_contains = [said] if isinstance(said, str) else [str(x) for x in said]  # "!x": must not say x
        self.fields = {str(k): str(v) for k, v in table.get("fields", {}).items()}

    @staticmethod
    def _match(patterns: list[str], value: str | None) -> bool:
        pos = [p for p in patterns if not p.startswith("!")]
        neg = [p[1:] for p in patterns if p.startswith("!")]
        if value is None:
            return not pos and not patterns
        return (not pos or value in pos) and value not in neg

    def fire(self, prev: str | None, new: Shown, button: str | None, last: dict[str, ReaderEvent]) -> dict | None:
        if self.src and not self._match(self.src, prev):
            return None
        if not self._match(self.dst, new.screen):
            return None
        if self.pressed and button not in self.pressed:
            return None
        for phrase in self.message_contains:
            if (phrase[1:] in new.verdict.message) if phrase.startswith("!") else (phrase not in new.verdict.message):
                return None

        def sub(m: re.Match) -> str:
            key = m.group(1)
            if key == "button":
                return button or ""
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "last" and parts[1] in last:
                return last[parts[1]].get(parts[2]) or ""
            return ""

        return {k: re.sub(r"\{([^}]+)\}", sub, v) for k, v in self.fields.items()}


def load_rules(path: Path) -> list[EventRule]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    try:
        return [EventRule(t) for t in data.get("events", [])]
    except (KeyError, TypeError) as exc:
        raise ScreenError(f"screen map {path}: an [[events]] entry is malformed ({exc!r})") from None


class TouchGlass:
    """A finger at panel pixels: the reference reader's touch port (``TOUCH x y hold_ms``)."""

    def __init__(self, url: str):
        self.url = url
        self._port: Any = None
        self._seq = 0

    def open(self) -> None:
        import serial

        from drivers.station_auth import authenticate

        self._port = serial.serial_for_url(self.url, timeout=0.1)
        authenticate(self._port, self.url)

    def tap_px(self, x_px: float, y_px: float, hold_ms: int = TAP_HOLD_MS) -> None:
        self._seq = self._seq % 65535 + 1
        self._port.write(f"{self._seq} TOUCH {x_px:.1f} {y_px:.1f} {hold_ms}\n".encode())
        deadline = time.monotonic() + 5.0 + hold_ms / 1000
        buf = b""
        while time.monotonic() < deadline:
            buf += self._port.read(256)
            for line in buf.split(b"\n")[:-1]:
                tokens = line.decode("ascii", "replace").split()
                if len(tokens) >= 2 and tokens[1] == str(self._seq):
                    if tokens[0] == "ACK":
                        return
                    raise ReaderError(f"touch port {self.url} refused the tap: {line.decode(errors='replace')}")
        raise ReaderTimeout(f"touch port {self.url} did not answer a tap within 5 s")

    def close(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None


class FittedFinger:
    """A finger in fixture millimetres (the rig's Grbl finger) driven at panel pixels through a
    mapping fitted from taps seen through the camera: no help from the device."""

    # where to tap while fitting: the message area of a 7-inch fixture (mm from marker 0), away
    # from the bottom row where readers put their buttons (a tap there would press one)
    FIT_POINTS_MM = ((45.0, 35.0), (150.0, 35.0), (150.0, 70.0), (45.0, 70.0), (97.0, 52.0))
    FIT_HOLD_MS = 700

    def __init__(self, url: str):
        from drivers.finger_grbl import GrblFinger

        self.url = url
        self.finger = GrblFinger(url)
        self.map: FingerMap | None = None

    def open(self) -> None:
        self.finger.open()

    def fit(self, grabber: FrameGrabber, calibration: Calibration, points_mm=FIT_POINTS_MM) -> FingerMap:
        """Tap each point, find the stylus tip in the rectified view while it rests, fit mm -> px."""
        seen_mm, seen_px = [], []
        for x_mm, y_mm in points_mm:
            no, _, before = grabber.latest()
            before = calibration.rectify(before)
            worker = threading.Thread(target=self.finger.tap, args=(x_mm, y_mm, self.FIT_HOLD_MS), daemon=True)
            worker.start()
            best = None
            while worker.is_alive():
                no, _, frame = grabber.wait_frame(no, timeout_s=5.0)
                at = locate_touch(before, calibration.rectify(frame))
                if at is not None:
                    best = at
            worker.join()
            if best is not None:
                seen_mm.append((x_mm, y_mm))
                seen_px.append(best)
        self.map = fit_finger(seen_mm, seen_px)
        log.info("finger fitted from %d taps: residual %.2f px", self.map.taps, self.map.residual_px)
        return self.map

    def tap_px(self, x_px: float, y_px: float, hold_ms: int = TAP_HOLD_MS) -> None:
        if self.map is None:
            raise ScreenError("the finger is not fitted yet")
        self.finger.tap(*self.map.to_mm(x_px, y_px), hold_ms)

    def close(self) -> None:
        self.finger.close()


class ScreenReader:
    """:class:`drivers.reader.ReaderUnderTest` through a camera on the screen and a finger on the glass."""

    black_box = True
    capabilities = frozenset()  # none of drivers.reader.READER_CAPABILITIES: a panel shows only screens
    # what a screen cannot tell, and why: a wait for these event kinds raises NotVisible
    INVISIBLE_EVENTS = {
        "face": "face-match scores are internal to the reader",
        "boot": "boots are internal events",
        "error": "error codes are internal events (the screen shows only the message)",
        "staff_view": "what staff see is on the eligibility terminal, not the panel",
        "mode": "the face/visual mode is the staff terminal's",
        "alarm": "alarms are internal events",
    }

    # what the staff terminal shows: taken from the [staff] interface, which is the staff's own view
    STAFF_EVENTS = ("staff_view", "mode")

    def __init__(self, url: str, *, screen_map: str = "reference", finger: str | None = None,
                 bezel: dict[str, Any] | None = None, staff: dict[str, Any] | None = None,
                 features: tuple[str, ...] = (), stable_frames: int = 2, recognizer: ScreenRecognizer | None = None):
        self.url = url
        self.map_file = map_path(screen_map)
        self.map = ScreenMap.load(self.map_file)
        self.rules = load_rules(self.map_file)
        self.finger_spec = finger
        self.bezel = Bezel.from_table(bezel) if bezel else None
        self.staff_spec = staff or {}
        self.features = frozenset(features)
        self.stable_frames = stable_frames
        self._recognizer = recognizer
        self.grabber: FrameGrabber | None = None
        self.calibration: Calibration | None = None
        self.finger: TouchGlass | FittedFinger | None = None
        self.staff: Any = None
        self._stable: StableScreen | None = None
        self._cond = threading.Condition()
        self._log = EventLog(self._cond, HISTORY_MAX_EVENTS, f"the screen {url}")
        self._seq = 0
        self._shown: Shown | None = None
        self._last: dict[str, ReaderEvent] = {}
        self._pressed: tuple[str, str] | None = None  # (screen, button) of the last tap
        self._pressed_s = 0.0  # when that tap was done (the finger lifted)
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frame_errors = 0
        self.frames_dropped = 0
        self.finger_s = 0.0  # time spent moving the finger, all taps so far (the harness's, not the reader's)
        self.taps_repeated = 0

    @classmethod
    def from_station(cls, station) -> "ScreenReader":
        screen = dict(station.extra.get("screen") or {})
        staff = station.extra.get("staff")
        return cls(station.dut.url, screen_map=str(screen.pop("map", "reference")), finger=screen.pop("finger", None),
                   bezel=screen if "marker_side_mm" in screen else None, staff=staff,
                   features=station.dut.expect_features,
                   stable_frames=int(screen.get("stable_frames", 2)))

    # -- life cycle ---------------------------------------------------------------------------
    def open(self) -> None:
        if self._thread is not None:
            return
        if self._recognizer is None:
            self._recognizer = ScreenRecognizer(self.map)
        self._stable = StableScreen(self._recognizer, frames=self.stable_frames)
        self.grabber = FrameGrabber(self.url).open()
        self.calibrate()
        if self.finger_spec:
            kind, _, where = str(self.finger_spec).partition(":")
            if kind == "touch":
                self.finger = TouchGlass(where)
                self.finger.open()
            elif kind == "grbl":
                self.finger = FittedFinger(where)
                self.finger.open()
                self.finger.fit(self.grabber, self.calibration)
            else:
                raise ScreenError(f"[screen] finger {self.finger_spec!r}: use touch:<url> or grbl:<serial url>")
        if self.staff_spec.get("url"):
            from drivers.reader import open_reader

            self.staff = open_reader(self.staff_spec["url"], self.staff_spec.get("adapter", "reference"))
        self._t0 = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name=f"screen-watch {self.url}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15.0
        with self._cond:
            while self._shown is None:
                if time.monotonic() > deadline:
                    raise ScreenError(f"no screen recognised on {self.url} within 15 s")
                self._cond.wait(0.2)

    def calibrate(self) -> Calibration:
        """Every session: the bezel's markers give camera -> panel (or identity for panel video)."""
        assert self.grabber is not None
        if self.bezel is None:
            _, _, frame = self.grabber.latest()
            self.calibration = Calibration.identity((frame.shape[1], frame.shape[0]))
            return self.calibration
        last: Exception | None = None
        no = 0
        for _ in range(CALIBRATION_FRAMES):  # a glare may hide a marker on one frame
            no, _, frame = self.grabber.wait_frame(no)
            try:
                self.calibration = calibrate_bezel(frame, self.bezel)
                log.info("screen calibration: reprojection %.2f px", self.calibration.reprojection_px)
                return self.calibration
            except ScreenError as exc:
                last = exc
        raise last  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
            self._thread = None
        for part in (self.grabber, self.finger, self.staff):
            if part is not None:
                try:
                    part.close()
                except Exception as exc:  # closing must not mask the caller's own error
                    log.debug("closing %r: %s", part, exc)
        self.grabber = self.finger = self.staff = None

    def __enter__(self) -> "ScreenReader":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- watching -----------------------------------------------------------------------------
    def _watch(self) -> None:
        no = 0
        while not self._stop.is_set():
            try:
                batch = self.grabber.frames_after(no, timeout_s=1.0)
            except ScreenError:
                self.frame_errors += 1
                continue
            if batch and batch[0][0] > no + 1 and no:
                self.frames_dropped += batch[0][0] - no - 1  # the watcher fell behind the buffer
            self._pull_staff_events()
            for no, t_s, frame in batch:  # every frame in order: a change is timed by its first frame
                try:
                    shown = self._stable.feed(no, t_s, self.calibration.rectify(frame))
                except Exception as exc:  # one bad frame must not stop the watcher (and blind the run)
                    self.frame_errors += 1
                    log.warning("screen watcher: frame %d not understood: %s: %s", no, type(exc).__name__, exc)
                    continue
                if shown is not None:
                    self._on_shown(shown)

    def _pull_staff_events(self) -> None:
        """What the staff terminal showed ([staff]: mode switches, the card photo presented) joins
        the events; everything else that interface says is the reader's own, and stays unread."""
        if self.staff is None:
            return
        while True:
            try:
                ev = self.staff.next_event(0)
            except ReaderTimeout:
                return
            except ReaderError as exc:
                log.warning("staff interface: %s", exc)
                return
            if ev.kind in self.STAFF_EVENTS:
                with self._cond:
                    self._append(ev.kind, dict(ev.fields), ev.host_monotonic_s)
                    self._cond.notify_all()

    def _on_shown(self, shown: Shown) -> None:
        with self._cond:
            prev = self._shown.screen if self._shown is not None else None
            button = self._pressed[1] if self._pressed and self._pressed[0] == prev else None
            if prev != shown.screen:
                self._pressed = None
            derived = []
            for rule in self.rules:
                if prev == shown.screen and not rule.message_contains:
                    continue  # a message change on the same screen is no transition (only what it says)
                fields = rule.fire(prev, shown, button, self._last)
                if fields is not None:
                    derived.append((rule.kind, fields))
            # an implied screen first (shown too briefly to see, at the tap that led to it), then the
            # transition's events (e.g. card inserted), then the screen, then the reminder
            for kind, fields in derived:
                if kind == "screen":
                    at_s = self._pressed_s if button is not None and self._pressed_s else shown.since_s
                    self._append(kind, {**fields, "implied": "1"}, at_s)
            for kind, fields in derived:
                if kind not in ("remind", "screen"):
                    self._append(kind, fields, shown.since_s)
            self._append("screen", {"id": shown.screen, "msg": shown.verdict.message,
                                    "buttons": ",".join(self._buttons_shown(shown))}, shown.since_s)
            for kind, fields in derived:
                if kind == "remind":
                    self._append(kind, fields, shown.since_s)
            self._shown = shown
            self._cond.notify_all()

    def _append(self, kind: str, fields: dict[str, str], at_s: float) -> None:
        self._seq += 1
        ev = ScreenEvent(seq=self._seq, kind=kind, reader_ms=int((at_s - self._t0) * 1000),
                         host_monotonic_s=at_s, fields=ScreenFields(fields))
        self._log.append(ev)
        self._last[kind] = ev

    # -- queries ------------------------------------------------------------------------------
    def info(self) -> FirmwareInfo:
        """A screen shows no firmware version, features nor claims: those are the control port's."""
        raise NotVisible("the reader's firmware version, features and claims (INFO) are the control port's")

    def screen(self) -> ScreenState:
        with self._cond:
            shown = self._shown
        if shown is None:
            raise ReaderError(f"no screen recognised on {self.url}")
        mode = "face"
        if self.staff is not None:
            try:  # the face/visual mode is staff state: the staff terminal knows it
                mode = self.staff.screen().mode or "face"
            except ReaderError as exc:
                log.debug("staff mode query failed: %s", exc)
        return ScreenState(id=shown.screen, buttons=self._buttons_shown(shown),
                           message=shown.verdict.message, mode=mode,
                           fields=ScreenFields(screen=shown.screen, since_s=f"{shown.since_s:.3f}"))

    def _buttons_shown(self, shown: Shown) -> tuple[str, ...]:
        """The map's buttons whose labels were read on the screen, in the map's order (a reader
        that hides a button, e.g. PIN for a face-auth card, shows fewer). A button shape whose
        label was misread sends the reader to fresh frames first (a glare moves)."""
        spec = self.map.screens.get(shown.screen)
        read = dict(shown.verdict.buttons)
        unread = shown.verdict.unread_buttons
        for _ in range(3):
            if not unread or self.grabber is None or threading.current_thread() is self._thread:
                break
            _, _, frame = self.grabber.latest()
            v = self._recognizer.recognise(self.calibration.rectify(frame))
            if not v.found or v.screen != shown.screen:
                break
            read.update(v.buttons)
            unread = v.unread_buttons
        return tuple(b for b in (spec.buttons if spec else ()) if b in read)

    # -- events -------------------------------------------------------------------------------
    def next_event(self, timeout_s: float) -> ReaderEvent:
        return self._log.next(timeout_s)

    def events(self, timeout_s: float) -> Iterator[ReaderEvent]:
        return self._log.drain(timeout_s)

    def wait_for_event(self, kind: str, timeout_s: float, /, **fields: str) -> ReaderEvent:
        if kind in self.INVISIBLE_EVENTS and not (kind in self.STAFF_EVENTS and self.staff is not None):
            raise NotVisible(f"a {kind!r} event is invisible to a black-box reader: {self.INVISIBLE_EVENTS[kind]}")
        return self._log.wait_for(kind, timeout_s, fields, lambda: self._shown.screen if self._shown else "?")

    def wait_for_screen(self, screen_id: str, timeout_s: float) -> ScreenState:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._shown is None or self._shown.screen != screen_id:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReaderTimeout(f"the screen did not show {screen_id!r} within {timeout_s:.1f} s "
                                        f"(shows {self._shown.screen if self._shown else '?'})")
                self._cond.wait(left)
        return self.screen()

    def history(self) -> list[ReaderEvent]:
        return self._log.history()

    def clear_events(self) -> None:
        self._log.clear()

    # -- patient actions ----------------------------------------------------------------------
    def press(self, button_id: str) -> None:
        """Find the button by reading its label on the stable screen, and tap its centre."""
        if self.finger is None:
            raise NotVisible("no finger on this station ([screen] finger): the screen adapter cannot press")
        deadline = time.monotonic() + PRESS_SETTLE_S
        with self._cond:
            shown = self._shown
        box = shown.verdict.buttons.get(button_id) if shown else None
        offered = set(shown.verdict.buttons) if shown else set()
        while box is None:
            # not read on the frame that named the screen (a glare on its label): read fresh frames
            if time.monotonic() > deadline:
                # what a patient meets: nothing to press there; the screen's own words are the answer
                raise ReaderNak("PRESS", "NOT_ON_SCREEN", shown.verdict.message if shown else "",
                                {"screen": shown.screen if shown else "?",
                                 "offered": ",".join(sorted(offered)),
                                 "detail": f"button {button_id!r} is not on the screen"})
            _, _, frame = self.grabber.latest()
            v = self._recognizer.recognise(self.calibration.rectify(frame))
            with self._cond:
                shown = self._shown
            if v.found and shown is not None and v.screen == shown.screen:
                box = v.buttons.get(button_id)
                offered |= set(v.buttons)
        with self._cond:
            self._pressed = (shown.screen, button_id)
        self._tap(box)
        spec = self.map.screens.get(shown.screen)
        if spec is None or button_id not in spec.buttons:
            return  # a keypad key: the screen need not change, and a second tap would type twice
        # A tap the panel did not take (a stylus that slipped) is tapped once more, as a patient
        # would: only when nothing at all was shown since, and the same screen is still up.
        deadline = time.monotonic() + UNANSWERED_TAP_S
        with self._cond:
            while self._shown is shown and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            unanswered = self._shown is shown
        if unanswered:
            log.warning("the tap on %s of %s changed nothing in %.1f s: tapping it again", button_id, shown.screen,
                        UNANSWERED_TAP_S)
            self.taps_repeated += 1
            self._tap(box)

    def _tap(self, box: tuple[int, int, int, int]) -> None:
        x, y, w, h = box
        tap_s = time.monotonic()
        self.finger.tap_px(x + w / 2, y + h / 2)
        with self._cond:
            self._pressed_s = time.monotonic()
            self.finger_s += self._pressed_s - tap_s

    def enter_pin(self, digits: str) -> float:
        """Type the PIN on the panel's keypad, key by key (the digits are never logged). Returns when
        the last key was lifted: the reader has the PIN from then, not from the first key."""
        with self._cond:
            shown = self._shown
        spec = self.map.screens.get(shown.screen) if shown else None
        if spec is None or not spec.keypad:
            # what a patient meets: no keypad to type on; the screen's own words are the answer
            raise ReaderNak("PIN", "NOT_ON_SCREEN", shown.verdict.message if shown else "",
                            {"screen": shown.screen if shown else "?",
                             "detail": "no PIN keypad on this screen"})
        if not digits.isdigit() or (spec.pin_length and len(digits) != spec.pin_length):
            raise NotVisible(f"the keypad takes {spec.pin_length or 'only'} digits: a malformed PIN cannot be "
                             "typed on it, and its refusal is a control-port answer")
        for d in digits:
            self.press(f"digit_{d}")
        return self._pressed_s

    # -- staff actions: the separate [staff] interface ----------------------------------------
    def _staff(self):
        if self.staff is None:
            raise NotVisible("staff actions need the station's [staff] interface (none configured)")
        return self.staff

    def staff_visual_mode(self) -> None:
        self._staff().staff_visual_mode()

    def staff_confirm(self) -> None:
        self._staff().staff_confirm()

    def staff_reject(self) -> None:
        self._staff().staff_reject()

    def staff_face_mode(self) -> None:
        self._staff().staff_face_mode()

    # -- firmware: not through a screen -------------------------------------------------------
    def firmware_upload(self, image: bytes, signature: bytes, *, chunk_size: int = MAX_CHUNK_BYTES,
                        allow_downgrade: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> str:
        raise NotVisible("firmware updates need the reader's control port")

    def firmware_commit(self) -> None:
        raise NotVisible("firmware updates need the reader's control port")

    def reboot(self, wait: bool = True, timeout_s: float = 10.0) -> None:
        raise NotVisible("a reboot command needs the reader's control port")

    def firmware_status(self) -> UpdateStatus:
        raise NotVisible("firmware status needs the reader's control port")
