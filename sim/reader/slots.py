"""A/B firmware slots, the update session and the bootloader of the reference reader.

On disk (the reader's non-volatile storage, ``<state>/``):

* ``slot-A.img`` / ``slot-A.sig``, ``slot-B.img`` / ``slot-B.sig``: the two images;
* ``boot.json``: ``{"active", "pending", "pending_tries", "previous_version", "rolled_back",
  "last_error"}``, replaced atomically;
* ``upload.part``: bytes of an upload in progress (meaningless after a power cut).

The upload session itself is volatile (RAM): a power cut forgets it. Nothing an update does
touches the active slot, and ``boot.json`` changes by one atomic rename only after the new
image is complete and verified, so a power cut at any moment leaves the previous version
bootable. A committed image is *pending*: the next boot tries it (``pending_tries`` times); if
it fails its signature check or self-test, the bootloader rolls back to the active slot.

Every write goes through :class:`sim.reader.nvstore.NvStore`, which calls ``hook(step)`` after
each persisting primitive; tests raise :class:`PowerCut` there to cut the power at that exact
point, and simulate the lost or torn writes a real cut leaves.

A ``boot.json`` that is missing or unreadable while a slot holds an image (storage damaged
outside the update path: the update itself never leaves it so) is not read as "slot A": the
bootloader boots the newest slot whose image verifies and passes its self-test (what a trial
boot would have confirmed), records that choice in a fresh ``boot.json`` and reports it as
``FW_BOOT_STATE`` (docs/decisions.md, hardware.md 6.8). A slot that fails its self-test is
chosen only when no slot passes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sim.reader.firmware import (
    MAX_IMAGE_BYTES,
    MODEL,
    ImageError,
    Manifest,
    parse_image,
    parse_version,
    signature_ok,
)
from sim.reader.nvstore import NvStore, PowerCut, PowerCutDisk

log = logging.getLogger(__name__)

SLOTS = ("A", "B")
TRIAL_BOOTS = 2  # a power cut during the first trial boot gets one more try


__all__ = ["BootError", "BootResult", "BootState", "FirmwareError", "PowerCut", "SlotStore", "other"]
BOOT = "boot.json"
PART = "upload.part"


class FirmwareError(Exception):
    """An update step refused, with its stable error code (hardware.md)."""

    def __init__(self, code: str, message: str, **fields: object):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields = fields


class BootError(RuntimeError):
    """Neither slot holds a bootable image (only if storage was damaged outside the update path)."""


@dataclass
class BootState:
    active: str = "A"
    pending: str | None = None
    pending_tries: int = 0
    previous_version: str | None = None
    rolled_back: bool = False
    last_error: str | None = None


@dataclass(frozen=True)
class BootResult:
    slot: str
    manifest: Manifest
    rolled_back: bool
    error: str | None  # why a pending image was rejected


@dataclass
class Upload:
    size: int
    sha256: str
    signature: bytes
    allow_downgrade: bool
    received: int = 0
    state: str = "receiving"  # receiving | verified | committed
    manifest: Manifest | None = None


def other(slot: str) -> str:
    return "B" if slot == "A" else "A"


def _img(slot: str) -> str:
    return f"slot-{slot}.img"


def _sig(slot: str) -> str:
    return f"slot-{slot}.sig"


class SlotStore:
    def __init__(self, root: Path, trusted_key: Ed25519PublicKey, *, accept_downgrade: bool = False,
                 accept_bad_signature: bool = False, hook: Callable[[str], None] | None = None,
                 sync: bool = True, disk: PowerCutDisk | None = None):
        self.root = root
        self.trusted_key = trusted_key
        self.accept_downgrade = accept_downgrade  # faulty-reader options
        self.accept_bad_signature = accept_bad_signature
        self.nv = NvStore(root, hook, sync=sync, observer=disk)
        self.upload: Upload | None = None
        self.last_error: str | None = None
        self.booted: BootResult | None = None
        self._hasher = hashlib.sha256()

    # -- files --------------------------------------------------------------------------------
    def _img(self, slot: str) -> Path:
        return self.nv.path(_img(slot))

    def _sig(self, slot: str) -> Path:
        return self.nv.path(_sig(slot))

    @property
    def _part(self) -> Path:
        return self.nv.path(PART)

    @property
    def _boot_path(self) -> Path:
        return self.nv.path(BOOT)

    def read_boot_state(self) -> BootState | None:
        """The boot record, or None when it is missing or unreadable."""
        try:
            d = json.loads(self._boot_path.read_bytes())
            st = BootState(**{k: d[k] for k in asdict(BootState()) if k in d})
        except (OSError, ValueError, TypeError):
            return None
        if st.active not in SLOTS or st.pending not in (None, *SLOTS) or not isinstance(st.pending_tries, int):
            return None
        return st

    def _write_boot_state(self, st: BootState, phase: str) -> None:
        self.nv.write_atomic(BOOT, json.dumps(asdict(st), sort_keys=True).encode(), phase)

    def provisioned(self) -> bool:
        """A boot record, or a slot whose image verifies (a factory install cut short is not one)."""
        return self._boot_path.exists() or any(self._verifies(slot) for slot in SLOTS)

    def _verifies(self, slot: str) -> bool:
        try:
            self._load_slot(slot)
        except (FirmwareError, ImageError):
            return False
        return True

    def provision(self, image: bytes, signature: bytes) -> None:
        """Factory install into slot A (only on an empty reader)."""
        if self.provisioned():
            return
        if not self._sig_ok(image, signature):
            raise FirmwareError("FW_SIGNATURE", "factory image signature does not verify")
        parse_image(image)
        self.nv.write_atomic(_img("A"), image, "provision")
        self.nv.write_atomic(_sig("A"), signature, "provision")
        self._write_boot_state(BootState(active="A"), "provision")

    def _sig_ok(self, image: bytes, signature: bytes) -> bool:
        return self.accept_bad_signature or signature_ok(image, signature, self.trusted_key)

    def _load_slot(self, slot: str) -> Manifest:
        """The slot's manifest if its image verifies; raises ImageError / FirmwareError."""
        try:
            image = self._img(slot).read_bytes()
            signature = self._sig(slot).read_bytes()
        except OSError as exc:
            raise FirmwareError("FW_NO_IMAGE", f"slot {slot} is empty: {exc}") from exc
        if not self._sig_ok(image, signature):
            raise FirmwareError("FW_SIGNATURE", f"slot {slot} image signature does not verify")
        return parse_image(image)

    # -- bootloader ---------------------------------------------------------------------------
    def boot(self) -> BootResult:
        """Pick and verify the image to run; rolls a failed pending image back."""
        self.upload = None  # RAM is gone
        st = self.read_boot_state()
        if st is None:
            return self._boot_without_record()
        rejected: str | None = None
        if st.pending:
            if st.pending_tries <= 0:
                rejected = st.last_error or "FW_TRIAL_BOOT: the new image never finished booting"
            else:
                st.pending_tries -= 1
                self._write_boot_state(st, "trial")
                try:
                    manifest = self._load_slot(st.pending)
                    if manifest.selftest != "pass":
                        raise FirmwareError("FW_SELFTEST", f"version {manifest.version} failed its self-test")
                except (FirmwareError, ImageError) as exc:
                    rejected = getattr(exc, "code", "FW_FORMAT") + f": {exc}"
                else:
                    old = self._safe_version(st.active)
                    new = BootState(active=st.pending, previous_version=old)
                    self._write_boot_state(new, "confirm")
                    self.booted = BootResult(st.pending, manifest, False, None)
                    return self.booted
            st = BootState(active=st.active, previous_version=st.previous_version, rolled_back=True,
                           last_error=rejected)
            self._write_boot_state(st, "rollback")
        for slot in (st.active, other(st.active)):  # the other slot is a last resort only
            try:
                manifest = self._load_slot(slot)
            except (FirmwareError, ImageError) as exc:
                log.error("slot %s does not boot: %s", slot, exc)
                continue
            if slot != st.active:
                self._write_boot_state(BootState(active=slot, rolled_back=True, last_error=f"slot {st.active} broken"),
                                       "fallback")
            self.booted = BootResult(slot, manifest, st.rolled_back, rejected)
            return self.booted
        raise BootError(f"no bootable firmware in {self.root}")

    def _boot_without_record(self) -> BootResult:
        """boot.json lost or unreadable: the newest slot that verifies and passes its self-test."""
        candidates = []
        for slot in SLOTS:
            try:
                manifest = self._load_slot(slot)
            except (FirmwareError, ImageError) as exc:
                log.error("slot %s does not boot: %s", slot, exc)
                continue
            candidates.append((manifest.selftest == "pass", parse_version(manifest.version), slot, manifest))
        if not candidates:
            raise BootError(f"no bootable firmware in {self.root} and no readable boot record")
        _, _, slot, manifest = max(candidates)
        why = (f"FW_BOOT_STATE: boot record missing or unreadable; booted slot {slot} ({manifest.version}), "
               "the newest image that verifies and passes its self-test")
        log.error("%s", why)
        self._write_boot_state(BootState(active=slot, last_error=why), "recover")
        self.booted = BootResult(slot, manifest, False, why)
        return self.booted

    def _safe_version(self, slot: str) -> str | None:
        try:
            return parse_image(self._img(slot).read_bytes()).version
        except (OSError, ImageError):
            return None

    # -- update session -----------------------------------------------------------------------
    def _fail(self, code: str, message: str, **fields: object) -> FirmwareError:
        self.last_error = code
        if self.upload is not None and code not in ("FW_OFFSET", "FW_STATE", "FW_ARGS"):
            self.upload = None  # a refused image is gone; offset slips may be retried
            self._discard_part()
        return FirmwareError(code, message, **fields)

    def _discard_part(self) -> None:
        self.nv.unlink(PART, "discard")

    def begin(self, size: int, sha256_hex: str, signature_b64: str, allow_downgrade: bool = False) -> None:
        if not 0 < size <= MAX_IMAGE_BYTES:
            raise self._fail("FW_ARGS", f"size must be 1..{MAX_IMAGE_BYTES} bytes, got {size}")
        if len(sha256_hex) != 64 or any(c not in "0123456789abcdef" for c in sha256_hex.lower()):
            raise self._fail("FW_ARGS", "sha256 must be 64 hex digits")
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except ValueError as exc:
            raise self._fail("FW_ARGS", f"signature is not base64: {exc}") from exc
        self.upload = None
        self._discard_part()
        self.nv.create(PART, b"", "begin")
        self._hasher = hashlib.sha256()
        self.upload = Upload(size=size, sha256=sha256_hex.lower(), signature=signature, allow_downgrade=allow_downgrade)
        self.last_error = None

    def chunk(self, offset: int, data: bytes) -> int:
        up = self.upload
        if up is None or up.state != "receiving":
            raise self._fail("FW_STATE", "no upload in progress: send FW BEGIN first")
        if offset != up.received:
            raise self._fail("FW_OFFSET", f"expected offset {up.received}, got {offset}", expected=up.received)
        if up.received + len(data) > up.size:
            raise self._fail("FW_OVERFLOW", f"chunk ends at {up.received + len(data)}, image size is {up.size}")
        self.nv.append(PART, data, "upload")
        self._hasher.update(data)
        up.received += len(data)
        return up.received

    def end(self) -> Manifest:
        up = self.upload
        if up is None or up.state != "receiving":
            raise self._fail("FW_STATE", "no upload in progress")
        if up.received < up.size:
            raise self._fail("FW_TRUNCATED", f"received {up.received} of {up.size} bytes", received=up.received)
        if self._hasher.hexdigest() != up.sha256:
            raise self._fail("FW_HASH", "SHA-256 of the received image does not match the announced hash")
        image = self._part.read_bytes()
        if hashlib.sha256(image).hexdigest() != up.sha256:  # storage went bad under us
            raise self._fail("FW_HASH", "SHA-256 of the stored image does not match")
        if not self._sig_ok(image, up.signature):
            raise self._fail("FW_SIGNATURE", "the image signature does not verify with the vendor key")
        try:
            manifest = parse_image(image)
        except ImageError as exc:
            raise self._fail("FW_FORMAT", str(exc)) from exc
        if manifest.model != MODEL:
            raise self._fail("FW_MODEL", f"image is for model {manifest.model!r}, this reader is {MODEL!r}")
        current = self.booted.manifest.version if self.booted else None
        if (current and parse_version(manifest.version) < parse_version(current)
                and not (up.allow_downgrade or self.accept_downgrade)):
            raise self._fail("FW_DOWNGRADE", f"{manifest.version} is older than the running {current}; "
                                             "send allow_downgrade=1 to install it anyway", current=current)
        up.state = "verified"
        up.manifest = manifest
        return manifest

    def commit(self) -> str:
        """Install the verified upload into the inactive slot and mark it pending; returns the slot."""
        up = self.upload
        if up is None or up.state != "verified":
            raise self._fail("FW_STATE", "nothing verified to commit: FW END must succeed first")
        st = self.read_boot_state()
        if st is None:
            raise self._fail("FW_BOOT_STATE", "the boot record is unreadable: reboot before updating")
        target = other(st.active)
        self.nv.fsync(PART, "commit")
        self.nv.rename(PART, _img(target), "commit")
        self.nv.fsync_dir("commit")
        self.nv.write_atomic(_sig(target), up.signature, "commit")
        st = BootState(active=st.active, pending=target, pending_tries=TRIAL_BOOTS,
                       previous_version=st.previous_version)
        self._write_boot_state(st, "commit")
        up.state = "committed"
        return target

    def abort(self) -> None:
        self.upload = None
        self._discard_part()

    def status(self) -> dict[str, object]:
        st = self.read_boot_state() or BootState(active=self.booted.slot if self.booted else "A",
                                                 last_error="FW_BOOT_STATE: the boot record is unreadable")
        up = self.upload
        return {
            "state": up.state if up else ("failed" if self.last_error else "idle"),
            "received": up.received if up else 0,
            "size": up.size if up else 0,
            "version": up.manifest.version if up and up.manifest else None,
            "active_slot": self.booted.slot if self.booted else st.active,
            "active_version": self.booted.manifest.version if self.booted else self._safe_version(st.active),
            "pending_slot": st.pending,
            "previous_version": st.previous_version,
            "rolled_back": int(st.rolled_back),
            "last_error": self.last_error or st.last_error,
        }
