"""Terminal authorization: facehil's own model of "the user-auth key may be used only after a
face match or a staff visual check by an authorised verifier" (face-auth My Number Card).

How the real chip enforces this is not public. This module is the one place our design lives;
the simulated card (sim/card/cardos.py) and the host side (reader firmware, drivers/mynumber.py)
both call it, so replacing the mechanism means replacing this file.

Protocol (in the JPKI AP, after the face match or the staff check succeeded):

1. ``00 84 00 00 08`` GET CHALLENGE -> 8 random bytes + 9000. The card keeps the last
   challenge; any authorization attempt consumes it (success or not), so it cannot be replayed.
2. ``80 82 00 <P2> Lc <data>`` TERMINAL AUTHORIZE (extended length when data > 255 bytes):
   * P2, the verification method: ``01`` face match, ``02`` staff visual check;
   * data = ``7F21 <terminal certificate, X.509 DER>`` ``5F37 <signature, DER ECDSA>``;
   * signature = ECDSA P-256 / SHA-256 by the terminal key over
     ``b"FACEHIL-TA1" || challenge || P2 || SHA-256(user-auth certificate DER)``.
3. The card checks, in order: a challenge is pending (else 6985); P1=00 and P2 is a known
   method (else 6A86); the data parses (else 6A80); the terminal certificate was issued by the
   terminal CA the card holds, is within its validity, is an EC P-256 key, and carries the
   extended key usage for that method (``EKU_FACE_MATCH`` / ``EKU_STAFF_VISUAL``); and the
   signature verifies (any of these failing: 6300).
4. Success (9000) authorises exactly ONE signature with the user-auth key (EF 0017, 80 2A).
   The grant is cleared by that signature, by leaving the JPKI AP, and by reset, power-off
   or removal.

The OIDs are under ``2.25.<UUID>`` (ITU-T X.667), an arc that needs no registration.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Callable, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

CLA = 0x80
INS_AUTHORIZE = 0x82
METHOD_FACE_MATCH = 0x01
METHOD_STAFF_VISUAL = 0x02
METHODS = {METHOD_FACE_MATCH: "face-match", METHOD_STAFF_VISUAL: "staff-visual"}
CHALLENGE_LEN = 8
DOMAIN = b"FACEHIL-TA1"
TAG_CERTIFICATE = 0x7F21
TAG_SIGNATURE = 0x5F37

OID_ARC = "2.25.67837411346632637748472084689229041464"
EKU_FACE_MATCH = x509.ObjectIdentifier(OID_ARC + ".1")
EKU_STAFF_VISUAL = x509.ObjectIdentifier(OID_ARC + ".2")
METHOD_EKU = {METHOD_FACE_MATCH: EKU_FACE_MATCH, METHOD_STAFF_VISUAL: EKU_STAFF_VISUAL}

# Status words of the card side.
SW_NO_CHALLENGE = 0x6985
SW_BAD_METHOD = 0x6A86
SW_MALFORMED = 0x6A80
SW_REJECTED = 0x6300


class TerminalAuthError(Exception):
    """An authorization the card refuses; ``sw`` is the status word it answers."""

    def __init__(self, sw: int, reason: str) -> None:
        super().__init__(f"{sw:04X}: {reason}")
        self.sw = sw
        self.reason = reason


# ---------------------------------------------------------------- wire format

def signed_message(challenge: bytes, method: int, auth_cert_der: bytes) -> bytes:
    return DOMAIN + challenge + bytes((method,)) + hashlib.sha256(auth_cert_der).digest()


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes((n,))
    elif n <= 0xFF:
        length = bytes((0x81, n))
    else:
        length = bytes((0x82, n >> 8, n & 0xFF))
    return tag.to_bytes(2, "big") + length + value


def encode_payload(terminal_cert_der: bytes, signature: bytes) -> bytes:
    return _tlv(TAG_CERTIFICATE, terminal_cert_der) + _tlv(TAG_SIGNATURE, signature)


def decode_payload(data: bytes) -> tuple[bytes, bytes]:
    """(certificate DER, signature) from the command data; TerminalAuthError(6A80) if malformed."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if pos + 3 > len(data):
            raise TerminalAuthError(SW_MALFORMED, "truncated TLV")
        tag = int.from_bytes(data[pos:pos + 2], "big")
        first = data[pos + 2]
        pos += 3
        if first < 0x80:
            length = first
        elif first in (0x81, 0x82):
            width = first - 0x80
            if pos + width > len(data):
                raise TerminalAuthError(SW_MALFORMED, "truncated TLV length")
            length = int.from_bytes(data[pos:pos + width], "big")
            pos += width
        else:
            raise TerminalAuthError(SW_MALFORMED, "unsupported TLV length form")
        if pos + length > len(data) or tag in fields:
            raise TerminalAuthError(SW_MALFORMED, "TLV overruns the data or repeats a tag")
        fields[tag] = bytes(data[pos:pos + length])
        pos += length
    if set(fields) != {TAG_CERTIFICATE, TAG_SIGNATURE}:
        raise TerminalAuthError(SW_MALFORMED, "expected exactly 7F21 and 5F37")
    return fields[TAG_CERTIFICATE], fields[TAG_SIGNATURE]


