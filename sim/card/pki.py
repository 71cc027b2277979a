"""The simulated station's PKI: a JPKI-like test CA and the terminal authorization CA.

Files under a station's ``pki/`` folder (docs/interfaces.md):

* ``jpki-ca.pem`` / ``jpki-ca.key``: RSA-2048 test CA that issues the user-auth and signing
  certificates (shaped like J-LIS's JPKI CAs: C=JP, O=JPKI, OU=...; marked TEST);
* ``terminal-ca.pem`` / ``terminal-ca.key``: EC P-256 CA the cards trust for terminal
  authorization (drivers/terminal_auth.py);
* ``terminal.pem`` / ``terminal.key``: the reference reader's terminal credential, with the
  extended key usages for both verification methods;
* ``revoked.txt``: serial numbers (hex, one per line, ``#`` comments) that the eligibility
  service treats as revoked.

Keys are unencrypted PEM: this is test material, never real credentials. ``ensure_pki`` is
idempotent: existing files are reused, so keys are generated once per folder.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from drivers.terminal_auth import EKU_FACE_MATCH, EKU_STAFF_VISUAL

log = logging.getLogger(__name__)

JPKI_CA_CERT, JPKI_CA_KEY = "jpki-ca.pem", "jpki-ca.key"
TERMINAL_CA_CERT, TERMINAL_CA_KEY = "terminal-ca.pem", "terminal-ca.key"
TERMINAL_CERT, TERMINAL_KEY = "terminal.pem", "terminal.key"
REVOKED = "revoked.txt"

# JPKI-like policy OIDs (J-LIS arc 1.2.392.200149.8.5) and subject-alt-name attribute OIDs
# carrying the basic four in a signing certificate.
POLICY_USER_AUTH = x509.ObjectIdentifier("1.2.392.200149.8.5.1.3.30")
POLICY_SIGNING = x509.ObjectIdentifier("1.2.392.200149.8.5.1.1.10")
SAN_NAME = x509.ObjectIdentifier("1.2.392.200149.8.5.5.1")
SAN_SEX = x509.ObjectIdentifier("1.2.392.200149.8.5.5.3")
SAN_BIRTH = x509.ObjectIdentifier("1.2.392.200149.8.5.5.4")
SAN_ADDRESS = x509.ObjectIdentifier("1.2.392.200149.8.5.5.5")


class PkiError(RuntimeError):
    """PKI material is missing or unusable; the message names the file."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def save_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def load_key(path: Path):
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot load private key {path}: {exc}") from None


def save_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot load certificate {path}: {exc}") from None


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _name(*parts: tuple) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def _builder(subject: x509.Name, issuer: x509.Name, public_key, not_after: dt.datetime) -> x509.CertificateBuilder:
    now = utcnow()
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(not_after))


def _ca_cert(key, subject: x509.Name, years: int = 20) -> x509.Certificate:
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (_builder(subject, subject, key.public_key(), utcnow() + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))


def make_jpki_ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = new_rsa_key()
    subject = _name((NameOID.COUNTRY_NAME, "JP"), (NameOID.ORGANIZATION_NAME, "JPKI"),
                    (NameOID.ORGANIZATIONAL_UNIT_NAME, "JPKI TEST CA (facehil, not J-LIS)"),
                    (NameOID.ORGANIZATIONAL_UNIT_NAME, "Japan Agency for Local Authority Information Systems"))
    return key, _ca_cert(key, subject)


def make_terminal_ca(label: str = "facehil Terminal Authorization TEST CA") -> tuple[ec.EllipticCurvePrivateKey,
                                                                                       x509.Certificate]:
    key = new_ec_key()
    subject = _name((NameOID.COUNTRY_NAME, "JP"), (NameOID.ORGANIZATION_NAME, "facehil"),
                    (NameOID.COMMON_NAME, label))
    return key, _ca_cert(key, subject)


def issue_terminal_cert(ca_key, ca_cert: x509.Certificate, name: str = "facehil reference reader",
                        ekus: tuple[x509.ObjectIdentifier, ...] = (EKU_FACE_MATCH, EKU_STAFF_VISUAL),
                        days: int = 3650) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_ec_key()
    b = _builder(_name((NameOID.COUNTRY_NAME, "JP"), (NameOID.ORGANIZATION_NAME, "facehil"),
                       (NameOID.COMMON_NAME, name)),
                 ca_cert.subject, key.public_key(), utcnow() + dt.timedelta(days=days))
    b = (b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False))
    if ekus:
        b = b.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


@dataclass
class Pki:
    dir: Path
    jpki_ca_key: rsa.RSAPrivateKey
    jpki_ca: x509.Certificate
    terminal_ca_key: ec.EllipticCurvePrivateKey
    terminal_ca: x509.Certificate
    terminal_key: ec.EllipticCurvePrivateKey
    terminal_cert: x509.Certificate

    @property
    def revoked_path(self) -> Path:
        return self.dir / REVOKED

    def revoked_serials(self) -> set[int]:
        return read_revoked(self.revoked_path)

    def add_revoked(self, serial: int, note: str = "") -> None:
        if serial in self.revoked_serials():
            return
        with self.revoked_path.open("a") as fh:
            fh.write(f"{serial:X}" + (f"  # {note}" if note else "") + "\n")


