"""The reference reader's real parts (sim/reader/hw.py, pad.py): the card port over H1's card
OS through drivers.mynumber (in-process transport: no pcscd needed), real cryptography against
the eligibility service, the printed-photo detector on the presenter's scenes, and the camera
port's failure path."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding

from drivers.apdu import LocalTransport
from sim.card.layout import build_card
from sim.card.persona import Persona
from sim.eligibility.service import EligibilityService
from sim.reader.flow import CardInserted, EnterPin, Press, ReaderFlow, Tick
from sim.reader.hw import CameraFacePort, PcscCardPort, PersonaOcr, _LazyCamera, load_terminal_credentials
from sim.reader.ports import FACE_AUTH, STANDARD, CardError, PinResult, Ports, SystemClock
from sim.reader.recorded import RecordedFace
from sim.reader.screens import Screen


@pytest.fixture(scope="module")
def personas(card_deck):
    return {p: Persona.load(card_deck / "personas" / f"{p}.toml") for p in ("p001", "p002", "p003", "p004")}


def port_for(card_deck, persona: Persona, tmp_path, ocr=True) -> PcscCardPort:
    cardos = build_card(persona, tmp_path / f"{persona.id}.json")

    def connect():
        cardos.power_on()
        return LocalTransport(cardos.process)

    return PcscCardPort(connect, PersonaOcr([card_deck]) if ocr else None, load_terminal_credentials(card_deck / "pki"))


def auth_cert(persona: Persona) -> x509.Certificate:
    return x509.load_pem_x509_certificate((persona.card_dir / "auth.pem").read_bytes())


def verifies(persona: Persona, signature: bytes, data: bytes) -> bool:
    try:
        auth_cert(persona).public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return False
    return True


def test_standard_card_read_pin_and_sign(card_deck, personas, tmp_path):
    p = personas["p001"]
    port = port_for(card_deck, p, tmp_path)
    data = port.read()
    assert data.profile == STANDARD and data.pin_tries_left == 3
    assert data.birth_date == p.birth_date
    assert data.photo and data.photo[:12] == bytes.fromhex("0000000C6A5020200D0A870A")  # a JPEG 2000 file
    assert data.certificate_der == auth_cert(p).public_bytes(Encoding.DER)
    with pytest.raises(CardError, match="no PIN verified"):
        port.sign(b"challenge")
    wrong = "0000" if p.pin != "0000" else "1111"
    assert port.verify_pin(wrong) == PinResult(False, 2)
    assert port.verify_pin(p.pin).ok
    assert verifies(p, port.sign(b"challenge-1"), b"challenge-1")
    assert verifies(p, port.sign(b"challenge-2"), b"challenge-2")  # the session keeps the PIN for the query


def test_face_auth_card_signs_only_after_terminal_authorization(card_deck, personas, tmp_path):
    p = personas["p002"]
    port = port_for(card_deck, p, tmp_path)
    data = port.read()
    assert data.profile == FACE_AUTH and data.pin_tries_left is None and data.photo
    with pytest.raises(CardError):
        port.sign(b"x")
    port.authorize("face")
    assert verifies(p, port.sign(b"c1"), b"c1")
    assert verifies(p, port.sign(b"c2"), b"c2")  # one grant per signature: the port authorizes again
    port.read()  # a new session forgets the grant
    with pytest.raises(CardError):
        port.sign(b"x")
    port.authorize("visual")
    assert verifies(p, port.sign(b"c3"), b"c3")


def test_without_the_printed_face_there_is_no_photo(card_deck, personas, tmp_path):
    data = port_for(card_deck, personas["p001"], tmp_path, ocr=False).read()
    assert data.photo is None and data.birth_date is None


def test_ocr_finds_each_persona(card_deck, personas):
    ocr = PersonaOcr([card_deck])
    for p in personas.values():
        der = auth_cert(p).public_bytes(Encoding.DER)
        assert ocr.check_code_b(der) == p.check_code_b
    assert ocr.check_code_b(b"not a certificate") is None


@pytest.mark.parametrize("pid,method", [("p001", "pin"), ("p002", "face"), ("p003", "face")])
def test_flow_with_the_real_card_and_the_real_service(card_deck, personas, tmp_path, pid, method):
    """The identity proof is real cryptography end to end: the card signs, the service verifies
    the signature and the chain against the deck's JPKI CA."""
    p = personas[pid]
    service = EligibilityService(card_deck / "pki", f"sqlite:///{tmp_path / 'e.sqlite'}")
    service.seed_registration(auth_cert(p).public_bytes(Encoding.DER))

    class InProcessEligibility:  # the HTTP client's interface over the service object
        def status(self, der):
            import base64

            from sim.reader.ports import CertStatus

            r = service.status({"certificate": base64.b64encode(der).decode()})
            return CertStatus(r["cert_status"], r["registered"])

        def challenge(self):
            import base64

            from sim.reader.ports import Challenge

            r = service.challenge({})
            return Challenge(r["id"], base64.b64decode(r["nonce"]))

        def _req(self, cid, sig, der, method, **extra):
            import base64

            return {"challenge_id": cid, "signature": base64.b64encode(sig).decode(),
                    "certificate": base64.b64encode(der).decode(), "method": method, **extra}

        def register(self, cid, sig, der, method):
            from sim.reader.ports import ServiceResult

            r = service.register(self._req(cid, sig, der, method))
            return ServiceResult(r["ok"], r["code"], r["message"], r["transaction_id"])

        def query(self, cid, sig, der, method, consents):
            from sim.reader.ports import ServiceResult

            r = service.eligibility(self._req(cid, sig, der, method, consents=consents))
            return ServiceResult(r["ok"], r["code"], r["message"], r["transaction_id"])

    events = []
    ports = Ports(card=port_for(card_deck, p, tmp_path), face=RecordedFace(), eligibility=InProcessEligibility(),
                  clock=SystemClock())
    flow = ReaderFlow(ports, sink=events.append)
    flow.handle(CardInserted())
    assert flow.screen is Screen.METHOD_SELECT, [e.fields for e in events if e.kind == "error"]
    if method == "pin":
        flow.handle(Press("pin"))
        flow.handle(EnterPin(p.pin))
    else:
        flow.handle(Press("face"))
        flow.handle(Tick())
    flow.handle(Press("consent"))
    flow.handle(Press("consent"))
    flow.handle(Press("consent" if p.age_on(dt.date.today()) >= 40 else "decline_or_under40"))
    assert flow.screen is Screen.DONE, [(e.kind, e.fields) for e in events if e.kind in ("error", "refused")]
    tx = service.transactions(1)[0]
    assert tx["ok"] and tx["method"] == method


