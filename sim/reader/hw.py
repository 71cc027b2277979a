"""The reference reader's real parts: the ports of sim/reader/ports.py over real devices.

* card: PC/SC through pcscd (``drivers.pcsc``) and the My Number Card applications
  (``drivers.mynumber``); the card-face photo is opened with check code B, which a real reader
  reads off the printed card face (OCR). In the simulated station the printed card face is the
  persona behind the card: :class:`PersonaOcr`.
* face: frames from the camera stream (``drivers.camera``), matched with ``harness.biometrics``;
  presentation attacks by ``sim.reader.pad`` when the firmware asks;
* eligibility: the HTTP client of sim/eligibility.

``RealHardware`` starts them at every boot and watches the PC/SC reader for card insertion
and removal.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.reader.ports import (
    FACE_AUTH,
    STANDARD,
    CardData,
    CardError,
    CardRemovedError,
    CardUnreadable,
    FaceError,
    FaceObservation,
    PinResult,
    Ports,
    SystemClock,
)

log = logging.getLogger(__name__)

METHOD_CODES = {"face": 1, "visual": 2}  # drivers.terminal_auth METHOD_FACE_MATCH / METHOD_STAFF_VISUAL


# -- the printed card face ------------------------------------------------------------------------

class PersonaOcr:
    """Check code B "read off the printed card face": the persona whose user-auth certificate
    the placed card holds. The deck folders are rescanned when a certificate is unknown."""

    def __init__(self, deck_dirs: list[Path]):
        self.deck_dirs = [Path(d) for d in deck_dirs]
        self._by_serial: dict[int, str] = {}

    def _scan(self) -> None:
        from cryptography import x509

        from sim.card.persona import Persona, PersonaError

        for deck in self.deck_dirs:
            for path in sorted((deck / "personas").glob("*.toml")) if (deck / "personas").is_dir() else []:
                try:
                    persona = Persona.load(path)
                    cert_path = persona.card_dir / "auth.pem" if persona.card_dir else None
                    if cert_path is None or not cert_path.exists():
                        continue
                    serial = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
                except (PersonaError, OSError, ValueError) as exc:
                    log.warning("printed card face %s unreadable: %s", path.name, exc)
                    continue
                self._by_serial[serial] = persona.check_code_b

    def check_code_b(self, certificate_der: bytes) -> str | None:
        from cryptography import x509

        try:
            serial = x509.load_der_x509_certificate(certificate_der).serial_number
        except ValueError:
            return None
        if serial not in self._by_serial:
            self._scan()
        return self._by_serial.get(serial)


# -- card -------------------------------------------------------------------------------------

def _birth(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text.strip(), "%Y%m%d").date()
    except ValueError:
        return None


class PcscCardPort:
    """The card through any APDU transport; ``connect()`` gives a fresh one per card session.

    Secrets (the PIN) live only in this session's memory and are dropped at the next read.
    """

    def __init__(self, connect: Callable[[], Any], ocr: PersonaOcr | None = None,
                 terminal: dict[str, Any] | None = None):
        self._connect = connect
        self.ocr = ocr
        self.terminal = terminal or {}  # method -> drivers.mynumber.TerminalCredential
        self._conn: Any = None
        self._card: Any = None
        self._pin: str | None = None
        self._method: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._pin = None
        self._method = None
        self._card = None
        if self._conn is not None and hasattr(self._conn, "close"):
            try:
                self._conn.close()
            except Exception:  # the card may already be gone
                pass
        self._conn = None

    def _guard(self, fn: Callable[[], Any], *, reading: bool = False) -> Any:
        from drivers.apdu import TransportError
        from drivers.mynumber import CardStatusError
        from drivers.pcsc import CardRemoved, NoCard

        try:
            return fn()
        except (CardRemoved, NoCard) as exc:
            # while reading, a card that drops off the field is badly placed: "place it again"
            raise (CardUnreadable if reading else CardRemovedError)(str(exc)) from exc
        except TransportError as exc:
            raise CardUnreadable(f"transmission error: {exc}") from exc
        except CardStatusError as exc:
            raise CardError(str(exc)) from exc

    def read(self) -> CardData:
        with self._lock:
            self._drop()
            return self._guard(self._read, reading=True)

    def _read(self) -> CardData:
        from drivers.mynumber import MyNumberCard

        self._conn = self._connect()
        card = self._card = MyNumberCard(self._conn)
        profile = card.detect_profile()
        if profile.name not in ("standard", "face-auth"):
            raise CardError(f"not a My Number Card ({'; '.join(profile.reasons)})")
        cert = card.certificate_der("auth")
        tries = card.tries_left("jpki_auth_pin") if profile.name == "standard" else None
        birth, photo = None, None
        check_b = self.ocr.check_code_b(cert) if self.ocr else None
        if check_b:
            try:
                face = card.card_face(check_b=check_b)
                birth, photo = _birth(face.birth_date), face.photo or None
            except Exception as exc:  # the photo is optional: a refusal here is not the card failing
                from drivers.mynumber import CardStatusError

                if not isinstance(exc, CardStatusError):
                    raise
                log.warning("card face not opened: %s", exc)
        else:
            log.warning("printed card face not readable: no check code B")
        return CardData(profile=STANDARD if profile.name == "standard" else FACE_AUTH, certificate_der=cert,
                        birth_date=birth, photo=photo, pin_tries_left=tries)

    def verify_pin(self, pin: str) -> PinResult:
        from drivers.mynumber import Blocked, WrongPin

        def run() -> PinResult:
            try:
                self._require().verify("jpki_auth_pin", pin)
            except WrongPin as exc:
                return PinResult(False, exc.tries_left)
            except Blocked:
                return PinResult(False, 0)
            self._pin = pin
            return PinResult(True, 3)

        with self._lock:
            return self._guard(run)

    def authorize(self, method: str) -> None:
        cred = self.terminal.get(method)
        if cred is None:
            raise CardError(f"this reader holds no terminal credential for {method}")

        def run() -> None:
            self._require().authorize_terminal(cred)
            self._method = method

        with self._lock:
            self._guard(run)

    def sign(self, challenge: bytes) -> bytes:
        def run() -> bytes:
            card = self._require()
            if self._pin is not None:
                return card.sign_auth(challenge, pin=self._pin)
            if self._method is not None:
                # one terminal authorization grants one signature: authorize again for each
                return card.sign_auth(challenge, terminal=self.terminal[self._method])
            raise CardError("no PIN verified and no terminal authorization: the key is locked")

        with self._lock:
            return self._guard(run)

    def _require(self) -> Any:
        if self._card is None:
            raise CardError("no card session")
        return self._card


def load_terminal_credentials(pki_dir: Path) -> dict[str, Any]:
    """The reader's terminal credential (pki/terminal.pem/.key), once per verification method."""
    from drivers.mynumber import TerminalCredential

    cert, key = pki_dir / "terminal.pem", pki_dir / "terminal.key"
    if not cert.exists() or not key.exists():
        log.warning("no terminal credential in %s: face-auth cards cannot sign", pki_dir)
        return {}
    return {method: TerminalCredential.load(cert, key, code) for method, code in METHOD_CODES.items()}


