"""The reference reader's session flow: a pure, table-driven state machine.

``ReaderFlow.handle(input)`` looks up ``(screen, input key)`` in :data:`TRANSITIONS` and runs the
handler; anything not in the table is refused with a code and a clear message (and a ``refused``
event) and changes nothing. Every change of screen, and every outcome, is an event stamped with
the injected clock. All I/O goes through the injected ports (``sim.reader.ports``), so unit
tests drive the same code with recorded answers.

Inputs: ``CardInserted``, ``CardRemoved``, ``Press(button)``, ``EnterPin(digits)``,
``Staff(action)`` and ``Tick`` (the firmware's main loop sends Tick continuously: it runs one
face attempt on the face screen and checks the timeouts elsewhere).

Faults (:class:`Faults`) turn the reference reader into a deliberately faulty one, so a scenario
suite can prove that it catches each fault.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.reader.ports import (
    FACE_AUTH,
    CardData,
    CardError,
    CardRemovedError,
    CardUnreadable,
    EligibilityUnavailable,
    FaceError,
    Ports,
)
from sim.reader.screens import (
    BUTTONS,
    MESSAGES,
    NOT_RECOGNISED,
    ONLY_HOLDER,
    REGISTERED,
    TAKE_CARD,
    TAKE_CARD_SCREENS,
    USE_FACE_AUTH,
    Screen,
    Text,
    label,
)

log = logging.getLogger(__name__)

FEATURE_VISUAL_REGISTRATION = "visual_check_registration"
FEATURE_PAD = "presentation_attack_detection"
CHECKUP_MIN_AGE = 40
PIN_RE = re.compile(r"[0-9]{4}")


# Choices the notice leaves open (notice-clauses.md), each a documented variant of the reference
# reader; the first value is the default. A scenario must pass every one of them.
VARIANTS: dict[str, tuple[str, ...]] = {
    # N10: a face-auth card's method screen hides the PIN button, or shows it and refuses it
    # (telling the patient to use face authentication)
    "pin_button": ("hidden", "refuse"),
    # N15: an under-40 pressing 同意する on the checkup screen is refused, or passed on as pressed
    "checkup_consent": ("refuse_under40", "as_pressed"),
    # not in the notice: several faces in the frame -> ask the others to step out, or decide on
    # the holder's face when it is among them
    "several_faces": ("ask", "match_holder"),
}
AGE_RULE = "birthday"  # completed years, reached on the birthday (29 Feb: on 1 Mar in common years)


def parse_variant(text: str | None) -> dict[str, str]:
    """``"pin_button=refuse,several_faces=match_holder"`` -> the full variant (defaults filled in).
    Unknown keys or values raise ValueError naming them."""
    out = {k: v[0] for k, v in VARIANTS.items()}
    for item in (t.strip() for t in (text or "").replace(" ", ",").split(",")):
        if not item or item == "default":
            continue
        key, eq, value = item.partition("=")
        if not eq or key not in VARIANTS:
            raise ValueError(f"unknown reader variant option {item!r}; known: "
                             + "; ".join(f"{k}={'|'.join(v)}" for k, v in VARIANTS.items()))
        if value not in VARIANTS[key]:
            raise ValueError(f"reader variant {key}={value!r}: expected one of {', '.join(VARIANTS[key])}")
        out[key] = value
    return out


@dataclass(frozen=True)
class FlowConfig:
    face_retries: int = 3  # non-matching faces before the fallback
    face_timeout_ms: int = 15_000  # on the face screen without a decision -> fallback
    screen_timeout_ms: int = 60_000  # patient inactivity on a patient screen -> done
    card_reminder_ms: int = 15_000  # card left on a "take your card" screen -> alarm event
    return_to_face_mode: bool = True  # leave visual mode when the session ends
    pin_button: str = "hidden"  # VARIANTS
    checkup_consent: str = "refuse_under40"
    several_faces: str = "ask"

    def variant(self) -> dict[str, str]:
        """What the reader claims about the choices the notice leaves open (INFO reports it)."""
        return {"pin_button": self.pin_button, "checkup_consent": self.checkup_consent,
                "several_faces": self.several_faces, "age_rule": AGE_RULE}


@dataclass(frozen=True)
class Faults:
    """Deliberate faults of a "faulty reader" (all off in the reference)."""

    forget_face_mode: bool = False  # stays in visual mode after the session
    offer_pin_to_face_auth: bool = False  # offers and accepts PIN entry for a face-auth card
    match_carer: bool = False  # authenticates on a frame with several faces, matched or not
    skip_age_rule: bool = False  # accepts checkup consent from an under-40
    accept_downgrade: bool = False  # firmware: installs an older version without allow_downgrade
    accept_bad_signature: bool = False  # firmware: installs an image whose signature fails
    ignore_pin_lock: bool = False  # keeps asking for the PIN after the card locked it
    no_card_alarm: bool = False  # never raises the card-left alarm
    visual_registration_without_feature: bool = False  # registers after a visual check on 1.4.0
    skip_pad: bool = False  # claims presentation-attack detection but never runs it
    loose_threshold: bool = False  # face-match threshold 0.12 lower: accepts more impostors (sim/reader/hw.py)
    strict_threshold: bool = False  # face-match threshold 0.12 higher: rejects more holders (sim/reader/hw.py)
    pass_screen_replay: bool = False  # PAD lets a phone-screen replay through (sim/reader/pad.py)
    no_reminder_on_method_end: bool = False  # N16: 終了する on the method screen ends without the reminder
    vague_pin_refusal: bool = False  # N10: refuses a face-auth card's PIN without pointing to face auth
    pin_hint_to_face_auth: bool = False  # N7: tells a face-auth card holder to register "with the PIN"
    no_photo_to_staff: bool = False  # N12: the visual check does not present the card's photo to staff
    no_registration_wait: bool = False  # N17: no waiting screen while the registration completes
    carer_cannot_consent: bool = False  # N14: refuses consent presses while someone else is in the frame
    strand_several_faces: bool = False  # several faces: once a carer was seen, never decides again
    age_by_year: bool = False  # N15: age as the difference of years (40 from 1 January, not the birthday)
    pin_count_never_reset: bool = False  # N18: counts wrong PINs per card itself; a right PIN does not reset it

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls, text: str | None) -> "Faults":
        """``"a,b"`` -> Faults(a=True, b=True); empty or "none" -> no faults. Unknown names raise."""
        items = [t.strip() for t in (text or "").replace(" ", ",").split(",") if t.strip()]
        if items == ["none"]:
            items = []
        unknown = sorted(set(items) - set(cls.names()))
        if unknown:
            raise ValueError(f"unknown reader fault(s) {', '.join(unknown)}; known: {', '.join(cls.names())}")
        return cls(**{n: True for n in items})

    def active(self) -> tuple[str, ...]:
        return tuple(n for n in self.names() if getattr(self, n))


# -- inputs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CardInserted:
    key = "card_inserted"


@dataclass(frozen=True)
class CardRemoved:
    key = "card_removed"


@dataclass(frozen=True)
class Press:
    button: str

    @property
    def key(self) -> str:
        return f"press:{self.button}"


@dataclass(frozen=True)
class EnterPin:
    digits: str
    key = "pin"

    def __repr__(self) -> str:  # a PIN never goes into logs
        return "EnterPin(****)"


@dataclass(frozen=True)
class Staff:
    action: str  # visual | confirm | reject | face

    @property
    def key(self) -> str:
        return f"staff:{self.action}"


@dataclass(frozen=True)
class Tick:
    key = "tick"


Input = CardInserted | CardRemoved | Press | EnterPin | Staff | Tick


@dataclass(frozen=True)
class Outcome:
    ok: bool
    code: str = ""
    message: str = ""  # Japanese, for the patient
    message_en: str = ""


OK = Outcome(True)


@dataclass(frozen=True)
class FlowEvent:
    t_ms: int
    kind: str
    fields: dict[str, Any]


@dataclass
class Session:
    started_ms: int
    card: CardData | None = None
    enrollment: Any = None
    registered: bool = False
    method: str | None = None
    face_started_ms: int = 0
    face_failures: int = 0
    face_attempts: int = 0
    consents: dict[str, str] = field(default_factory=dict)
    alarm_raised: bool = False
    several_faces_seen: bool = False


S = Screen
# (screen, input key) -> handler. Anything else is refused.
TRANSITIONS: dict[tuple[Screen, str], str] = {
    (S.IDLE, "card_inserted"): "_on_card_inserted",
    (S.IDLE, "card_removed"): "_noop",
    (S.IDLE, "tick"): "_noop",
    (S.IDLE, "staff:visual"): "_staff_mode_visual",
    (S.IDLE, "staff:face"): "_staff_mode_face",

    (S.PLACE_AGAIN, "card_inserted"): "_on_card_inserted",
    (S.PLACE_AGAIN, "card_removed"): "_card_taken",
    (S.PLACE_AGAIN, "tick"): "_noop",
    (S.PLACE_AGAIN, "staff:visual"): "_staff_mode_visual",
    (S.PLACE_AGAIN, "staff:face"): "_staff_mode_face",

    (S.READING, "card_removed"): "_abort_removed",

    (S.METHOD_SELECT, "press:face"): "_choose_face",
    (S.METHOD_SELECT, "press:pin"): "_choose_pin",
    (S.METHOD_SELECT, "press:end"): "_end_by_patient",
    (S.METHOD_SELECT, "pin"): "_pin_not_here",
    (S.METHOD_SELECT, "staff:visual"): "_staff_mode_visual",
    (S.METHOD_SELECT, "staff:face"): "_staff_mode_face",
    (S.METHOD_SELECT, "tick"): "_patient_timeout",
    (S.METHOD_SELECT, "card_removed"): "_abort_removed",

    (S.FACE_AUTH, "tick"): "_face_tick",
    (S.FACE_AUTH, "press:end"): "_end_by_patient",
    (S.FACE_AUTH, "pin"): "_pin_not_here",
    (S.FACE_AUTH, "staff:visual"): "_staff_visual_check",
    (S.FACE_AUTH, "staff:face"): "_staff_mode_face",
    (S.FACE_AUTH, "card_removed"): "_abort_removed",

    (S.PIN_ENTRY, "pin"): "_verify_pin",
    (S.PIN_ENTRY, "press:end"): "_end_by_patient",
    (S.PIN_ENTRY, "staff:visual"): "_staff_visual_check",
    (S.PIN_ENTRY, "staff:face"): "_staff_mode_face",
    (S.PIN_ENTRY, "tick"): "_patient_timeout",
    (S.PIN_ENTRY, "card_removed"): "_abort_removed",

    (S.PIN_LOCKED, "card_removed"): "_card_taken",
    (S.PIN_LOCKED, "tick"): "_reminder_tick",
    (S.PIN_LOCKED, "staff:visual"): "_staff_mode_visual",
    (S.PIN_LOCKED, "staff:face"): "_staff_mode_face",

    (S.STAFF_CALL, "staff:visual"): "_staff_visual_check",
    (S.STAFF_CALL, "staff:face"): "_staff_face_retry",
    (S.STAFF_CALL, "press:end"): "_end_by_patient",
    (S.STAFF_CALL, "pin"): "_pin_not_here",
    (S.STAFF_CALL, "tick"): "_noop",
    (S.STAFF_CALL, "card_removed"): "_abort_removed",

    (S.VISUAL_CHECK, "staff:confirm"): "_visual_confirm",
    (S.VISUAL_CHECK, "staff:reject"): "_visual_reject",
    (S.VISUAL_CHECK, "staff:face"): "_staff_face_retry",
    (S.VISUAL_CHECK, "staff:visual"): "_noop",
    (S.VISUAL_CHECK, "tick"): "_noop",
    (S.VISUAL_CHECK, "card_removed"): "_abort_removed",

    (S.REGISTRATION, "press:register"): "_register",
    (S.REGISTRATION, "press:skip"): "_skip_registration",
    (S.REGISTRATION, "tick"): "_patient_timeout",
    (S.REGISTRATION, "card_removed"): "_abort_removed",

    (S.CONSENT_SURGERY, "press:consent"): "_consent",
    (S.CONSENT_SURGERY, "press:decline"): "_consent",
    (S.CONSENT_SURGERY, "tick"): "_patient_timeout",
    (S.CONSENT_SURGERY, "card_removed"): "_abort_removed",

    (S.CONSENT_CARE, "press:consent"): "_consent",
    (S.CONSENT_CARE, "press:decline"): "_consent",
    (S.CONSENT_CARE, "tick"): "_patient_timeout",
    (S.CONSENT_CARE, "card_removed"): "_abort_removed",

    (S.CONSENT_CHECKUP, "press:consent"): "_consent_checkup",
    (S.CONSENT_CHECKUP, "press:decline_or_under40"): "_consent_checkup",
    (S.CONSENT_CHECKUP, "tick"): "_patient_timeout",
    (S.CONSENT_CHECKUP, "card_removed"): "_abort_removed",

    (S.REGISTERING, "tick"): "_complete_registration",
    (S.REGISTERING, "card_removed"): "_abort_removed",

    (S.QUERYING, "card_removed"): "_abort_removed",

    (S.DONE, "card_removed"): "_card_taken",
    (S.DONE, "tick"): "_reminder_tick",
    (S.DONE, "staff:visual"): "_staff_mode_visual",
    (S.DONE, "staff:face"): "_staff_mode_face",

    (S.ERROR, "card_removed"): "_card_taken",
    (S.ERROR, "tick"): "_reminder_tick",
    (S.ERROR, "staff:visual"): "_staff_mode_visual",
    (S.ERROR, "staff:face"): "_staff_mode_face",
}

_CONSENT_ITEM = {S.CONSENT_SURGERY: "surgery", S.CONSENT_CARE: "care", S.CONSENT_CHECKUP: "checkup"}


def age_years(birth: dt.date, today: dt.date) -> int:
    """Completed years (a 29 Feb birthday is reached on 1 Mar in common years)."""
    years = today.year - birth.year
    if (today.month, today.day) < (birth.month, birth.day):
        years -= 1
    return years


def _photo_format(photo: bytes) -> str:
    """The card photo's format from its first bytes (never decoded here: biometric data)."""
    if photo.startswith(b"\x00\x00\x00\x0cjP  ") or photo.startswith(b"\xff\x4f\xff\x51"):
        return "jp2"
    if photo.startswith(b"\xff\xd8"):
        return "jpeg"
    return "unknown"


