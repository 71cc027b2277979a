"""Card issuance (personalisation): keys, certificates and the signed card-surface records.

What J-LIS writes into a chip at issuance we write into a *card folder* (``persona.card_dir``):

* ``auth.key`` / ``auth.pem``: RSA-2048 user-auth key and certificate (both profiles);
* ``sign.key`` / ``sign.pem``: RSA-2048 signing key and certificate (standard only);
* ``face.jp2``, ``name.png``, ``address.png``, ``security-code.png``: card-surface images;
* ``card-face.png``: the printed front of the card, amendment field (追記欄) included (not in
  the chip: what a camera or a person sees; ``switch_profile`` redraws it);
* ``surface-0001.bin``, ``surface-0002.bin``: the card-surface AP's birth and card-face
  records, signed by the test CA key (see ``surface_records``);
* ``issued.json``: a fingerprint of the persona and CA it was issued from. When the persona
  or the CA changes, the card is issued again (keys are kept; certificates are re-issued).

Card-surface record formats (our reading of the public tools; two-byte private tags, BER
lengths; DF21 holds the 2-byte file offset of each following element):

* 0001 ``FF10 { DF11 birth YYYYMMDD, DF12 signer public key (SPKI DER), DF13 signature }``
* 0002 ``FF20 { DF21 offsets, DF22 birth YYYYMMDD, DF23 sex, DF24 signer public key,
  DF25 name PNG, DF26 address PNG, DF27 face JP2, DF28 signature, DF29 expiry YYYYMMDD,
  DF2A security-code PNG }``

Signatures are RSA PKCS#1 v1.5 / SHA-256 by the JPKI test CA key over the concatenated
TLVs they follow (0001: DF11; 0002: DF22..DF27).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sim.card.persona import Persona
from sim.card.pki import (Pki, der, ensure_pki, issue_signing_cert, issue_user_auth_cert, load_cert, load_key,
                          new_rsa_key, save_cert, save_key)
from sim.card.tlv import record_with_offsets, tlv

log = logging.getLogger(__name__)

ISSUE_FORMAT = 1


class IssueError(RuntimeError):
    """A card could not be issued; the message names the persona and the missing part."""


@dataclass
class CardMaterial:
    auth_key: rsa.RSAPrivateKey
    auth_cert: x509.Certificate
    sign_key: rsa.RSAPrivateKey | None
    sign_cert: x509.Certificate | None
    jpki_ca: x509.Certificate
    terminal_ca: x509.Certificate
    face_jp2: bytes
    surface_birth: bytes
    surface_face: bytes


def _fingerprint(persona: Persona, pki: Pki) -> str:
    face_sig = str(persona.face_image) if persona.face_image else None
    doc = {
        "format": ISSUE_FORMAT, "profile": persona.profile, "name": persona.name, "address": persona.address,
        "name_roman": persona.name_roman, "address_roman": persona.address_roman,
        "birth": persona.birth_date.isoformat(), "sex": persona.sex, "my_number": persona.my_number,
        "expiry": persona.expiry.isoformat(), "security_code": persona.security_code, "face": face_sig,
        "revoked": persona.revoked, "ca": der(pki.jpki_ca).hex()[-64:],
        "amendments": [[a.text, a.struck] for a in persona.amendments],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _signed(signer: rsa.RSAPrivateKey, data: bytes) -> bytes:
    return signer.sign(data, padding.PKCS1v15(), hashes.SHA256())


def surface_records(persona: Persona, signer: rsa.RSAPrivateKey, face_jp2: bytes, name_png: bytes,
                    address_png: bytes, security_png: bytes) -> tuple[bytes, bytes]:
    spki = signer.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    birth = persona.birth_date.strftime("%Y%m%d").encode()
    birth_tlv = tlv(0xDF11, birth)
    record_0001 = tlv(0xFF10, birth_tlv + tlv(0xDF12, spki) + tlv(0xDF13, _signed(signer, birth_tlv)))
    signed_items = [(0xDF22, birth), (0xDF23, str(persona.sex).encode()), (0xDF24, spki),
                    (0xDF25, name_png), (0xDF26, address_png), (0xDF27, face_jp2)]
    signature = _signed(signer, b"".join(tlv(t, v) for t, v in signed_items))
    items = signed_items + [(0xDF28, signature), (0xDF29, persona.expiry.strftime("%Y%m%d").encode()),
                            (0xDF2A, security_png)]
    return record_0001, record_with_offsets(0xFF20, 0xDF21, items)


def _cert_not_after(persona: Persona) -> dt.datetime:
    # JPKI certificates end on the card's expiry at the latest (5 years for user-auth).
    expiry = dt.datetime.combine(persona.expiry, dt.time(23, 59, 59), tzinfo=dt.timezone.utc)
    return min(expiry, dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=5 * 365))


def _key(path: Path) -> rsa.RSAPrivateKey:
    if path.exists():
        return load_key(path)
    key = new_rsa_key()
    save_key(key, path)
    return key


def _holder_id() -> str:
    return secrets.token_hex(10).upper()


def issue_card(persona: Persona, pki: Pki) -> None:
    """Write (or rewrite) the persona's card folder."""
    folder = persona.card_dir
    if folder is None:
        raise IssueError(f"persona {persona.id}: no card_dir to issue the card into")
    folder.mkdir(parents=True, exist_ok=True)
    not_after = _cert_not_after(persona)
    auth_key = _key(folder / "auth.key")
    auth_cert = issue_user_auth_cert(pki, auth_key.public_key(), _holder_id(), not_after)
    save_cert(auth_cert, folder / "auth.pem")
    if persona.face_auth:
        for stale in ("sign.key", "sign.pem"):
            (folder / stale).unlink(missing_ok=True)
    else:
        sign_key = _key(folder / "sign.key")
        sign_cert = issue_signing_cert(pki, sign_key.public_key(), _holder_id(), not_after,
                                       name=persona.name, sex=persona.sex, birth=persona.birth_date,
                                       address=persona.address)
        save_cert(sign_cert, folder / "sign.pem")
        if persona.revoked:
            pki.add_revoked(sign_cert.serial_number, f"{persona.id} signing")
    if persona.revoked:
        pki.add_revoked(auth_cert.serial_number, f"{persona.id} user-auth")
    if persona.face_image is None:
        raise IssueError(f"persona {persona.id}: key 'face_image' is needed to issue a card")
    from sim.card import images  # OpenCV and Pillow: only needed when issuing

    face_jp2 = images.face_photo_jp2(persona.face_image)
    name_png = images.text_png(persona.name, persona.name_roman)
    address_png = images.text_png(persona.address, persona.address_roman)
    security_png = images.text_png(persona.security_code)
    for fname, data in (("face.jp2", face_jp2), ("name.png", name_png), ("address.png", address_png),
                        ("security-code.png", security_png)):
        (folder / fname).write_bytes(data)
    write_card_face(persona, face_jp2)
    rec1, rec2 = surface_records(persona, pki.jpki_ca_key, face_jp2, name_png, address_png, security_png)
    (folder / "surface-0001.bin").write_bytes(rec1)
    (folder / "surface-0002.bin").write_bytes(rec2)
    (folder / "issued.json").write_text(json.dumps({"fingerprint": _fingerprint(persona, pki),
                                                    "auth_serial": f"{auth_cert.serial_number:X}"}, indent=1))
    log.info("issued card for persona %s in %s", persona.id, folder)