# -- face -------------------------------------------------------------------------------------

THRESHOLD_FAULT_SHIFT = 0.12  # loose_threshold / strict_threshold move the accept threshold this far


@dataclass
class FaceFaults:
    """What the faulty-reader options change in the face hardware (set by the device)."""

    threshold_shift: float = 0.0
    pad_lets_through: frozenset[str] = frozenset()

    @classmethod
    def of(cls, faults: Any) -> "FaceFaults":
        shift = (-THRESHOLD_FAULT_SHIFT if getattr(faults, "loose_threshold", False) else 0.0) + \
                (THRESHOLD_FAULT_SHIFT if getattr(faults, "strict_threshold", False) else 0.0)
        through = frozenset({"screen"}) if getattr(faults, "pass_screen_replay", False) else frozenset()
        return cls(shift, through)


class CameraFacePort:
    """One attempt = the newest frame from the camera, matched against the card photo."""

    def __init__(self, camera: Any, matcher: Any, frame_timeout_s: float = 2.0,
                 faults: Callable[[], FaceFaults] = FaceFaults):
        self.camera = camera
        self.matcher = matcher
        self.frame_timeout_s = frame_timeout_s
        self.faults = faults

    def enroll(self, photo: bytes) -> Any:
        enrollment = self.matcher.enroll(photo)
        if not enrollment.ok:
            raise FaceError(f"card photo not usable: {enrollment.reason}")
        return enrollment

    def attempt(self, enrollment: Any, *, detect_attack: bool) -> FaceObservation:
        from drivers.camera import CameraError

        try:
            frame = self.camera.read(timeout_s=self.frame_timeout_s)
        except CameraError as exc:
            return FaceObservation(camera_ok=False, face_count=0, reason=str(exc) or type(exc).__name__)
        result = self.matcher.verify(enrollment, frame.image)
        faults = self.faults()
        accepted = bool(result.accepted)
        if faults.threshold_shift and result.score is not None:
            accepted = result.score >= self.matcher.threshold + faults.threshold_shift
        attack = False
        if detect_attack and result.face_count >= 1 and result.box is not None:
            from sim.reader.pad import detect_attack as pad

            attack = pad(frame.image, result.box, faults.pad_lets_through).attack
        return FaceObservation(camera_ok=True, face_count=result.face_count, accepted=accepted,
                               score=result.score, attack=attack, reason=result.reason)


class _LazyCamera:
    """Opens the camera on first use and retries on the next attempt if that failed: a camera
    that is missing at boot is a camera failure in the flow, not a reader that cannot boot."""

    def __init__(self, url: str):
        self.url = url
        self._cam: Any = None

    def read(self, timeout_s: float):
        from drivers.camera import CameraError, OpenCVCamera

        if self._cam is None:
            cam = OpenCVCamera(self.url, read_timeout_s=timeout_s, open_timeout_s=timeout_s)
            try:
                cam.open()
            except CameraError:
                cam.close()
                raise
            self._cam = cam
        return self._cam.read(timeout_s=timeout_s)

    def close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None


