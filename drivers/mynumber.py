"""The My Number Card's applications over any APDU transport.

``MyNumberCard(transport)`` where ``transport.transmit(apdu: bytes) -> Response`` (a PC/SC
``CardConnection``, or ``drivers.apdu.LocalTransport`` over an in-process card OS).

* JPKI AP: token name, certificates, user-auth signature (80 2A), tries left;
* text-input-assist AP: My Number (PIN or check code A), basic four (PIN or check code B);
* card-surface AP: the card-face record with the JPEG 2000 face photo (check code B or A);
* profile detection (standard / face-auth) from what the card answers;
* signature and certificate-chain checks with ``cryptography``.

AIDs, EF numbers and status words follow shared notes mynumber-card.md. Card status words
become ``CardStatusError`` subclasses that carry ``sw``. Secrets are never logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from drivers import tlv
from drivers.apdu import ApduTransport, Response, build_apdu
from drivers.imageinfo import ImageInfo, image_info

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- identifiers

JPKI_AID = bytes.fromhex("D392F000260100000001")
TEXT_ASSIST_AID = bytes.fromhex("D3921000310001010408")
CARD_SURFACE_AID = bytes.fromhex("D3921000310001010402")
JUKI_AID = bytes.fromhex("D3921000310001010401")
COMMON_AID = bytes.fromhex("D3921000310001010100")

APPLICATIONS = {"jpki": JPKI_AID, "text_assist": TEXT_ASSIST_AID, "card_surface": CARD_SURFACE_AID}

# JPKI AP
EF_TOKEN_NAME = 0x0006
EF_CERT_INDEX = 0x0008
EF_AUTH_CERT = 0x000A
EF_AUTH_CA = 0x000B
EF_SIGN_CERT = 0x0001
EF_SIGN_CA = 0x0002
EF_AUTH_KEY = 0x0017
EF_AUTH_PIN = 0x0018
EF_SIGN_KEY = 0x001A
EF_SIGN_PASSWORD = 0x001B
CERTIFICATE_EFS = {"auth": EF_AUTH_CERT, "auth_ca": EF_AUTH_CA, "sign": EF_SIGN_CERT, "sign_ca": EF_SIGN_CA}

# text-input-assist AP
EF_TEXT_PIN = 0x0011
EF_TEXT_CHECK_A = 0x0014
EF_TEXT_CHECK_B = 0x0015
EF_MY_NUMBER = 0x0001
EF_BASIC_FOUR = 0x0002

# card-surface AP
EF_SURFACE_BIRTH_KEY = 0x0011
EF_SURFACE_CHECK_B = 0x0012
EF_SURFACE_CHECK_A = 0x0013
EF_SURFACE_AGE = 0x0001
EF_CARD_FACE = 0x0002

TAG_MY_NUMBER = 0xFF10
TAG_RECORD = 0xFF20

SHORT_CHUNK = 256
EXTENDED_CHUNK = 65533  # vpcd's 2-byte frame length: 65,533 data bytes + SW1 SW2
MAX_OFFSET = 0x7FFF  # READ BINARY with a 15-bit offset in P1-P2


@dataclass(frozen=True)
class Credential:
    """A PIN, password or check code of one application, and its format."""

    name: str
    application: str  # key of APPLICATIONS
    fid: int
    pattern: str  # regex the secret must match (checked before sending, so no try is spent)
    description: str


CREDENTIALS: dict[str, Credential] = {c.name: c for c in (
    Credential("jpki_auth_pin", "jpki", EF_AUTH_PIN, r"\d{4}", "JPKI user-auth PIN (4 digits)"),
    Credential("jpki_sign_password", "jpki", EF_SIGN_PASSWORD, r"[A-Z0-9]{6,16}",
               "JPKI signing password (6-16 A-Z 0-9)"),
    Credential("text_pin", "text_assist", EF_TEXT_PIN, r"\d{4}", "text-assist PIN (4 digits)"),
    Credential("text_check_a", "text_assist", EF_TEXT_CHECK_A, r"\d{12}", "text-assist check code A (My Number)"),
    Credential("text_check_b", "text_assist", EF_TEXT_CHECK_B, r"\d{14}", "text-assist check code B (14 digits)"),
    Credential("surface_check_b", "card_surface", EF_SURFACE_CHECK_B, r"\d{14}", "card-surface check code B"),
    Credential("surface_check_a", "card_surface", EF_SURFACE_CHECK_A, r"\d{12}", "card-surface check code A"),
)}


# --------------------------------------------------------------------------- errors


class CardStatusError(Exception):
    """The card answered a status word other than 9000. ``sw`` is that word."""

    def __init__(self, sw: int, what: str = ""):
        super().__init__(f"{what + ': ' if what else ''}card answered {sw:04X}")
        self.sw = sw
        self.what = what


class WrongPin(CardStatusError):
    """VERIFY failed (63Cx). ``tries_left`` is x; 0 means the credential is now blocked."""

    def __init__(self, sw: int, what: str = ""):
        super().__init__(sw, what)
        self.tries_left = sw & 0x0F


class Blocked(CardStatusError):
    """The credential is blocked (6983 or 6984, card-dependent)."""


class SecurityNotSatisfied(CardStatusError):
    """The file or key needs a credential that has not been presented (6982)."""


class ConditionsNotSatisfied(CardStatusError):
    """Conditions of use not satisfied (6985), e.g. key use without terminal authorization."""


class FileNotFound(CardStatusError):
    """No such application or EF (6A82)."""


class WrongLength(CardStatusError):
    """Wrong length (6700)."""


class WrongParameters(CardStatusError):
    """Incorrect P1-P2 (6A86) or offset outside the EF (6B00)."""


class NotSupported(CardStatusError):
    """Instruction or class not supported (6D00, 6E00)."""


class CardDataError(ValueError):
    """An EF's content is not what the card's format says (bad TLV, no FF20 template...)."""


_SW_CLASSES: dict[int, type[CardStatusError]] = {
    0x6983: Blocked, 0x6984: Blocked, 0x6982: SecurityNotSatisfied, 0x6985: ConditionsNotSatisfied,
    0x6A82: FileNotFound, 0x6700: WrongLength, 0x6A86: WrongParameters, 0x6B00: WrongParameters,
    0x6D00: NotSupported, 0x6E00: NotSupported,
}


def status_error(sw: int, what: str = "") -> CardStatusError:
    """The named error for a status word."""
    if sw & 0xFFF0 == 0x63C0:
        return WrongPin(sw, what)
    return _SW_CLASSES.get(sw, CardStatusError)(sw, what)


def _expect_ok(resp: Response, what: str) -> Response:
    if resp.sw != 0x9000:
        raise status_error(resp.sw, what)
    return resp


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class BasicFour:
    """基本4情報 from the text-input-assist AP."""

    name: str
    address: str
    birth_date: str  # YYYYMMDD
    sex: str  # "1" male, "2" female, "9" not applicable

    @property
    def sex_label(self) -> str:
        return {"1": "male", "2": "female", "9": "not applicable"}.get(self.sex, f"code {self.sex!r}")


@dataclass(frozen=True)
class CardFace:
    """The card-surface AP's card-face record (EF 0002). Images are kept as bytes."""

    birth_date: str
    sex: str
    expiry: str  # YYYYMMDD
    photo: bytes  # JPEG 2000, greyscale
    name_image: bytes = b""
    address_image: bytes = b""
    security_code_image: bytes = b""
    card_public_key: bytes = b""
    signature: bytes = b""
    extra: dict[int, bytes] = field(default_factory=dict)  # tags we do not interpret

    @property
    def photo_info(self) -> ImageInfo:
        return image_info(self.photo)

    def __repr__(self) -> str:  # the photo and images are biometric / personal: sizes only
        return (f"CardFace(expiry={self.expiry!r}, photo={self.photo_info.describe()!r}, "
                f"name_image={len(self.name_image)} B, address_image={len(self.address_image)} B)")


