"""Terminal authorization (drivers/terminal_auth.py) between a reader and the card OS."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from drivers import terminal_auth as ta
from sim.card.issue import load_material
from sim.card.layout import build_card
from sim.card.persona import Persona
from sim.card.pki import der, issue_terminal_cert, load_pki, make_terminal_ca

JPKI = bytes.fromhex("00A4040C0AD392F000260100000001")
ASSIST = bytes.fromhex("00A4040C0AD3921000310001010408")
SELECT_KEY = bytes.fromhex("00A4020C020017")
DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(b"claim").digest()
SIGN = bytes((0x80, 0x2A, 0x00, 0x80, len(DIGEST_INFO))) + DIGEST_INFO + b"\x00"


@dataclasses.dataclass
class Resp:
    data: bytes
    sw: int


def tx(card, apdu: bytes) -> Resp:
    r = card.process(apdu)
    return Resp(r[:-2], int.from_bytes(r[-2:], "big"))


@pytest.fixture(scope="module")
def pki(card_deck):
    return load_pki(card_deck / "pki")


@pytest.fixture(scope="module")
def cards(card_deck):
    out = {}
    for pid in ("p001", "p002"):
        persona = Persona.load(card_deck / "personas" / f"{pid}.toml")
        out[pid] = (persona, load_material(persona))
    return out


@pytest.fixture
def face_card(cards):
    persona, material = cards["p002"]
    card = build_card(persona, None, material)
    tx(card, JPKI)
    return card, material


def authorize(card, material, pki, method=ta.METHOD_FACE_MATCH, cert=None, key=None, sent_method=None):
    chal = tx(card, ta.get_challenge_apdu())
    assert chal.sw == 0x9000 and len(chal.data) == 8
    apdu = ta.build_authorize_apdu(chal.data, method, cert or pki.terminal_cert, key or pki.terminal_key,
                                   der(material.auth_cert))
    if sent_method is not None:
        apdu = apdu[:3] + bytes((sent_method,)) + apdu[4:]
    return tx(card, apdu), apdu


def sign(card) -> Resp:
    tx(card, SELECT_KEY)
    return tx(card, SIGN)


def test_face_match_authorizes_exactly_one_signature(face_card, pki):
    card, material = face_card
    assert sign(card).sw == 0x6982  # no PIN on this card, no authorization yet
    resp, apdu = authorize(card, material, pki)
    assert resp.sw == 0x9000
    assert len(apdu) > 5 + 255 and apdu[4] == 0  # certificate + signature need an extended APDU
    sig = sign(card)
    assert sig.sw == 0x9000 and len(sig.data) == 256
    material.auth_cert.public_key().verify(sig.data, b"claim", padding.PKCS1v15(), hashes.SHA256())
    assert sign(card).sw == 0x6982  # used once


def test_staff_visual_check_method(face_card, pki):
    card, material = face_card
    assert authorize(card, material, pki, method=ta.METHOD_STAFF_VISUAL)[0].sw == 0x9000
    assert sign(card).sw == 0x9000


def test_replayed_authorization_is_refused(face_card, pki):
    card, material = face_card
    resp, apdu = authorize(card, material, pki)
    assert resp.sw == 0x9000
    assert tx(card, apdu).sw == 0x6985  # the challenge was consumed
    tx(card, ta.get_challenge_apdu())
    assert tx(card, apdu).sw == 0x6300  # signed over an old challenge


def test_terminal_from_another_ca_is_refused(face_card, pki):
    card, material = face_card
    rogue_ca_key, rogue_ca = make_terminal_ca("rogue CA")
    key, cert = issue_terminal_cert(rogue_ca_key, rogue_ca)
    assert authorize(card, material, pki, cert=cert, key=key)[0].sw == 0x6300
    assert sign(card).sw == 0x6982


def test_wrong_method_is_refused(face_card, pki):
    card, material = face_card
    # Signed for face match, sent as a staff check: the signature covers P2.
    assert authorize(card, material, pki, method=ta.METHOD_FACE_MATCH,
                     sent_method=ta.METHOD_STAFF_VISUAL)[0].sw == 0x6300
    # A terminal certified only for face match cannot claim a staff visual check.
    key, cert = issue_terminal_cert(pki.terminal_ca_key, pki.terminal_ca, ekus=(ta.EKU_FACE_MATCH,))
    assert authorize(card, material, pki, method=ta.METHOD_STAFF_VISUAL, cert=cert, key=key)[0].sw == 0x6300
    assert authorize(card, material, pki, method=ta.METHOD_FACE_MATCH, cert=cert, key=key)[0].sw == 0x9000
    # An unknown method never reaches verification.
    assert authorize(card, material, pki, sent_method=0x03)[0].sw == 0x6A86
    assert sign(card).sw == 0x9000  # the one authorization that succeeded


def test_expired_terminal_certificate_is_refused(cards, pki):
    persona, material = cards["p002"]
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=20 * 365)
    card = build_card(persona, None, material, clock=lambda: later)
    tx(card, JPKI)
    assert authorize(card, material, pki)[0].sw == 0x6300


def test_malformed_payloads(face_card, pki):
    card, _ = face_card
    for data in (b"\x01\x02\x03", b"\x7f\x21\x05ab", ta.encode_payload(b"not a certificate", b"sig"),
                 ta._tlv(ta.TAG_CERTIFICATE, b"x")):
        tx(card, ta.get_challenge_apdu())
        resp = tx(card, bytes((0x80, 0x82, 0x00, 0x01, len(data))) + data)
        assert resp.sw == 0x6A80, data


def test_authorization_is_cleared_by_reset_and_by_leaving_the_ap(face_card, pki):
    card, material = face_card
    assert authorize(card, material, pki)[0].sw == 0x9000
    card.reset()
    tx(card, JPKI)
    assert sign(card).sw == 0x6982
    assert authorize(card, material, pki)[0].sw == 0x9000
    tx(card, ASSIST)
    tx(card, JPKI)
    assert sign(card).sw == 0x6982


def test_authorization_only_in_the_jpki_ap(face_card, pki):
    card, material = face_card
    tx(card, ASSIST)
    assert authorize(card, material, pki)[0].sw == 0x6985


def test_standard_card_accepts_authorization_too(cards, pki):
    persona, material = cards["p001"]
    card = build_card(persona, None, material)
    tx(card, JPKI)
    assert authorize(card, material, pki)[0].sw == 0x9000
    assert sign(card).sw == 0x9000


def test_host_helper_over_any_transport(face_card, pki):
    card, material = face_card
    result = ta.authorize(lambda apdu: tx(card, apdu), ta.METHOD_FACE_MATCH, pki.terminal_cert, pki.terminal_key,
                          der(material.auth_cert))
    assert result.ok and result.sw == 0x9000 and len(result.challenge) == 8
    assert sign(card).sw == 0x9000


def test_card_side_check_directly(pki, cards):
    _, material = cards["p002"]
    auth = der(material.auth_cert)
    chal = b"\x11" * 8
    data = ta.encode_payload(der(pki.terminal_cert), ta.sign_authorization(chal, 1, pki.terminal_key, auth))
    assert ta.verify_authorization(data, chal, 1, auth, pki.terminal_ca).subject == pki.terminal_cert.subject
    with pytest.raises(ta.TerminalAuthError) as err:
        ta.verify_authorization(data, chal, 1, b"another certificate", pki.terminal_ca)
    assert err.value.sw == 0x6300
    with pytest.raises(ValueError):
        ta.build_authorize_apdu(chal, 9, pki.terminal_cert, pki.terminal_key, auth)
