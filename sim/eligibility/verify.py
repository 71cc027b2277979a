"""Certificate and signature checks of the eligibility service, with ``cryptography``.

A user-auth certificate is *valid* when it parses, was issued (name and signature) by the
JPKI CA of the station's ``pki/`` folder, its serial is not in ``revoked.txt``, and today is
within its validity period. The reader proves the card holder by a PKCS#1 v1.5 SHA-256
signature over a fresh challenge with the card's user-auth key.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sim.card.pki import read_revoked

log = logging.getLogger(__name__)

JPKI_CA_FILE = "jpki-ca.pem"
REVOKED_FILE = "revoked.txt"
# cert_status values, in the order they are checked
MALFORMED, UNKNOWN_ISSUER, REVOKED, EXPIRED, NOT_YET_VALID, VALID = (
    "malformed", "unknown_issuer", "revoked", "expired", "not_yet_valid", "valid")


@dataclass(frozen=True)
class CertCheck:
    status: str
    certificate: x509.Certificate | None
    detail: str = ""

    @property
    def serial_hex(self) -> str:
        return f"{self.certificate.serial_number:X}" if self.certificate else ""

    @property
    def issuer(self) -> str:
        return self.certificate.issuer.rfc4514_string() if self.certificate else ""

    @property
    def holder(self) -> str:
        if not self.certificate:
            return ""
        cns = self.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(cns[0].value) if cns else self.certificate.subject.rfc4514_string()


class TrustStore:
    """The JPKI CA and the revocation list, re-read when their files change."""

    def __init__(self, pki_dir: Path):
        self.pki_dir = Path(pki_dir)
        self._ca: x509.Certificate | None = None
        self._ca_mtime = -1.0

    @property
    def ca(self) -> x509.Certificate:
        path = self.pki_dir / JPKI_CA_FILE
        mtime = path.stat().st_mtime
        if self._ca is None or mtime != self._ca_mtime:
            self._ca = x509.load_pem_x509_certificate(path.read_bytes())
            self._ca_mtime = mtime
        return self._ca

    def revoked(self) -> set[int]:
        return read_revoked(self.pki_dir / REVOKED_FILE, strict=False)

    def check(self, certificate_der: bytes, at: dt.datetime | None = None) -> CertCheck:
        at = at or dt.datetime.now(dt.timezone.utc)
        try:
            cert = x509.load_der_x509_certificate(certificate_der)
        except ValueError as exc:
            return CertCheck(MALFORMED, None, str(exc))
        try:
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            return CertCheck(UNKNOWN_ISSUER, cert, f"not issued by the JPKI CA: {exc or type(exc).__name__}")
        if cert.serial_number in self.revoked():
            return CertCheck(REVOKED, cert, "serial is on the revocation list")
        if at > cert.not_valid_after_utc:
            return CertCheck(EXPIRED, cert, f"expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        if at < cert.not_valid_before_utc:
            return CertCheck(NOT_YET_VALID, cert, f"valid from {cert.not_valid_before_utc:%Y-%m-%d}")
        return CertCheck(VALID, cert)


def signature_ok(certificate: x509.Certificate, signature: bytes, data: bytes) -> bool:
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True
