"""The hardware the reader firmware's flow touches, as small interfaces.

The flow (``sim.reader.flow``) never does I/O itself: it calls these ports. The reader process
wires in the real parts (``sim.reader.hw``: PC/SC, the camera stream, the face matcher, the
eligibility service over HTTP); unit tests wire in recorded answers, so every transition runs
fast and deterministically.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

STANDARD = "standard"
FACE_AUTH = "face_auth"


# -- card ------------------------------------------------------------------------------------

class CardError(RuntimeError):
    """The card could not do what was asked."""


class CardRemovedError(CardError):
    """The card left the reader during an operation."""


class CardUnreadable(CardError):
    """Transmission errors or no answer: the card is outside the operating volume, or broken."""


@dataclass(frozen=True)
class CardData:
    """What the reader reads when a card is placed (no PIN needed for any of it)."""

    profile: str  # STANDARD or FACE_AUTH
    certificate_der: bytes  # the user-authentication certificate
    birth_date: dt.date | None  # from the card-surface AP (opened with check code B)
    photo: bytes | None  # card-face photo (JPEG 2000), None when the card face could not be opened
    pin_tries_left: int | None = None  # None for a card without a PIN (face-auth)


@dataclass(frozen=True)
class PinResult:
    ok: bool
    tries_left: int  # 0 = locked


class CardPort(Protocol):
    def read(self) -> CardData: ...
    def verify_pin(self, pin: str) -> PinResult: ...
    def authorize(self, method: str) -> None: ...  # terminal authorization after a face / visual check
    def sign(self, challenge: bytes) -> bytes: ...  # RSASSA-PKCS1-v1_5 SHA-256 with the user-auth key


# -- face --------------------------------------------------------------------------------------

class FaceError(RuntimeError):
    """The card photo holds no usable face, or the matcher failed."""


@dataclass(frozen=True)
class FaceObservation:
    """One capture-and-match attempt.

    ``accepted`` is the matcher's verdict on the best face in the frame; the flow alone decides
    what a frame with several faces means.
    """

    camera_ok: bool
    face_count: int
    accepted: bool = False
    score: float | None = None
    attack: bool = False  # presentation attack detected (only when asked for)
    reason: str = ""


class FacePort(Protocol):
    def enroll(self, photo: bytes) -> Any: ...
    def attempt(self, enrollment: Any, *, detect_attack: bool) -> FaceObservation: ...


# -- eligibility service ---------------------------------------------------------------------

class EligibilityUnavailable(RuntimeError):
    """The eligibility service could not be reached or answered garbage."""


@dataclass(frozen=True)
class CertStatus:
    cert_status: str  # valid | expired | revoked | unknown_issuer | malformed
    registered: bool


@dataclass(frozen=True)
class Challenge:
    id: str
    nonce: bytes


@dataclass(frozen=True)
class ServiceResult:
    ok: bool
    code: str = "ok"
    message: str = ""
    transaction_id: str | None = None
    fields: dict = field(default_factory=dict)


class EligibilityPort(Protocol):
    def status(self, certificate_der: bytes) -> CertStatus: ...
    def challenge(self) -> Challenge: ...
    def register(self, challenge_id: str, signature: bytes, certificate_der: bytes, method: str) -> ServiceResult: ...
    def query(self, challenge_id: str, signature: bytes, certificate_der: bytes, method: str,
              consents: dict[str, str]) -> ServiceResult: ...


# -- clock -------------------------------------------------------------------------------------

class Clock(Protocol):
    def monotonic_ms(self) -> int: ...
    def today(self) -> dt.date: ...


class SystemClock:
    def monotonic_ms(self) -> int:
        import time

        return int(time.monotonic() * 1000)

    def today(self) -> dt.date:
        return dt.date.today()


@dataclass
class Ports:
    card: CardPort
    face: FacePort
    eligibility: EligibilityPort
    clock: Clock
