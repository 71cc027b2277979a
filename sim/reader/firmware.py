"""Firmware images of the reference reader: format, versions, features, Ed25519 vendor signatures.

An image is ``MAGIC`` + one line of JSON (the manifest) + ``\\n`` + payload bytes. The vendor
signs the whole image with Ed25519; the signature travels beside it (``<image>.sig``, 64 bytes).
The simulated reader runs the same Python code for every version: the manifest's feature list
is what changes its behaviour.

A firmware folder (``ensure_firmware_dir``) holds the vendor key pair (``vendor.key``,
``vendor.pub``, PEM) and one signed image per published version (``facehil-ref-<v>.fw`` and
``.fw.sig``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

MAGIC = b"FACEHIL-FW1\n"
MODEL = "facehil-ref"
MAX_IMAGE_BYTES = 4 * 1024 * 1024
PAYLOAD_BYTES = 48 * 1024  # stands in for the application code: makes the upload a real chunked transfer
BASE_FEATURES = ("face_auth", "pin", "visual_check", "consent", "registration")
FEATURES_BY_VERSION: dict[str, tuple[str, ...]] = {
    "1.3.0": BASE_FEATURES,
    "1.4.0": BASE_FEATURES,
    "1.5.0": BASE_FEATURES + ("visual_check_registration",),
    "1.6.0": BASE_FEATURES + ("visual_check_registration", "presentation_attack_detection"),
}
DEFAULT_VERSION = "1.4.0"


class ImageError(ValueError):
    """An image that is not a well-formed reference firmware image."""


@dataclass(frozen=True)
class Manifest:
    version: str
    features: tuple[str, ...]
    model: str = MODEL
    selftest: str = "pass"  # "fail" makes a trial boot fail (to exercise the rollback)
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["features"] = list(self.features)
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


def parse_version(version: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError as exc:
        raise ImageError(f"bad version {version!r}: expected numbers separated by dots") from exc
    if not parts or any(p < 0 for p in parts):
        raise ImageError(f"bad version {version!r}")
    return parts


def build_image(manifest: Manifest, payload: bytes | None = None) -> bytes:
    if payload is None:
        payload = _payload_for(manifest.version)
    return MAGIC + manifest.to_json() + b"\n" + payload


def _payload_for(version: str, size: int = PAYLOAD_BYTES) -> bytes:
    """Deterministic filler bytes (a SHA-256 chain), different per version."""
    out = bytearray()
    block = hashlib.sha256(f"facehil-ref {version}".encode()).digest()
    while len(out) < size:
        out.extend(block)
        block = hashlib.sha256(block).digest()
    return bytes(out[:size])


def parse_image(image: bytes) -> Manifest:
    if not image.startswith(MAGIC):
        raise ImageError("not a facehil firmware image (bad magic)")
    end = image.find(b"\n", len(MAGIC))
    if end < 0:
        raise ImageError("manifest line not terminated")
    try:
        d = json.loads(image[len(MAGIC):end])
        manifest = Manifest(version=str(d["version"]), features=tuple(str(f) for f in d["features"]),
                            model=str(d.get("model", "")), selftest=str(d.get("selftest", "pass")),
                            notes=str(d.get("notes", "")), extra=dict(d.get("extra", {})))
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"bad manifest: {exc}") from exc
    parse_version(manifest.version)
    return manifest


def sign_image(image: bytes, key: Ed25519PrivateKey) -> bytes:
    return key.sign(image)


def signature_ok(image: bytes, signature: bytes, key: Ed25519PublicKey) -> bool:
    try:
        key.verify(signature, image)
    except (InvalidSignature, ValueError):
        return False
    return True


# -- keys and the firmware folder ---------------------------------------------------------------

def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ImageError(f"{path}: not an Ed25519 public key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ImageError(f"{path}: not an Ed25519 private key")
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_atomic(path: Path, data: bytes) -> None:
    """Write-to-temp, fsync, rename: a reader of ``path`` sees the old or the new bytes, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def vendor_key(firmware_dir: Path) -> Ed25519PrivateKey:
    """The vendor's signing key in ``firmware_dir`` (created once)."""
    firmware_dir.mkdir(parents=True, exist_ok=True)
    key_path = firmware_dir / "vendor.key"
    if key_path.exists():
        return load_private_key(key_path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_atomic(key_path, pem)
    os.chmod(key_path, 0o600)
    write_atomic(firmware_dir / "vendor.pub", public_pem(key.public_key()))
    return key


def image_path(firmware_dir: Path, version: str) -> Path:
    return firmware_dir / f"{MODEL}-{version}.fw"


def ensure_firmware_dir(firmware_dir: Path, versions: tuple[str, ...] = tuple(FEATURES_BY_VERSION)) -> dict[str, Path]:
    """Vendor key plus one signed image per version (existing ones are kept)."""
    key = vendor_key(firmware_dir)
    out = {}
    for version in versions:
        path = image_path(firmware_dir, version)
        sig_path = path.with_name(path.name + ".sig")
        if not (path.exists() and sig_path.exists()):
            image = build_image(Manifest(version=version, features=FEATURES_BY_VERSION[version]))
            write_atomic(path, image)
            write_atomic(sig_path, sign_image(image, key))
        out[version] = path
    return out


def load_image(firmware_dir: Path, version: str) -> tuple[bytes, bytes]:
    """(image, signature) of a published version in ``firmware_dir``."""
    path = image_path(firmware_dir, version)
    sig_path = path.with_name(path.name + ".sig")
    if not path.exists() or not sig_path.exists():
        known = sorted(p.name for p in firmware_dir.glob(f"{MODEL}-*.fw"))
        raise FileNotFoundError(f"no firmware {version} in {firmware_dir} (have: {', '.join(known) or 'none'})")
    return path.read_bytes(), sig_path.read_bytes()