def test_revoked_card_is_stopped_at_reading(card_deck, personas, tmp_path):
    from sim.card.pki import load_pki

    p = personas["p003"]
    pki_dir = tmp_path / "pki"
    import shutil

    shutil.copytree(card_deck / "pki", pki_dir)
    load_pki(pki_dir).add_revoked(auth_cert(p).serial_number, "lost")
    service = EligibilityService(pki_dir, f"sqlite:///{tmp_path / 'e.sqlite'}")
    import base64

    der = auth_cert(p).public_bytes(Encoding.DER)
    assert service.status({"certificate": base64.b64encode(der).decode()})["cert_status"] == "revoked"


# -- presentation attack detection on the presenter's scenes ------------------------------------

@pytest.fixture(scope="module")
def scenes():
    from harness.facedata import list_identities, resolve_faces
    from sim.camera_scene import SceneRenderer

    idents = list_identities(resolve_faces())[:4]
    return SceneRenderer(idents), [i.name for i in idents]


def _box(backend, frame):
    dets = backend.detect(frame)
    assert dets, "no face found in the scene"
    return max(dets, key=lambda d: d.area_px).box


@pytest.mark.parametrize("condition", ["nominal", "jpeg"])
def test_pad_flags_prints_and_passes_live_faces(scenes, dlib_backend, condition):
    from sim.camera_scene import Display, Light
    from sim.reader.pad import detect_print

    renderer, names = scenes
    for name in names:
        live = renderer.render(Display(mode="subject", subject=name, condition=condition), Light())
        printed = renderer.render(Display(mode="attack", subject=name, condition=condition), Light())
        assert not detect_print(live, _box(dlib_backend, live)).attack, name
        assert detect_print(printed, _box(dlib_backend, printed)).attack, name
    assert not detect_print(live, None).attack


def test_camera_failure_is_an_observation_not_a_crash():
    port = CameraFacePort(_LazyCamera("http://127.0.0.1:9/stream.mjpg"), matcher=None, frame_timeout_s=0.5)
    obs = port.attempt(object(), detect_attack=False)
    assert obs.camera_ok is False and obs.face_count == 0 and obs.reason