def write_card_face(persona: Persona, face_jp2: bytes | None = None) -> None:
    """Draw ``card-face.png`` (skipped, with a warning, when no CJK font is installed)."""
    from sim.card import images

    folder = persona.card_dir
    if face_jp2 is None:
        face_jp2 = (folder / "face.jp2").read_bytes() if (folder / "face.jp2").exists() else None
    b, e = persona.birth_date, persona.expiry
    try:
        png = images.card_face_png(
            name=persona.name, address=persona.address, birth=f"{b.year}年{b.month}月{b.day}日生",
            sex={1: "男", 2: "女"}.get(persona.sex, "－"), expiry=f"{e.year}年{e.month:02d}月{e.day:02d}日まで有効",
            security_code=persona.security_code, amendments=[(a.text, a.struck) for a in persona.amendments],
            face_jp2=face_jp2)
    except images.ImageError as exc:
        log.warning("persona %s: card face not drawn: %s", persona.id, exc)
        (folder / "card-face.png").unlink(missing_ok=True)
        return
    (folder / "card-face.png").write_bytes(png)


def load_material(persona: Persona) -> CardMaterial:
    """The persona's card material, issuing the card first if it is missing or out of date."""
    if persona.card_dir is None or persona.pki_dir is None:
        raise IssueError(f"persona {persona.id}: keys 'card_dir' and 'pki_dir' are needed to serve a card")
    pki = ensure_pki(persona.pki_dir)
    folder = persona.card_dir
    marker = folder / "issued.json"
    current = None
    if marker.exists():
        try:
            current = json.loads(marker.read_text()).get("fingerprint")
        except ValueError:
            current = None
    if current != _fingerprint(persona, pki):
        issue_card(persona, pki)
    sign_key = sign_cert = None
    if not persona.face_auth:
        sign_key, sign_cert = load_key(folder / "sign.key"), load_cert(folder / "sign.pem")
    return CardMaterial(auth_key=load_key(folder / "auth.key"), auth_cert=load_cert(folder / "auth.pem"),
                        sign_key=sign_key, sign_cert=sign_cert, jpki_ca=pki.jpki_ca, terminal_ca=pki.terminal_ca,
                        face_jp2=(folder / "face.jp2").read_bytes(),
                        surface_birth=(folder / "surface-0001.bin").read_bytes(),
                        surface_face=(folder / "surface-0002.bin").read_bytes())