def read_revoked(path: Path, *, strict: bool = True) -> set[int]:
    """Hex serials, one per line, ``#`` comments. A bad line raises PkiError, or with
    ``strict=False`` (a running service must keep answering) is skipped with a warning."""
    out: set[int] = set()
    if not path.exists():
        return out
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            out.add(int(text, 16))
        except ValueError:
            if strict:
                raise PkiError(f"{path}:{n}: not a hex serial number: {text!r}") from None
            log.warning("%s:%d: not a hex serial, ignored: %r", path, n, text[:40])
    return out


def ensure_pki(folder: Path) -> Pki:
    """Load the PKI under ``folder``, creating whatever is missing. Idempotent."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / JPKI_CA_CERT).exists() or not (folder / JPKI_CA_KEY).exists():
        key, cert = make_jpki_ca()
        save_key(key, folder / JPKI_CA_KEY)
        save_cert(cert, folder / JPKI_CA_CERT)
    if not (folder / TERMINAL_CA_CERT).exists() or not (folder / TERMINAL_CA_KEY).exists():
        key, cert = make_terminal_ca()
        save_key(key, folder / TERMINAL_CA_KEY)
        save_cert(cert, folder / TERMINAL_CA_CERT)
        for stale in (TERMINAL_CERT, TERMINAL_KEY):  # issued by a CA that no longer exists
            (folder / stale).unlink(missing_ok=True)
    if not (folder / TERMINAL_CERT).exists() or not (folder / TERMINAL_KEY).exists():
        key, cert = issue_terminal_cert(load_key(folder / TERMINAL_CA_KEY), load_cert(folder / TERMINAL_CA_CERT))
        save_key(key, folder / TERMINAL_KEY)
        save_cert(cert, folder / TERMINAL_CERT)
    if not (folder / REVOKED).exists():
        (folder / REVOKED).write_text("# user-auth / signing certificate serials (hex) treated as revoked\n")
    return load_pki(folder)


def load_pki(folder: Path) -> Pki:
    folder = Path(folder)
    return Pki(dir=folder,
               jpki_ca_key=load_key(folder / JPKI_CA_KEY), jpki_ca=load_cert(folder / JPKI_CA_CERT),
               terminal_ca_key=load_key(folder / TERMINAL_CA_KEY), terminal_ca=load_cert(folder / TERMINAL_CA_CERT),
               terminal_key=load_key(folder / TERMINAL_KEY), terminal_cert=load_cert(folder / TERMINAL_CERT))


# ---------------------------------------------------------------- JPKI-like end-entity certificates

def _utf8_der(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) < 0x80:
        return b"\x0c" + bytes((len(raw),)) + raw
    return b"\x0c\x82" + len(raw).to_bytes(2, "big") + raw


def _end_entity(ca_key, ca_cert: x509.Certificate, public_key, subject: x509.Name, not_after: dt.datetime,
                usage: x509.KeyUsage, policy: x509.ObjectIdentifier) -> x509.CertificateBuilder:
    not_after = min(not_after, ca_cert.not_valid_after_utc)
    return (_builder(subject, ca_cert.subject, public_key, not_after)
            .add_extension(usage, critical=True)
            .add_extension(x509.CertificatePolicies([x509.PolicyInformation(policy, None)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                           critical=False))


def issue_user_auth_cert(pki: Pki, public_key, holder_id: str, not_after: dt.datetime) -> x509.Certificate:
    """User-authentication certificate: like the real one, it carries no personal data."""
    subject = _name((NameOID.COUNTRY_NAME, "JP"), (NameOID.COMMON_NAME, holder_id[:64]))
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    return _end_entity(pki.jpki_ca_key, pki.jpki_ca, public_key, subject, not_after, usage,
                       POLICY_USER_AUTH).sign(pki.jpki_ca_key, hashes.SHA256())


def issue_signing_cert(pki: Pki, public_key, holder_id: str, not_after: dt.datetime, *, name: str,
                       sex: int, birth: dt.date, address: str, locality: str = "") -> x509.Certificate:
    """Signing certificate: the basic four in subject-alt-name attributes, as JPKI does."""
    parts = [(NameOID.COUNTRY_NAME, "JP")]
    if locality:
        parts.append((NameOID.LOCALITY_NAME, locality))
    parts.append((NameOID.COMMON_NAME, holder_id[:64]))
    usage = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    san = x509.SubjectAlternativeName([
        x509.OtherName(SAN_NAME, _utf8_der(name)),
        x509.OtherName(SAN_SEX, _utf8_der(str(sex))),
        x509.OtherName(SAN_BIRTH, _utf8_der(birth.strftime("%Y%m%d"))),
        x509.OtherName(SAN_ADDRESS, _utf8_der(address)),
    ])
    return (_end_entity(pki.jpki_ca_key, pki.jpki_ca, public_key, _name(*parts), not_after, usage, POLICY_SIGNING)
            .add_extension(san, critical=False).sign(pki.jpki_ca_key, hashes.SHA256()))