class ReaderFlow:
    """One reader's session flow. Not thread-safe: one loop feeds it inputs."""

    def __init__(self, ports: Ports, *, features: frozenset[str] | set[str] = frozenset(),
                 config: FlowConfig = FlowConfig(), faults: Faults = Faults(),
                 sink: Callable[[FlowEvent], None] | None = None):
        self.ports = ports
        self.features = frozenset(features)
        self.config = config
        self.faults = faults
        self._sink = sink or (lambda ev: None)
        self.screen = Screen.IDLE
        self.mode = "face"
        self.session: Session | None = None
        self.text: Text = MESSAGES[Screen.IDLE]
        self._screen_since_ms = ports.clock.monotonic_ms()
        self._wrong_pins: dict[bytes, int] = {}  # fault pin_count_never_reset only: the reader's own count

    @property
    def message(self) -> str:
        return self.text.ja

    # -- public -------------------------------------------------------------------------------
    def start(self) -> None:
        """Announce the first screen (after boot)."""
        self._emit("screen", id=self.screen.value, msg=self.text.ja, msg_en=self.text.en,
                   buttons=",".join(self.buttons()), labels=self._labels())

    def handle(self, inp: Input) -> Outcome:
        name = TRANSITIONS.get((self.screen, inp.key))
        if name is None:
            return self._refused_by_table(inp)
        try:
            return getattr(self, name)(inp) or OK
        except Exception as exc:  # a bug or a port failing oddly must not wedge the reader
            log.exception("reader flow: %s on %s failed", inp, self.screen.value)
            return self._fail("internal", Text("内部エラーが発生しました。", f"internal error: {type(exc).__name__}"),
                              to=Screen.ERROR)

    def buttons(self) -> tuple[str, ...]:
        buttons = BUTTONS.get(self.screen, ())
        if (self.screen is Screen.METHOD_SELECT and self._is_face_auth_card() and self.config.pin_button == "hidden"
                and not self.faults.offer_pin_to_face_auth):
            buttons = tuple(b for b in buttons if b != "pin")
        return buttons

    def _labels(self) -> str:
        return ",".join(label(self.screen, b) for b in self.buttons())

    def state(self) -> dict[str, Any]:
        """What the SCREEN query reports."""
        out: dict[str, Any] = {"screen": self.screen.value, "buttons": ",".join(self.buttons()),
                               "mode": self.mode, "msg": self.text.ja, "msg_en": self.text.en,
                               "labels": self._labels()}
        s = self.session
        out["card"] = s.card.profile if s and s.card else "none"
        if s and s.method:
            out["method"] = s.method
        if self.screen is Screen.CONSENT_CHECKUP:
            age40 = self._age40()
            out["age40"] = "unknown" if age40 is None else int(age40)
        if self.screen is Screen.VISUAL_CHECK:
            out["photo"] = int(self._photo_shown())
        return out

    # -- plumbing -----------------------------------------------------------------------------
    def _now(self) -> int:
        return self.ports.clock.monotonic_ms()

    def _emit(self, kind: str, /, **fields: Any) -> None:
        self._sink(FlowEvent(self._now(), kind, {k: v for k, v in fields.items() if v is not None}))

    def _say(self, text: Text) -> None:
        """Change what the current screen says (no new screen)."""
        self.text = text

    def _set_screen(self, screen: Screen, text: Text | None = None, *, remind: bool = True) -> None:
        previous = self.screen
        self.screen = screen
        self.text = text or MESSAGES[screen]
        reminding = screen in TAKE_CARD_SCREENS and remind and self.session is not None
        if reminding:
            self.text = self.text + TAKE_CARD  # N16: however the visit ends
        self._screen_since_ms = self._now()
        self._emit("screen", id=screen.value, **{"from": previous.value}, msg=self.text.ja, msg_en=self.text.en,
                   buttons=",".join(self.buttons()), labels=self._labels())
        if reminding:
            self._emit("remind", what="take_card", msg=TAKE_CARD.ja, msg_en=TAKE_CARD.en)

    def _refuse(self, action: str, code: str, text: Text) -> Outcome:
        self._emit("refused", action=action, code=code, msg=text.ja, msg_en=text.en)
        return Outcome(False, code, text.ja, text.en)

    def _refused_by_table(self, inp: Input) -> Outcome:
        action = inp.key
        if isinstance(inp, Press):
            if inp.button not in self.buttons():
                return self._refuse(action, "NOT_OFFERED",
                                    Text("そのボタンはこの画面にはありません。",
                                         f"button {inp.button!r} is not on screen {self.screen.value}"))
        if isinstance(inp, EnterPin) and self._is_face_auth_card():
            return self._pin_unavailable()
        return self._refuse(action, "STATE", Text("この画面ではその操作はできません。",
                                                  f"{action} is not possible on screen {self.screen.value}"))

    def _fail(self, code: str, text: Text, *, to: Screen = Screen.ERROR) -> Outcome:
        """An error event, then a clean screen (ERROR waits for the card; IDLE when it is gone)."""
        self._emit("error", code=code, msg=text.ja, msg_en=text.en)
        if to is Screen.IDLE:
            self._to_idle()
        else:
            self._set_screen(to, text)
        return OK

    def _is_face_auth_card(self) -> bool:
        s = self.session
        return bool(s and s.card and s.card.profile == FACE_AUTH)

    def _age40(self) -> bool | None:
        """40 or over today by the card's birth date; None when the birth date was not read."""
        s = self.session
        if not (s and s.card and s.card.birth_date):
            return None
        birth, today = s.card.birth_date, self.ports.clock.today()
        years = today.year - birth.year if self.faults.age_by_year else age_years(birth, today)
        return years >= CHECKUP_MIN_AGE

    def _pad_active(self) -> bool:
        return FEATURE_PAD in self.features and not self.faults.skip_pad

    def _set_mode(self, mode: str, reason: str) -> None:
        if self.mode != mode:
            self.mode = mode
            self._emit("mode", mode=mode, reason=reason)

    def _to_idle(self) -> None:
        self.session = None
        if self.mode == "visual" and self.config.return_to_face_mode and not self.faults.forget_face_mode:
            self._set_mode("face", "session_end")
        self._set_screen(Screen.IDLE)

    # -- handlers: card -----------------------------------------------------------------------
    def _noop(self, inp: Input) -> Outcome:
        return OK

    def _on_card_inserted(self, inp: Input) -> Outcome:
        self.session = s = Session(started_ms=self._now())
        self._emit("card", state="inserted")
        self._set_screen(Screen.READING)
        try:
            card = self.ports.card.read()
        except CardRemovedError:
            return self._abort_removed(inp)
        except CardUnreadable as exc:
            self._emit("error", code="card_unreadable", msg=MESSAGES[Screen.PLACE_AGAIN].ja,
                       msg_en=str(exc) or "card unreadable")
            self.session = None
            self._set_screen(Screen.PLACE_AGAIN)
            return OK
        except CardError as exc:
            return self._fail("card_error", Text("カードを読み取れませんでした。受付職員にお声がけください。",
                                                 f"card error: {exc}"))
        s.card = card
        try:
            status = self.ports.eligibility.status(card.certificate_der)
        except EligibilityUnavailable as exc:
            return self._fail("eligibility_unavailable", _service_down(exc))
        if status.cert_status != "valid":
            return self._fail(f"cert_{status.cert_status}",
                              Text("このカードの電子証明書は使用できません。受付職員にお声がけください。",
                                   f"The card's certificate is {status.cert_status.replace('_', ' ')}. "
                                   "Please ask the reception staff."))
        s.registered = status.registered
        if card.photo:
            try:
                s.enrollment = self.ports.face.enroll(card.photo)
            except FaceError as exc:
                self._emit("face", outcome="enroll_failed", reason=str(exc))
        self._emit("card", state="read", profile=card.profile, registered=int(s.registered),
                   photo=int(s.enrollment is not None))
        self._set_screen(Screen.METHOD_SELECT)
        return OK

    def _abort_removed(self, inp: Input) -> Outcome:
        self._emit("card", state="removed")
        self._emit("error", code="card_removed", msg="最後まで操作する前にカードが取り除かれました。",
                   msg_en="The card was removed before the end.")
        self._emit("session", result="aborted")
        self._to_idle()
        return OK

    def _card_taken(self, inp: Input) -> Outcome:
        self._emit("card", state="removed")
        self._to_idle()
        return OK

    def _end_by_patient(self, inp: Input) -> Outcome:
        self._emit("session", result="ended")
        silent = self.screen is Screen.METHOD_SELECT and self.faults.no_reminder_on_method_end
        self._set_screen(Screen.DONE, Text("終了しました。", "Ended."), remind=not silent)
        return OK

    def _patient_timeout(self, inp: Input) -> Outcome:
        if self._now() - self._screen_since_ms >= self.config.screen_timeout_ms:
            self._emit("session", result="timeout")
            seconds = self.config.screen_timeout_ms // 1000
            return self._fail("timeout", Text(f"{seconds}秒間操作がなかったため終了しました。",
                                              f"No input for {seconds} s."), to=Screen.DONE)
        return OK

    def _reminder_tick(self, inp: Input) -> Outcome:
        s = self.session
        if s is None or s.alarm_raised or self.faults.no_card_alarm:
            return OK
        if self._now() - self._screen_since_ms >= self.config.card_reminder_ms:
            s.alarm_raised = True
            self._emit("alarm", kind="card_left", msg=TAKE_CARD.ja, msg_en="The card is still on the reader.")
        return OK

    # -- handlers: face -----------------------------------------------------------------------
    def _choose_face(self, inp: Input) -> Outcome:
        if self.mode == "visual":
            return self._enter_visual_check()
        return self._start_face()

    def _start_face(self) -> Outcome:
        s = self.session
        assert s is not None
        s.face_started_ms = self._now()
        s.face_failures = 0
        s.face_attempts = 0
        if s.enrollment is None:
            return self._face_failed("no_card_photo")
        self._set_screen(Screen.FACE_AUTH)
        return OK

    def _face_tick(self, inp: Input) -> Outcome:
        s = self.session
        assert s is not None
        stranded = s.several_faces_seen and self.faults.strand_several_faces
        if stranded:
            return OK  # the faulty reader keeps asking the carer to step out, for ever
        if self._now() - s.face_started_ms >= self.config.face_timeout_ms:
            return self._face_failed("timeout")
        obs = self.ports.face.attempt(s.enrollment, detect_attack=self._pad_active())
        s.face_attempts += 1
        score = None if obs.score is None else f"{obs.score:.3f}"
        if not obs.camera_ok:
            self._emit("face", outcome="camera_error", attempt=s.face_attempts, reason=obs.reason)
            self._emit("error", code="camera_failure", msg="カメラが使用できません。", msg_en=f"camera failure: {obs.reason}")
            return self._face_failed("camera_failure")
        if obs.face_count == 0:
            self._emit("face", outcome="no_face", attempt=s.face_attempts, faces=0)
            self._say(MESSAGES[Screen.FACE_AUTH])
            return OK
        if obs.face_count > 1:
            s.several_faces_seen = True
            if self.faults.match_carer:  # decides on the frame, not on the holder's face
                self._emit("face", outcome="match", attempt=s.face_attempts, faces=obs.face_count, score=score)
                self._emit("auth", method="face", result="ok")
                return self._after_auth("face")
            holder_found = self.config.several_faces == "match_holder" and obs.accepted and not obs.attack
            if not holder_found:
                # the face seen may be the carer's: not a failure of the holder, ask the others to step out
                self._emit("face", outcome="multiple_faces", attempt=s.face_attempts, faces=obs.face_count)
                self._say(ONLY_HOLDER)
                return OK
        if obs.attack:
            self._emit("face", outcome="attack", attempt=s.face_attempts, faces=obs.face_count, score=score)
            return self._face_failed("presentation_attack")
        if obs.accepted:
            self._emit("face", outcome="match", attempt=s.face_attempts, faces=obs.face_count, score=score)
            self._emit("auth", method="face", result="ok")
            return self._after_auth("face")
        s.face_failures += 1
        self._emit("face", outcome="no_match", attempt=s.face_attempts, faces=obs.face_count, score=score,
                   retries_left=max(0, self.config.face_retries - s.face_failures))
        if s.face_failures >= self.config.face_retries:
            return self._face_failed("no_match")
        self._say(NOT_RECOGNISED)
        return OK

    def _face_failed(self, reason: str) -> Outcome:
        self._emit("auth", method="face", result="fail", reason=reason)
        if reason == "presentation_attack":
            self._set_screen(Screen.STAFF_CALL, Text("顔認証を行えませんでした。受付職員にお声がけください。",
                                                     "Face authentication was refused. Please call the reception "
                                                     "staff."))
        elif not self._is_face_auth_card() or self.faults.offer_pin_to_face_auth:
            self._enter_pin_entry(Text("顔認証を行えませんでした。暗証番号を入力してください。",
                                       "Face authentication failed. Enter your PIN."))
        else:
            self._set_screen(Screen.STAFF_CALL, Text("顔認証を行えませんでした。目視による確認のため、受付職員にお声がけください。",
                                                     "Face authentication failed. Please call the reception staff "
                                                     "for a visual check."))
        return OK

    # -- handlers: PIN ------------------------------------------------------------------------
    def _pin_unavailable(self) -> Outcome:
        if self.faults.vague_pin_refusal:
            return self._refuse("pin", "PIN_UNAVAILABLE", Text("この操作はできません。", "Not possible."))
        self._say(USE_FACE_AUTH)
        return self._refuse("pin", "PIN_UNAVAILABLE", USE_FACE_AUTH)

    def _choose_pin(self, inp: Input) -> Outcome:
        if self._is_face_auth_card() and not self.faults.offer_pin_to_face_auth:
            return self._pin_unavailable()
        self._enter_pin_entry()
        return OK

    def _enter_pin_entry(self, text: Text | None = None) -> None:
        s = self.session
        if s and s.card and s.card.pin_tries_left == 0 and not self.faults.ignore_pin_lock:
            self._emit("auth", method="pin", result="fail", reason="pin_locked")
            self._set_screen(Screen.PIN_LOCKED)
            return
        self._set_screen(Screen.PIN_ENTRY, text)

    def _pin_not_here(self, inp: Input) -> Outcome:
        if self._is_face_auth_card():
            return self._pin_unavailable()
        return self._refuse("pin", "STATE", Text("先に「暗証番号を入力」を選んでください。",
                                                 f"PIN entry is not possible on screen {self.screen.value}: "
                                                 "choose PIN first."))

    def _verify_pin(self, inp: Input) -> Outcome:
        assert isinstance(inp, EnterPin)
        if self._is_face_auth_card() and not self.faults.offer_pin_to_face_auth:
            return self._pin_unavailable()
        if not PIN_RE.fullmatch(inp.digits):
            return self._refuse("pin", "PIN_FORMAT", Text("暗証番号は4桁の数字です。", "The PIN has exactly 4 digits."))
        try:
            result = self.ports.card.verify_pin(inp.digits)
        except CardRemovedError:
            return self._abort_removed(inp)
        except CardError as exc:
            return self._fail("card_error", Text("暗証番号を確認できませんでした。受付職員にお声がけください。",
                                                 f"card error during PIN verification: {exc}"))
        if result.ok:
            self._emit("pin", result="ok")
            self._emit("auth", method="pin", result="ok")
            return self._after_auth("pin")
        self._emit("pin", result="wrong", tries_left=result.tries_left)
        locked = result.tries_left <= 0
        if self.faults.pin_count_never_reset and self.session and self.session.card:
            cert = self.session.card.certificate_der
            self._wrong_pins[cert] = self._wrong_pins.get(cert, 0) + 1
            locked = locked or self._wrong_pins[cert] >= 3
        if locked and not self.faults.ignore_pin_lock:
            self._emit("auth", method="pin", result="fail", reason="pin_locked")
            self._set_screen(Screen.PIN_LOCKED)
        else:
            self._say(Text(f"暗証番号が違います。あと{result.tries_left}回間違えるとロックされます。",
                           f"Wrong PIN. {result.tries_left} tries left."))
        return OK

    # -- handlers: staff / visual mode ----------------------------------------------------------
    def _staff_mode_visual(self, inp: Input) -> Outcome:
        self._set_mode("visual", "staff")
        return OK

    def _staff_mode_face(self, inp: Input) -> Outcome:
        self._set_mode("face", "staff")
        return OK

    def _staff_visual_check(self, inp: Input) -> Outcome:
        self._set_mode("visual", "staff")
        return self._enter_visual_check()

    def _photo_shown(self) -> bool:
        s = self.session
        return bool(s and s.card and s.card.photo) and not self.faults.no_photo_to_staff

    def _enter_visual_check(self) -> Outcome:
        """N12: staff compare the person with the face photo recorded on the card, so the staff view
        presents that photo. The event says so (format and size only: no image bytes leave the reader)."""
        self._set_screen(Screen.VISUAL_CHECK)
        s = self.session
        photo = s.card.photo if s and s.card else None
        if self.faults.no_photo_to_staff:
            return OK
        if photo:
            self._emit("staff_view", photo="shown", format=_photo_format(photo), bytes=len(photo))
        else:
            self._emit("staff_view", photo="none", reason="no readable photo on the card")
        return OK

    def _staff_face_retry(self, inp: Input) -> Outcome:
        self._set_mode("face", "staff")
        return self._start_face()

    def _visual_confirm(self, inp: Input) -> Outcome:
        s = self.session
        if not (s and s.card and s.card.photo):  # nothing to compare the person with
            return self._refuse("staff:confirm", "NO_PHOTO",
                                Text("カードの顔写真を読み取れないため、目視による確認はできません。",
                                     "The card's face photo could not be read: a visual check cannot be "
                                     "confirmed."))
        self._emit("auth", method="visual", result="ok")
        return self._after_auth("visual")

    def _visual_reject(self, inp: Input) -> Outcome:
        self._emit("auth", method="visual", result="fail", reason="staff_rejected")
        return self._fail("visual_rejected", Text("本人確認ができませんでした。", "The staff could not confirm the identity."))

    # -- after authentication -----------------------------------------------------------------
    def _after_auth(self, method: str) -> Outcome:
        s = self.session
        assert s is not None and s.card is not None
        s.method = method
        if method in ("face", "visual"):
            try:
                self.ports.card.authorize(method)
            except CardRemovedError:
                return self._abort_removed(Tick())
            except CardError as exc:
                return self._fail("terminal_auth_failed", Text("カードを利用できませんでした。受付職員にお声がけください。",
                                                               f"terminal authorization failed: {exc}"))
        if s.registered:
            self._set_screen(Screen.CONSENT_SURGERY)
            return OK
        if not self._registration_allowed(method):
            return self._fail("registration_unavailable", self._visual_registration_refusal())
        self._set_screen(Screen.REGISTRATION)
        return OK

    def _visual_registration_refusal(self) -> Text:
        """Before the update (N7). A face-auth card has no PIN, so its holder is not sent to one."""
        if self._is_face_auth_card() and not self.faults.pin_hint_to_face_auth:
            return Text("この読み取り機では、目視による確認の後に保険証の利用登録はできません。顔認証で登録してください。",
                        "Registration after a visual check is not available on this reader. "
                        "Register with face authentication.")
        return Text("この読み取り機では、目視による確認の後に保険証の利用登録はできません。顔認証または暗証番号で登録してください。",
                    "Registration after a visual check is not available on this reader. "
                    "Register with face authentication or the PIN.")

    def _registration_allowed(self, method: str) -> bool:
        if method != "visual":
            return True
        return FEATURE_VISUAL_REGISTRATION in self.features or self.faults.visual_registration_without_feature

    def _signed(self) -> tuple[str, bytes] | Outcome:
        """A fresh challenge signed by the card, or the Outcome of the failure (already handled)."""
        try:
            challenge = self.ports.eligibility.challenge()
        except EligibilityUnavailable as exc:
            return self._fail("eligibility_unavailable", _service_down(exc))
        try:
            signature = self.ports.card.sign(challenge.nonce)
        except CardRemovedError:
            return self._abort_removed(Tick())
        except CardError as exc:
            return self._fail("card_error", Text("カードで署名できませんでした。受付職員にお声がけください。",
                                                 f"the card could not sign: {exc}"))
        return challenge.id, signature

    def _register(self, inp: Input) -> Outcome:
        s = self.session
        assert s is not None and s.card is not None and s.method is not None
        if not self._registration_allowed(s.method):  # unreachable from the table; kept as a guard
            return self._refuse("press:register", "FEATURE",
                                Text("この読み取り機では登録できません。", "registration after a visual check needs "
                                     f"feature {FEATURE_VISUAL_REGISTRATION}"))
        if not self.faults.no_registration_wait:
            # N17: completing it may take a little time. The press is answered now and the
            # service is called on the next tick, so the patient sees the waiting screen at once.
            self._set_screen(Screen.REGISTERING)
            return OK
        return self._complete_registration(inp)

    def _complete_registration(self, inp: Input) -> Outcome:
        s = self.session
        assert s is not None and s.card is not None and s.method is not None
        signed = self._signed()
        if isinstance(signed, Outcome):
            return signed
        try:
            result = self.ports.eligibility.register(signed[0], signed[1], s.card.certificate_der, s.method)
        except EligibilityUnavailable as exc:
            return self._fail("eligibility_unavailable", _service_down(exc))
        if not result.ok:
            self._emit("registration", result="fail", method=s.method, code=result.code)
            return self._fail(result.code, Text("保険証の利用登録ができませんでした。受付職員にお声がけください。",
                                                result.message or f"registration refused: {result.code}"))
        s.registered = True
        self._emit("registration", result="ok", method=s.method, msg=REGISTERED.ja, msg_en=REGISTERED.en)
        self._set_screen(Screen.CONSENT_SURGERY)
        return OK

    def _skip_registration(self, inp: Input) -> Outcome:
        self._emit("session", result="not_registered")
        self._set_screen(Screen.DONE, Text("保険証として登録せずに終了しました。",
                                           "Not registered for health-insurance use."))
        return OK

    def _consent_blocked_by_carer(self, button: str) -> Outcome | None:
        """Fault carer_cannot_consent: looks at the camera and refuses a press while others are in the frame."""
        s = self.session
        if not self.faults.carer_cannot_consent or s is None:
            return None
        obs = self.ports.face.attempt(s.enrollment, detect_attack=False)
        if obs.face_count > 1:
            return self._refuse(f"press:{button}", "ONLY_HOLDER", ONLY_HOLDER)
        return None

    def _consent(self, inp: Input) -> Outcome:
        assert isinstance(inp, Press) and self.session is not None
        blocked = self._consent_blocked_by_carer(inp.button)
        if blocked is not None:
            return blocked
        item = _CONSENT_ITEM[self.screen]
        self.session.consents[item] = inp.button
        self._emit("consent", item=item, choice=inp.button)
        self._set_screen(Screen.CONSENT_CARE if self.screen is Screen.CONSENT_SURGERY else Screen.CONSENT_CHECKUP)
        return OK

    def _consent_checkup(self, inp: Input) -> Outcome:
        """N15: one screen for everyone. ``refuse_under40`` refuses 同意する from a card known to be under
        40; ``as_pressed`` passes it on. Unknown age: the patient's press is taken as it is."""
        assert isinstance(inp, Press) and self.session is not None
        blocked = self._consent_blocked_by_carer(inp.button)
        if blocked is not None:
            return blocked
        over40 = self._age40()
        if inp.button == "consent":
            refuse = over40 is False and self.config.checkup_consent == "refuse_under40"
            if refuse and not self.faults.skip_age_rule:
                return self._refuse("press:consent", "UNDER_40",
                                    Text("健診情報の提供は40歳以上の方が対象です。「同意しない・40歳未満の方」を選んでください。",
                                         "Health-checkup information is shared from age 40: choose "
                                         "\"don't consent / under 40\"."))
            choice = "consent"
        else:
            choice = "under40" if over40 is False else "decline"
        self.session.consents["checkup"] = choice
        self._emit("consent", item="checkup", choice=choice)
        return self._query()

    def _query(self) -> Outcome:
        s = self.session
        assert s is not None and s.card is not None and s.method is not None
        self._set_screen(Screen.QUERYING)
        signed = self._signed()
        if isinstance(signed, Outcome):
            return signed
        try:
            result = self.ports.eligibility.query(signed[0], signed[1], s.card.certificate_der, s.method,
                                                  dict(s.consents))
        except EligibilityUnavailable as exc:
            return self._fail("eligibility_unavailable", _service_down(exc))
        if not result.ok:
            self._emit("eligibility", result="fail", code=result.code)
            return self._fail(result.code, Text("資格を確認できませんでした。受付職員にお声がけください。",
                                                result.message or f"eligibility refused: {result.code}"))
        self._emit("eligibility", result="ok", transaction=result.transaction_id, method=s.method)
        self._emit("session", result="done", method=s.method)
        self._set_screen(Screen.DONE)
        return OK


def _service_down(exc: Exception) -> Text:
    return Text("資格確認サービスに接続できません。受付職員にお声がけください。", f"eligibility service unavailable: {exc}")