@dataclass(frozen=True)
class CardProfile:
    """What the card's answers say about its profile."""

    name: str  # "standard", "face-auth" or "unknown"
    has_auth_pin: bool
    has_sign_certificate: bool
    has_sign_password: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class TerminalCredential:
    """A reader's terminal-authorization credential (EC P-256 key + certificate from the
    terminal CA) and the verification method it vouches for (face match 1, staff visual 2)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    method: int = 1

    @classmethod
    def load(cls, cert_pem: str | Path, key_pem: str | Path, method: int = 1) -> "TerminalCredential":
        cert = x509.load_pem_x509_certificate(Path(cert_pem).read_bytes())
        key = serialization.load_pem_private_key(Path(key_pem).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_pem}: not an EC private key")
        return cls(cert, key, method)

    def __repr__(self) -> str:
        return f"TerminalCredential(subject={self.certificate.subject.rfc4514_string()!r}, method={self.method})"


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    problems: tuple[str, ...] = ()


_DIGEST_INFO_PREFIX = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def digest_info(data: bytes, hash_name: str = "sha256") -> bytes:
    """DER DigestInfo of ``data`` (what 80 2A 00 80 expects)."""
    if hash_name not in _DIGEST_INFO_PREFIX:
        raise ValueError(f"unsupported hash {hash_name!r} (one of {', '.join(_DIGEST_INFO_PREFIX)})")
    return _DIGEST_INFO_PREFIX[hash_name] + hashlib.new(hash_name, data).digest()


def verify_signature(certificate: x509.Certificate, signature: bytes, data: bytes,
                     hash_name: str = "sha256") -> bool:
    """Does ``signature`` (PKCS#1 v1.5) over ``data`` verify with the certificate's key?"""
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the certificate's key is not RSA")
    try:
        key.verify(signature, data, padding.PKCS1v15(), _HASHES[hash_name]())
    except InvalidSignature:
        return False
    return True


def _issuer_signed(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verify_chain(certificate: x509.Certificate, ca: x509.Certificate,
                 at: dt.datetime | None = None) -> ChainCheck:
    """Check ``certificate`` against its CA: issuer name and signature, validity at ``at``
    (default now), the CA being a self-signed CA certificate."""
    at = at or dt.datetime.now(dt.timezone.utc)
    problems: list[str] = []
    if not _issuer_signed(certificate, ca):
        problems.append("not issued (name and signature) by the given CA")
    for label, c in (("certificate", certificate), ("CA", ca)):
        if not c.not_valid_before_utc <= at <= c.not_valid_after_utc:
            problems.append(f"{label} not valid at {at:%Y-%m-%d %H:%M} UTC "
                            f"({c.not_valid_before_utc:%Y-%m-%d} .. {c.not_valid_after_utc:%Y-%m-%d})")
    try:
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            problems.append("the CA certificate is not a CA (basicConstraints cA=false)")
    except x509.ExtensionNotFound:
        problems.append("the CA certificate has no basicConstraints")
    if not _issuer_signed(ca, ca):
        problems.append("the CA certificate is not self-signed")
    return ChainCheck(not problems, tuple(problems))


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace").rstrip("\x00 ")


# --------------------------------------------------------------------------- the card


class MyNumberCard:
    """The card's applications over ``transport``.

    ``extended=True`` reads EFs with extended-length READ BINARY (one APDU per 64 KB) instead
    of 256-byte short reads; use it only where reader and card support extended APDUs.
    """

    def __init__(self, transport: ApduTransport, *, extended: bool = False):
        self.transport = transport
        self.extended = extended
        self._current_ap: str | None = None
        self._auth_der: bytes | None = None  # the user-auth certificate, read once for terminal auth

    # ---- basic commands

    def _transmit(self, apdu: bytes) -> Response:
        return self.transport.transmit(apdu)

    def select_ap(self, application: str) -> None:
        """SELECT an application by name ("jpki", "text_assist", "card_surface") or AID bytes."""
        aid = APPLICATIONS[application] if isinstance(application, str) else bytes(application)
        resp = self._transmit(build_apdu(0x00, 0xA4, 0x04, 0x0C, aid))
        self._current_ap = None
        _expect_ok(resp, f"SELECT AP {aid.hex().upper()}")
        self._current_ap = application if isinstance(application, str) else aid.hex()

    def select_ef(self, fid: int) -> None:
        resp = self._transmit(build_apdu(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big")))
        _expect_ok(resp, f"SELECT EF {fid:04X}")

    def read_binary(self, offset: int = 0, length: int | None = None, *, extended: bool | None = None) -> bytes:
        """Read the current EF from ``offset``: ``length`` bytes, or to its end when None.

        Short reads go in 256-byte chunks; extended reads in chunks of up to 65,533 bytes.
        The end of the EF is a short answer, 6282, or 6B00 past the end.
        """
        extended = self.extended if extended is None else extended
        chunk = EXTENDED_CHUNK if extended else SHORT_CHUNK
        out = bytearray()
        while length is None or len(out) < length:
            pos = offset + len(out)
            if pos > MAX_OFFSET:
                raise ValueError(f"offset {pos} is beyond READ BINARY's 15-bit range")
            want = chunk if length is None else min(chunk, length - len(out))
            resp = self._transmit(build_apdu(0x00, 0xB0, pos >> 8, pos & 0xFF, le=want, extended=extended))
            if resp.sw == 0x6B00 and out:  # read-to-end landed exactly on the end
                break
            if resp.sw not in (0x9000, 0x6282):
                raise status_error(resp.sw, f"READ BINARY at {pos}")
            out += resp.data
            if resp.sw == 0x6282 or len(resp.data) < want or not resp.data:
                break
        return bytes(out)

    def read_sized(self, fid: int | None = None) -> bytes:
        """Read a TLV- or DER-structured EF whole, its size taken from its own header
        (``30 82 LL LL`` for a certificate, ``FF 20 82 LL LL`` for a record)."""
        if fid is not None:
            self.select_ef(fid)
        head = self.read_binary(0, 8, extended=False)
        try:
            total = tlv.total_size(head)
        except tlv.TlvError as exc:
            raise CardDataError(f"EF {fid or 0:04X} does not start with a TLV header ({exc})") from exc
        if total <= len(head):
            return head[:total]
        return head + self.read_binary(len(head), total - len(head))

    def verify(self, credential: str | Credential, secret: str, *, check_format: bool = True) -> None:
        """Present a PIN / password / check code. Raises WrongPin(tries_left) or Blocked."""
        cred = CREDENTIALS[credential] if isinstance(credential, str) else credential
        if check_format and not re.fullmatch(cred.pattern, secret or ""):
            raise ValueError(f"{cred.description}: wrong format, not sent (no try spent)")
        self.select_ap(cred.application)
        self.select_ef(cred.fid)
        resp = self._transmit(build_apdu(0x00, 0x20, 0x00, 0x80, secret.encode("ascii")))
        _expect_ok(resp, f"VERIFY {cred.name}")
        log.info("VERIFY %s: ok", cred.name)

    def tries_left(self, credential: str | Credential) -> int | None:
        """Tries left, without spending one (VERIFY with no data -> 63Cx).

        0 when blocked (63C0 / 6983 / 6984); None when the card gives no count (9000 after a
        successful VERIFY on some cards, or the credential does not exist: FileNotFound).
        """
        cred = CREDENTIALS[credential] if isinstance(credential, str) else credential
        self.select_ap(cred.application)
        self.select_ef(cred.fid)
        resp = self._transmit(build_apdu(0x00, 0x20, 0x00, 0x80))
        if resp.sw & 0xFFF0 == 0x63C0:
            return resp.sw & 0x0F
        if resp.sw in (0x6983, 0x6984):
            return 0
        if resp.sw == 0x9000:
            return None
        raise status_error(resp.sw, f"tries-left query {cred.name}")

    # ---- JPKI

    def token_name(self) -> str:
        self.select_ap("jpki")
        self.select_ef(EF_TOKEN_NAME)
        return _text(self.read_binary(0, 32).split(b"\x00")[0])

    def certificate_der(self, which: str = "auth") -> bytes:
        """DER of a JPKI certificate: "auth", "auth_ca", "sign" or "sign_ca"."""
        self.select_ap("jpki")
        return self.read_sized(CERTIFICATE_EFS[which])

    def certificate(self, which: str = "auth") -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der(which))

    def sign_auth(self, data: bytes, *, pin: str | None = None, hash_name: str = "sha256",
                  terminal: "TerminalCredential | None" = None) -> bytes:
        """PKCS#1 v1.5 signature of ``data`` with the user-auth key (80 2A 00 80 DigestInfo).

        Standard card: give ``pin``. Face-auth card: give ``terminal``, a terminal credential
        that authorizes this one signature (see ``authorize_terminal``).
        """
        if pin is not None:
            self.verify("jpki_auth_pin", pin)  # selects the JPKI AP
        else:
            self.select_ap("jpki")
        if terminal is not None:
            self.authorize_terminal(terminal)
        self.select_ef(EF_AUTH_KEY)
        resp = self._transmit(build_apdu(0x80, 0x2A, 0x00, 0x80, digest_info(data, hash_name), le=256))
        _expect_ok(resp, "sign with the user-auth key")
        return resp.data

    def verify_auth_chain(self, ca: x509.Certificate | None = None) -> ChainCheck:
        """The user-auth certificate against ``ca`` (default: the CA certificate in EF 000B)."""
        return verify_chain(self.certificate("auth"), ca or self.certificate("auth_ca"))

    def authorize_terminal(self, terminal: "TerminalCredential", *, auth_cert_der: bytes | None = None) -> None:
        """Face-auth card: let this terminal use the user-auth key for ONE signature, after a
        face match or a staff visual check (``terminal.method``). The JPKI AP stays selected.

        The mechanism is facehil's own and lives in drivers/terminal_auth.py; a refusal raises
        the status word's error (e.g. ``CardStatusError`` 6300, ``ConditionsNotSatisfied``).
        """
        from drivers import terminal_auth

        if auth_cert_der is None:
            if self._auth_der is None:
                self._auth_der = self.certificate_der("auth")  # leaves the JPKI AP selected
            auth_cert_der = self._auth_der
        self.select_ap("jpki")
        result = terminal_auth.authorize(self._transmit, terminal.method, terminal.certificate, terminal.key,
                                         auth_cert_der)
        if not result.ok:
            raise status_error(result.sw, "terminal authorization")
        log.info("terminal authorization (%s): granted", terminal_auth.METHODS[terminal.method])

    # ---- text-input-assist AP

    def my_number(self, *, pin: str | None = None, check_a: str | None = None) -> str:
        """The 12-digit My Number (PIN or check code A)."""
        self._open_text_assist(pin=pin, check_a=check_a)
        self.select_ef(EF_MY_NUMBER)
        obj = tlv.find(self.read_sized(), TAG_MY_NUMBER)
        if obj is None:
            raise CardDataError("EF 0001 holds no FF10 My Number object")
        return obj.value.decode("ascii", errors="replace")

    def basic_four(self, *, pin: str | None = None, check_b: str | None = None) -> BasicFour:
        """Name, address, birth date and sex (PIN or check code B)."""
        self._open_text_assist(pin=pin, check_b=check_b)
        self.select_ef(EF_BASIC_FOUR)
        record = self._record(self.read_sized(), "text-assist EF 0002")
        return BasicFour(name=_text(record.get(0xDF22, b"")), address=_text(record.get(0xDF23, b"")),
                         birth_date=_text(record.get(0xDF24, b"")), sex=_text(record.get(0xDF25, b"")))

    def _open_text_assist(self, *, pin: str | None = None, check_a: str | None = None,
                          check_b: str | None = None) -> None:
        if pin is not None:
            self.verify("text_pin", pin)
        elif check_a is not None:
            self.verify("text_check_a", check_a)
        elif check_b is not None:
            self.verify("text_check_b", check_b)
        else:
            self.select_ap("text_assist")

    # ---- card-surface AP

    def card_face(self, *, check_b: str | None = None, check_a: str | None = None) -> CardFace:
        """The card-face record incl. the face photo (check code B, or A)."""
        if check_b is not None:
            self.verify("surface_check_b", check_b)
        elif check_a is not None:
            self.verify("surface_check_a", check_a)
        else:
            self.select_ap("card_surface")
        self.select_ef(EF_CARD_FACE)
        r = self._record(self.read_sized(), "card-surface EF 0002")
        known = {0xDF21, 0xDF22, 0xDF23, 0xDF24, 0xDF25, 0xDF26, 0xDF27, 0xDF28, 0xDF29, 0xDF2A}
        return CardFace(birth_date=_text(r.get(0xDF22, b"")), sex=_text(r.get(0xDF23, b"")),
                        expiry=_text(r.get(0xDF29, b"")), photo=r.get(0xDF27, b""),
                        name_image=r.get(0xDF25, b""), address_image=r.get(0xDF26, b""),
                        security_code_image=r.get(0xDF2A, b""), card_public_key=r.get(0xDF24, b""),
                        signature=r.get(0xDF28, b""), extra={k: v for k, v in r.items() if k not in known})

    @staticmethod
    def _record(data: bytes, what: str) -> dict[int, bytes]:
        try:
            outer = tlv.find(data, TAG_RECORD)
            if outer is None:
                raise tlv.TlvError("no FF20 template")
            return {obj.tag: obj.value for obj in outer.children()}
        except tlv.TlvError as exc:
            raise CardDataError(f"{what} is not a FF20 record ({exc})") from exc

    # ---- profile

    def detect_profile(self) -> CardProfile:
        """Standard or face-auth, from the card's answers (no try is spent).

        Face-auth cards have no PIN and no signing certificate: the user-auth PIN's status
        query does not answer 63Cx and the signing certificate EF is absent.
        """
        reasons = []
        try:
            self.select_ap("jpki")
        except FileNotFound:
            return CardProfile("unknown", False, False, False, ("no JPKI application",))
        has_pin = self._answers_tries("jpki_auth_pin")
        has_pw = self._answers_tries("jpki_sign_password")
        try:
            self.select_ap("jpki")
            self.select_ef(EF_SIGN_CERT)
            has_sign = True
        except FileNotFound:
            has_sign = False
        reasons.append(f"user-auth PIN {'usable' if has_pin else 'blocked or not set'}")
        reasons.append(f"signing certificate {'present' if has_sign else 'absent'}")
        reasons.append(f"signing password {'usable' if has_pw else 'blocked or not set'}")
        # The signing certificate decides (a standard card's PIN may be blocked); the PIN confirms.
        if has_sign:
            name = "standard"
        elif not has_pin:
            name = "face-auth"
        else:
            name = "unknown"
        return CardProfile(name, has_pin, has_sign, has_pw, tuple(reasons))

    def _answers_tries(self, credential: str) -> bool:
        """Is the credential usable: does its status query answer 63Cx with x > 0?
        (63C0 / 6984 mean blocked or never set: a face-auth card has no PIN.)"""
        cred = CREDENTIALS[credential]
        try:
            self.select_ap(cred.application)
            self.select_ef(cred.fid)
        except CardStatusError:
            return False
        sw = self._transmit(build_apdu(0x00, 0x20, 0x00, 0x80)).sw
        return sw & 0xFFF0 == 0x63C0 and sw & 0x0F > 0
