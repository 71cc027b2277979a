"""Firmware update over the control port: refusals (tampered, truncated, downgrade), power cuts
during the update, the update that enables visual-check registration, and every flow again
afterwards as a regression check.

Images come from the station file: ``[dut] firmware_dir`` holds the vendor's signed images as
``<name>-<version>.fw`` with their signatures beside them (``<name>-<version>.fw.sig``);
``[dut] update_to`` (default: the newest image) and ``[dut] downgrade_to`` (default: the oldest
image older than the running version) pick the ones used here.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.reader import ReaderError, ReaderNak
from scenarios.steps import await_event, await_screen, complete_visit, other_person, pick
from scenarios.test_registration import FEATURE, place_unregistered, register_and_finish, visual_check_confirmed

pytestmark = [pytest.mark.flow("firmware_update"), pytest.mark.requires("dut", "firmware_update", "reader_info")]

BOOT_TIMEOUT_S = 30.0
_VERSION = re.compile(r"-(\d+(?:\.\d+)+)\.fw$")


def _vkey(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@dataclass(frozen=True)
class Image:
    version: str
    data: bytes
    signature: bytes


class Images:
    def __init__(self, folder: Path, update_to: str | None, downgrade_to: str | None):
        self.folder = folder
        self.paths = {m.group(1): p for p in sorted(folder.glob("*.fw")) if (m := _VERSION.search(p.name))}
        self.update_to = update_to
        self.downgrade_to = downgrade_to

    def load(self, version: str) -> Image:
        path = self.paths.get(version)
        if path is None or not path.with_name(path.name + ".sig").exists():
            pytest.skip(f"no signed image of version {version} in {self.folder}")
        return Image(version, path.read_bytes(), path.with_name(path.name + ".sig").read_bytes())

    def target(self) -> Image:
        version = self.update_to or max(self.paths, key=_vkey, default=None)
        if version is None:
            pytest.skip(f"no firmware images in {self.folder}")
        return self.load(version)

    def previous(self, version: str) -> Image:
        """The newest image older than ``version``."""
        older = [v for v in self.paths if _vkey(v) < _vkey(version)]
        if not older:
            pytest.skip(f"no image older than {version} in {self.folder}")
        return self.load(max(older, key=_vkey))

    def older_than(self, running: str) -> Image:
        version = self.downgrade_to or min((v for v in self.paths if _vkey(v) < _vkey(running)), key=_vkey,
                                           default=None)
        if version is None:
            pytest.skip(f"no image older than the running {running} in {self.folder}")
        return self.load(version)


@pytest.fixture(scope="module")
def images(station) -> Images:
    extra = station.dut.extra if station.dut else {}
    folder = extra.get("firmware_dir")
    if not folder:
        pytest.skip("the station file names no [dut] firmware_dir with the vendor's signed images")
    path = Path(folder)
    if not path.is_absolute():
        path = (station.path.parent / path).resolve()
    return Images(path, extra.get("update_to"), extra.get("downgrade_to"))


@pytest.fixture
def fw_dut(dut):
    """The reader, with any half-done upload aborted afterwards (the next test starts clean)."""
    yield dut
    abort = getattr(dut, "firmware_abort", None)
    if abort is not None:
        try:
            abort()
        except ReaderError:
            pass


def _refused(dut, image: bytes, signature: bytes, what: str) -> ReaderNak:
    before = dut.info().version
    try:
        version = dut.firmware_upload(image, signature)
    except ReaderNak as nak:
        assert dut.info().version == before, f"a refused {what} changed the running version"
        assert dut.firmware_status().state != "verified", f"a refused {what} is still staged"
        return nak
    raise AssertionError(f"the reader accepted a {what} (it verified as version {version})")


def test_tampered_image_refused(fw_dut, images):
    good = images.target()
    bad = bytearray(good.data)
    bad[len(bad) // 2] ^= 0x5A
    nak = _refused(fw_dut, bytes(bad), good.signature, "tampered image")
    assert nak.code, "the refusal has no error code"


def test_bad_signature_refused(fw_dut, images):
    good = images.target()
    sig = bytearray(good.signature)
    sig[0] ^= 0x01
    _refused(fw_dut, good.data, bytes(sig), "image with a forged signature")


def test_truncated_image_refused(fw_dut, images):
    good = images.target()
    _refused(fw_dut, good.data[: len(good.data) * 2 // 3], good.signature, "truncated image")


def test_downgrade_refused(fw_dut, images):
    running = fw_dut.info().version
    older = images.older_than(running)
    nak = _refused(fw_dut, older.data, older.signature, f"downgrade from {running} to {older.version}")
    assert nak.code, "the refusal has no error code"


def _wait_booted(dut, after_s: float) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        boots = [e for e in dut.history() if e.kind == "boot" and e.host_monotonic_s >= after_s]
        if boots:
            await_screen(dut, "idle", timeout_s=max(1.0, deadline - time.monotonic()))
            return
        time.sleep(0.1)
    raise AssertionError(f"the reader did not boot again within {BOOT_TIMEOUT_S:.0f} s after the power came back")


@pytest.mark.requires("power_relay")
@pytest.mark.parametrize("cut_at", ["upload", "after_commit", "during_reboot"])
def test_power_cut_during_update_still_boots(fw_dut, rig, images, cut_at):
    """A power cut during the upload, right after the commit, or while the new image boots leaves a
    reader that boots a verified version and works."""
    target = images.target()
    if fw_dut.info().version == target.version:  # an earlier cut left the update installed: go back first
        _update(fw_dut, images.previous(target.version), allow_downgrade=True)
    before = fw_dut.info().version
    cut_s = time.monotonic()
    if cut_at == "upload":
        def cut_halfway(done: int, total: int) -> None:
            nonlocal cut_s
            if done * 2 >= total and cut_s < 0:
                cut_s = time.monotonic()
                rig.power_cut(at_ms=0, restore_ms=800)
                deadline = cut_s + 2.0
                while rig.status().power_on and time.monotonic() < deadline:  # the relay acts on its own clock
                    time.sleep(0.01)

        cut_s = -1.0
        with pytest.raises(ReaderError):
            fw_dut.firmware_upload(target.data, target.signature, chunk_size=1024, progress=cut_halfway)
        assert cut_s > 0, "the upload never got halfway"
        allowed = {before}
    else:
        fw_dut.firmware_upload(target.data, target.signature)
        fw_dut.firmware_commit()
        if cut_at == "during_reboot":
            fw_dut.reboot(wait=False)
        cut_s = time.monotonic()
        rig.power_cut(at_ms=100 if cut_at == "during_reboot" else 0, restore_ms=800)
        allowed = {before, target.version}
    _wait_booted(fw_dut, cut_s)
    info = fw_dut.info()
    assert info.version in allowed, f"after a power cut ({cut_at}) the reader runs {info.version}, expected {allowed}"
    assert fw_dut.screen().id == "idle"


def _update(dut, image: Image, allow_downgrade: bool = False) -> None:
    progress: list[tuple[int, int]] = []
    verified = dut.firmware_upload(image.data, image.signature, allow_downgrade=allow_downgrade,
                                   progress=lambda done, total: progress.append((done, total)))
    assert verified == image.version, f"the reader verified version {verified}, the image is {image.version}"
    assert progress and progress[-1][0] == progress[-1][1] == len(image.data), "upload progress did not reach 100%"
    dut.firmware_commit()
    sent_s = time.monotonic()
    dut.reboot(wait=False)
    _wait_booted(dut, sent_s)


@pytest.mark.clause("N7")
def test_update_enables_visual_registration(fw_dut, images, cards, visit):
    target = images.target()
    if fw_dut.info().version != target.version:
        _update(fw_dut, target)
    info = fw_dut.info()
    assert info.version == target.version, f"after the update the reader runs {info.version}, not {target.version}"
    status = fw_dut.firmware_status()
    assert status.active_version == target.version and not status.rolled_back, f"update not committed: {status}"
    if FEATURE not in info.features:
        pytest.skip(f"firmware {info.version} does not claim {FEATURE}")
    v = visit(pick(cards, "face-auth", registered=False, index=-1))  # test_register_by_face takes the first
    place_unregistered(v)
    visual_check_confirmed(v)
    register_and_finish(v, "visual")


# -- every other flow again, on the updated firmware ---------------------------------------------

REGRESSION = ["face_auth_card", "standard_card_face", "standard_card_pin", "visual_fallback", "consent_under40",
              "presentation_attack"]
PAD = "presentation_attack_detection"


@pytest.fixture
def updated(dut, images):
    if dut.info().version != images.target().version:
        pytest.skip("the update did not happen (see test_update_enables_visual_registration)")
    return dut


@pytest.mark.parametrize("flow", REGRESSION)
@pytest.mark.usefixtures("updated")
@pytest.mark.requires("card_placer", "subject_display", "cards")
def test_flows_after_update(cards, visit, flow):
    if flow == "face_auth_card":
        complete_visit(visit(pick(cards, "face-auth", registered=True)), method="face")
    elif flow == "standard_card_face":
        complete_visit(visit(pick(cards, "standard", registered=True)), method="face")
    elif flow == "standard_card_pin":
        complete_visit(visit(pick(cards, "standard", registered=True)), method="pin")
    elif flow == "visual_fallback":
        v = visit(pick(cards, "face-auth", registered=True))
        v.show(other_person(cards, v.card))
        v.place()
        v.choose_face()
        v.staff_visual_check()
        v.dut.staff_reject()
        v.take_card_back()
        assert v.dut.screen().mode == "face", "after the update the reader stays in visual mode"
    elif flow == "consent_under40":
        v = visit(pick(cards, registered=True, over40=False))
        v.show_holder()
        v.place()
        assert v.face_auth().get("result") == "ok"
        v.dut.press("consent")
        await_screen(v.dut, "consent_care")
        v.dut.press("consent")
        await_screen(v.dut, "consent_checkup")
        try:  # N15 allows refusing it (the patient then presses the other button) or passing it on
            v.dut.press("consent")
        except ReaderNak:
            v.dut.press("decline_or_under40")
        await_event(v.dut, "eligibility")
    elif flow == "presentation_attack":
        v = visit(pick(cards, "face-auth", registered=True))
        if PAD not in v.dut.info().features:
            pytest.skip(f"firmware {v.dut.info().version} does not claim {PAD}")
        v.show_attack()  # a printed photo of the card photo held up to the camera
        v.place()
        auth = v.face_auth()
        assert auth.get("result") != "ok", "a printed photo of the card photo passed face authentication"
        assert await_screen(v.dut, "staff_call", "pin_entry").get("id") == "staff_call"