# ---------------------------------------------------------------- host side

def get_challenge_apdu(length: int = CHALLENGE_LEN) -> bytes:
    return bytes((0x00, 0x84, 0x00, 0x00, length))


def sign_authorization(challenge: bytes, method: int, terminal_key: ec.EllipticCurvePrivateKey,
                       auth_cert_der: bytes) -> bytes:
    return terminal_key.sign(signed_message(challenge, method, auth_cert_der), ec.ECDSA(hashes.SHA256()))


def build_authorize_apdu(challenge: bytes, method: int, terminal_cert: x509.Certificate | bytes,
                         terminal_key: ec.EllipticCurvePrivateKey, auth_cert_der: bytes) -> bytes:
    """The TERMINAL AUTHORIZE command for this challenge (short or extended as the size needs)."""
    if method not in METHODS:
        raise ValueError(f"unknown verification method {method!r}; expected one of {sorted(METHODS)}")
    cert_der = terminal_cert if isinstance(terminal_cert, bytes) else terminal_cert.public_bytes(Encoding.DER)
    data = encode_payload(cert_der, sign_authorization(challenge, method, terminal_key, auth_cert_der))
    header = bytes((CLA, INS_AUTHORIZE, 0x00, method))
    if len(data) <= 0xFF:
        return header + bytes((len(data),)) + data
    return header + b"\x00" + len(data).to_bytes(2, "big") + data


class _Response(Protocol):
    data: bytes
    sw: int


@dataclass(frozen=True)
class AuthorizeResult:
    ok: bool
    sw: int
    challenge: bytes


def authorize(transmit: Callable[[bytes], _Response], method: int, terminal_cert: x509.Certificate | bytes,
              terminal_key: ec.EllipticCurvePrivateKey, auth_cert_der: bytes) -> AuthorizeResult:
    """GET CHALLENGE then TERMINAL AUTHORIZE over any transport (JPKI AP already selected)."""
    chal = transmit(get_challenge_apdu())
    if chal.sw != 0x9000 or len(chal.data) != CHALLENGE_LEN:
        return AuthorizeResult(False, chal.sw, b"")
    resp = transmit(build_authorize_apdu(chal.data, method, terminal_cert, terminal_key, auth_cert_der))
    return AuthorizeResult(resp.sw == 0x9000, resp.sw, chal.data)


# ---------------------------------------------------------------- card side

def verify_authorization(data: bytes, challenge: bytes, method: int, auth_cert_der: bytes,
                         terminal_ca: x509.Certificate, now: dt.datetime | None = None) -> x509.Certificate:
    """Check one TERMINAL AUTHORIZE payload; returns the terminal certificate or raises
    TerminalAuthError with the card's status word."""
    if method not in METHODS:
        raise TerminalAuthError(SW_BAD_METHOD, f"unknown method {method:02X}")
    cert_der, signature = decode_payload(data)
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError:
        raise TerminalAuthError(SW_MALFORMED, "terminal certificate is not DER X.509") from None
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        cert.verify_directly_issued_by(terminal_ca)
    except (ValueError, TypeError, InvalidSignature):
        raise TerminalAuthError(SW_REJECTED, "terminal certificate not issued by the terminal CA") from None
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise TerminalAuthError(SW_REJECTED, "terminal certificate outside its validity")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise TerminalAuthError(SW_REJECTED, "terminal certificate has no extended key usage") from None
    if METHOD_EKU[method] not in eku:
        raise TerminalAuthError(SW_REJECTED, f"terminal not authorised for {METHODS[method]}")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise TerminalAuthError(SW_REJECTED, "terminal key is not EC P-256")
    try:
        key.verify(signature, signed_message(challenge, method, auth_cert_der), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise TerminalAuthError(SW_REJECTED, "signature does not verify") from None
    return cert