# -- the whole reader ---------------------------------------------------------------------------

class CardWatch:
    """The reader's one antenna over one or more PC/SC readers.

    In the simulated station each deck card sits in its own vpcd slot and the rig's placer puts
    one of them "on the reader"; the reference reader watches all those slots as one antenna.
    The first card present becomes *the* card; its removal ends the session, and a card still
    present in another slot then counts as newly placed.
    """

    def __init__(self, readers: list[str], submit: Callable[[Any], None]):
        self.readers = readers
        self._submit = submit
        self._lock = threading.Lock()
        self._present: dict[str, bool] = {r: False for r in readers}
        self.active: str | None = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._watch, args=(r,), name=f"card-watch {r}", daemon=True)
                         for r in readers]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop watching; joins the threads that were started, within one shared 2 s budget."""
        self._stop.set()
        deadline = time.monotonic() + 2.0
        for t in self._threads:
            if t.ident is not None:  # a power cut can come before start()
                t.join(timeout=max(0.0, deadline - time.monotonic()))

    def _changed(self, reader: str, present: bool) -> None:
        from sim.reader.flow import CardInserted, CardRemoved

        with self._lock:
            self._present[reader] = present
            if present and self.active is None:
                self.active = reader
                self._submit(CardInserted())
            elif not present and self.active == reader:
                self.active = None
                self._submit(CardRemoved())
                other = next((r for r, p in self._present.items() if p), None)
                if other is not None:
                    self.active = other
                    self._submit(CardInserted())

    def _watch(self, name: str) -> None:
        from drivers.pcsc import PcscError, PcscReader, PcscTimeout

        reader = PcscReader(name)
        present = False
        while not self._stop.is_set():
            try:
                if present:
                    reader.wait_for_removal(0.5)
                else:
                    reader.wait_for_insertion(0.5)
            except PcscTimeout:
                continue
            except PcscError as exc:
                log.warning("PC/SC reader %r: %s", name, exc)
                self._stop.wait(0.5)
                continue
            if self._stop.is_set():
                return
            present = not present
            self._changed(name, present)

    def connect(self) -> Any:
        from drivers.pcsc import NoCard, PcscReader

        name = self.active
        if name is None:
            raise NoCard("no card on the reader")
        return PcscReader(name).connect()


class RealHardware:
    def __init__(self, *, pcsc_readers: list[str], camera_url: str, eligibility_url: str, deck_dirs: list[Path],
                 pki_dir: Path | None, reader_id: str = "", backend: str = "dlib", threshold: Any = None):
        self.pcsc_readers = pcsc_readers
        self.camera_url = camera_url
        self.eligibility_url = eligibility_url
        self.ocr = PersonaOcr(deck_dirs)
        self.pki_dir = pki_dir
        self.reader_id = reader_id
        self.backend_name = backend
        self.threshold = threshold
        self._matcher: Any = None  # ROM: loaded once, kept across power cycles
        self._matcher_lock = threading.Lock()
        self._card: PcscCardPort | None = None
        self._camera: _LazyCamera | None = None
        self._watch: CardWatch | None = None
        self._parts_lock = threading.Lock()  # a boot's start and a power cut's stop never interleave
        self.face_faults = FaceFaults()

    def set_faults(self, faults: Any) -> None:
        self.face_faults = FaceFaults.of(faults)

    def matcher(self) -> Any:
        with self._matcher_lock:
            if self._matcher is None:
                from harness.biometrics import FaceMatcher, load_backend

                # dlib: see faces down to 100 px, so a carer beside the patient counts as a second face
                options = {"min_face_px": 100} if self.backend_name == "dlib" else {}
                self._matcher = FaceMatcher(load_backend(self.backend_name, **options), threshold=self.threshold)
            return self._matcher

    def start(self, submit: Callable[[Any], None]) -> Ports:
        with self._parts_lock:
            self._stop_parts()  # parts a boot started after a power cut's stop ran are not left running
            return self._start_parts(submit)

    def _start_parts(self, submit: Callable[[Any], None]) -> Ports:
        from sim.eligibility.client import EligibilityClient

        terminal = load_terminal_credentials(self.pki_dir) if self.pki_dir else {}
        self._watch = CardWatch(self.pcsc_readers, submit)
        self._card = PcscCardPort(self._watch.connect, self.ocr, terminal)
        self._camera = _LazyCamera(self.camera_url)
        face = CameraFacePort(self._camera, self.matcher(), faults=lambda: self.face_faults)
        eligibility = EligibilityClient(self.eligibility_url, reader_id=self.reader_id)
        self._watch.start()
        return Ports(card=self._card, face=face, eligibility=eligibility, clock=SystemClock())

    def stop(self) -> None:
        with self._parts_lock:
            self._stop_parts()

    def _stop_parts(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self._card is not None:
            self._card.close()
            self._card = None
        if self._camera is not None:
            self._camera.close()
            self._camera = None
