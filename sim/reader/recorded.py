"""Recorded-answer ports for the reader flow: deterministic stand-ins for unit tests and benches.

Each port replays scripted answers (or raises scripted errors) and records what it was asked,
so a table-driven test can check both the flow's screens and its use of the hardware.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sim.reader.ports import (
    STANDARD,
    CardData,
    CardError,
    CertStatus,
    Challenge,
    FaceObservation,
    PinResult,
    Ports,
    ServiceResult,
)


class ManualClock:
    """A clock the test advances by hand."""

    def __init__(self, start_ms: int = 1_000, today: dt.date = dt.date(2025, 6, 1)):
        self.now_ms = start_ms
        self.date = today

    def monotonic_ms(self) -> int:
        return self.now_ms

    def today(self) -> dt.date:
        return self.date

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def _raise_or_return(value: Any) -> Any:
    if isinstance(value, BaseException):
        raise value
    return value


@dataclass
class RecordedCard:
    data: CardData | BaseException = field(default_factory=lambda: CardData(
        profile=STANDARD, certificate_der=b"cert", birth_date=dt.date(1970, 1, 1), photo=b"jp2",
        pin_tries_left=3))
    pin: str = "1234"
    tries_left: int = 3
    authorize_error: BaseException | None = None
    sign_error: BaseException | None = None
    verify_error: BaseException | None = None
    calls: list[str] = field(default_factory=list)

    def read(self) -> CardData:
        self.calls.append("read")
        return _raise_or_return(self.data)

    def verify_pin(self, pin: str) -> PinResult:
        self.calls.append("verify_pin")
        if self.verify_error is not None:
            raise self.verify_error
        if self.tries_left <= 0:
            return PinResult(False, 0)
        if pin == self.pin:
            self.tries_left = 3
            return PinResult(True, self.tries_left)
        self.tries_left -= 1
        return PinResult(False, self.tries_left)

    def authorize(self, method: str) -> None:
        self.calls.append(f"authorize:{method}")
        if self.authorize_error is not None:
            raise self.authorize_error

    def sign(self, challenge: bytes) -> bytes:
        self.calls.append("sign")
        if self.sign_error is not None:
            raise self.sign_error
        return hashlib.sha256(b"sig" + challenge).digest()


@dataclass
class RecordedFace:
    """Replays observations; when the script runs out it repeats the last one."""

    script: list[FaceObservation | BaseException] = field(
        default_factory=lambda: [FaceObservation(camera_ok=True, face_count=1, accepted=True, score=0.9)])
    enroll_error: BaseException | None = None
    attempts: list[bool] = field(default_factory=list)  # detect_attack asked per attempt

    def __post_init__(self) -> None:
        self._queue = deque(self.script)

    def enroll(self, photo: bytes) -> Any:
        if self.enroll_error is not None:
            raise self.enroll_error
        return ("enrollment", len(photo))

    def attempt(self, enrollment: Any, *, detect_attack: bool) -> FaceObservation:
        self.attempts.append(detect_attack)
        obs = _raise_or_return(self._queue.popleft() if len(self._queue) > 1 else self._queue[0])
        if obs.attack and not detect_attack:  # an attack is only ever seen when looked for
            obs = FaceObservation(camera_ok=obs.camera_ok, face_count=obs.face_count, accepted=obs.accepted,
                                  score=obs.score, attack=False, reason=obs.reason)
        return obs


@dataclass
class RecordedEligibility:
    status_answer: CertStatus | BaseException = field(default_factory=lambda: CertStatus("valid", True))
    register_answer: ServiceResult | BaseException = field(default_factory=lambda: ServiceResult(True))
    query_answer: ServiceResult | BaseException = field(default_factory=lambda: ServiceResult(True, transaction_id="t1"))
    challenge_error: BaseException | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    _n: int = 0

    def status(self, certificate_der: bytes) -> CertStatus:
        self.calls.append(("status", None))
        return _raise_or_return(self.status_answer)

    def challenge(self) -> Challenge:
        if self.challenge_error is not None:
            raise self.challenge_error
        self._n += 1
        return Challenge(id=f"c{self._n}", nonce=hashlib.sha256(str(self._n).encode()).digest())

    def register(self, challenge_id: str, signature: bytes, certificate_der: bytes, method: str) -> ServiceResult:
        self.calls.append(("register", method))
        return _raise_or_return(self.register_answer)

    def query(self, challenge_id: str, signature: bytes, certificate_der: bytes, method: str,
              consents: dict[str, str]) -> ServiceResult:
        self.calls.append(("query", {"method": method, **consents}))
        return _raise_or_return(self.query_answer)


def recorded_ports(card: RecordedCard | None = None, face: RecordedFace | None = None,
                   eligibility: RecordedEligibility | None = None, clock: ManualClock | None = None) -> Ports:
    return Ports(card=card or RecordedCard(), face=face or RecordedFace(),
                 eligibility=eligibility or RecordedEligibility(), clock=clock or ManualClock())


__all__ = ["ManualClock", "RecordedCard", "RecordedFace", "RecordedEligibility", "RecordedHardware", "recorded_ports",
           "CardError"]


class RecordedHardware:
    """A ``Hardware`` for ``ReaderDevice`` built from recorded ports; the test places cards."""

    def __init__(self, make_ports=None):
        from sim.reader.ports import SystemClock

        self._make_ports = make_ports or (lambda: recorded_ports(clock=SystemClock()))
        self.ports: Ports | None = None
        self._submit = None
        self.starts = 0

    def start(self, submit) -> Ports:
        self._submit = submit
        self.ports = self._make_ports()
        self.starts += 1
        return self.ports

    def stop(self) -> None:
        self._submit = None

    def insert(self) -> None:
        from sim.reader.flow import CardInserted

        if self._submit is not None:
            self._submit(CardInserted())

    def remove(self) -> None:
        from sim.reader.flow import CardRemoved

        if self._submit is not None:
            self._submit(CardRemoved())
