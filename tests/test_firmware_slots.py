"""Firmware images, A/B slots, refusals and power cuts (sim/reader/firmware.py, slots.py)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sim.reader.firmware import (
    FEATURES_BY_VERSION,
    Manifest,
    build_image,
    ensure_firmware_dir,
    load_image,
    load_public_key,
    parse_image,
    sign_image,
    vendor_key,
)
from sim.reader.slots import FirmwareError, PowerCut, SlotStore


@pytest.fixture(scope="module")
def fwdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("firmware")
    ensure_firmware_dir(d)
    return d


def make_store(root: Path, fwdir: Path, hook=None, **faults) -> SlotStore:
    return SlotStore(root, load_public_key(fwdir / "vendor.pub"), hook=hook, **faults)


def factory(root: Path, fwdir: Path, version: str = "1.4.0", **kw) -> SlotStore:
    store = make_store(root, fwdir, **kw)
    store.provision(*load_image(fwdir, version))
    store.boot()
    return store


def upload(store: SlotStore, image: bytes, sig: bytes, chunk: int = 4096, allow_downgrade: bool = False,
           sha256: str | None = None, stop_at: int | None = None):
    store.begin(len(image), sha256 or hashlib.sha256(image).hexdigest(), base64.b64encode(sig).decode(),
                allow_downgrade)
    for off in range(0, len(image) if stop_at is None else stop_at, chunk):
        store.chunk(off, image[off:off + chunk])
    return store.end()


def test_published_images_carry_their_features(fwdir):
    for version, features in FEATURES_BY_VERSION.items():
        image, sig = load_image(fwdir, version)
        m = parse_image(image)
        assert m.version == version and m.features == features
        assert len(sig) == 64
    assert "visual_check_registration" not in parse_image(load_image(fwdir, "1.4.0")[0]).features
    assert "visual_check_registration" in parse_image(load_image(fwdir, "1.5.0")[0]).features
    with pytest.raises(FileNotFoundError, match="no firmware 9.9.9"):
        load_image(fwdir, "9.9.9")


def test_factory_boot(tmp_path, fwdir):
    store = factory(tmp_path, fwdir)
    assert store.booted.slot == "A" and store.booted.manifest.version == "1.4.0"
    assert store.status()["state"] == "idle"


def test_update_commit_reboot(tmp_path, fwdir):
    store = factory(tmp_path, fwdir)
    image, sig = load_image(fwdir, "1.5.0")
    seen = []
    m = upload(store, image, sig)
    assert m.version == "1.5.0" and store.status()["state"] == "verified"
    assert store.commit() == "B"
    st = store.status()
    assert st["pending_slot"] == "B" and st["active_version"] == "1.4.0"
    rebooted = make_store(tmp_path, fwdir)  # a reboot: a new bootloader from what is on disk
    res = rebooted.boot()
    assert (res.slot, res.manifest.version, res.rolled_back) == ("B", "1.5.0", False)
    st = rebooted.status()
    assert st["previous_version"] == "1.4.0" and st["pending_slot"] is None and st["active_slot"] == "B"
    seen.append(st)
    # and once more, back into slot A
    upload(rebooted, *load_image(fwdir, "1.6.0"))
    assert rebooted.commit() == "A"
    assert make_store(tmp_path, fwdir).boot().manifest.version == "1.6.0"


@pytest.mark.parametrize("how,code", [
    ("bad_signature", "FW_SIGNATURE"),
    ("bad_hash", "FW_HASH"),
    ("truncated", "FW_TRUNCATED"),
    ("downgrade", "FW_DOWNGRADE"),
    ("garbage_image", "FW_FORMAT"),
    ("other_model", "FW_MODEL"),
])
def test_refusals_each_have_their_code(tmp_path, fwdir, how, code):
    store = factory(tmp_path, fwdir)
    image, sig = load_image(fwdir, "1.5.0")
    key = vendor_key(fwdir)
    kw = {}
    if how == "bad_signature":
        sig = sign_image(image, Ed25519PrivateKey.generate())
    elif how == "bad_hash":
        kw["sha256"] = hashlib.sha256(b"other").hexdigest()
    elif how == "truncated":
        kw["stop_at"] = len(image) - 4096
    elif how == "downgrade":
        image, sig = load_image(fwdir, "1.3.0")
    elif how == "garbage_image":
        image = b"MZ not an image" * 100
        sig = sign_image(image, key)
    elif how == "other_model":
        image = build_image(Manifest(version="2.0.0", features=(), model="other-reader"))
        sig = sign_image(image, key)
    with pytest.raises(FirmwareError) as err:
        upload(store, image, sig, **kw)
    assert err.value.code == code
    assert store.status()["last_error"] == code
    with pytest.raises(FirmwareError, match="FW_STATE"):
        store.commit()
    assert make_store(tmp_path, fwdir).boot().manifest.version == "1.4.0"  # nothing changed


def test_downgrade_allowed_explicitly(tmp_path, fwdir):
    store = factory(tmp_path, fwdir, "1.5.0")
    assert upload(store, *load_image(fwdir, "1.4.0"), allow_downgrade=True).version == "1.4.0"
    store.commit()
    assert make_store(tmp_path, fwdir).boot().manifest.version == "1.4.0"


def test_fault_accept_downgrade(tmp_path, fwdir):
    store = factory(tmp_path, fwdir, "1.5.0", accept_downgrade=True)
    assert upload(store, *load_image(fwdir, "1.3.0")).version == "1.3.0"


def test_fault_accept_bad_signature(tmp_path, fwdir):
    store = factory(tmp_path, fwdir, accept_bad_signature=True)
    image = load_image(fwdir, "1.5.0")[0]
    assert upload(store, image, b"\0" * 64).version == "1.5.0"
    store.commit()
    assert make_store(tmp_path, fwdir, accept_bad_signature=True).boot().manifest.version == "1.5.0"
    # the reference bootloader would refuse that slot and fall back
    res = make_store(tmp_path, fwdir).boot()
    assert res.manifest.version == "1.4.0"


def test_protocol_slips(tmp_path, fwdir):
    store = factory(tmp_path, fwdir)
    image, sig = load_image(fwdir, "1.5.0")
    with pytest.raises(FirmwareError, match="FW_STATE"):
        store.chunk(0, image[:10])
    with pytest.raises(FirmwareError, match="FW_ARGS"):
        store.begin(0, "00" * 32, base64.b64encode(sig).decode())
    with pytest.raises(FirmwareError, match="FW_ARGS"):
        store.begin(10, "xyz", base64.b64encode(sig).decode())
    with pytest.raises(FirmwareError, match="FW_ARGS"):
        store.begin(10, "00" * 32, "not base64!")
    store.begin(len(image), hashlib.sha256(image).hexdigest(), base64.b64encode(sig).decode())
    store.chunk(0, image[:100])
    with pytest.raises(FirmwareError) as err:
        store.chunk(50, image[50:150])
    assert err.value.code == "FW_OFFSET" and err.value.fields["expected"] == 100
    store.chunk(100, image[100:])  # an offset slip does not lose the upload
    with pytest.raises(FirmwareError, match="FW_OVERFLOW"):
        store.chunk(len(image), b"x")
    with pytest.raises(FirmwareError, match="FW_STATE"):
        store.chunk(0, b"x")  # the overflow discarded the upload


def test_failed_selftest_rolls_back(tmp_path, fwdir):
    store = factory(tmp_path, fwdir)
    bad = build_image(Manifest(version="1.5.1", features=FEATURES_BY_VERSION["1.5.0"], selftest="fail"))
    upload(store, bad, sign_image(bad, vendor_key(fwdir)))
    store.commit()
    res = make_store(tmp_path, fwdir).boot()
    assert (res.manifest.version, res.rolled_back) == ("1.4.0", True)
    assert res.error.startswith("FW_SELFTEST")
    st = make_store(tmp_path, fwdir).status()
    assert st["rolled_back"] == 1 and st["pending_slot"] is None and st["last_error"].startswith("FW_SELFTEST")


def test_corrupt_active_slot_boots_the_other(tmp_path, fwdir):
    store = factory(tmp_path, fwdir)
    upload(store, *load_image(fwdir, "1.5.0"))
    store.commit()
    make_store(tmp_path, fwdir).boot()  # now B=1.5.0 active, A=1.4.0
    img = tmp_path / "slot-B.img"
    data = bytearray(img.read_bytes())
    data[-1] ^= 0xFF
    img.write_bytes(bytes(data))
    res = make_store(tmp_path, fwdir).boot()
    assert (res.slot, res.manifest.version) == ("A", "1.4.0")


def _record_points(tmp_path, fwdir) -> list[str]:
    points: list[str] = []
    store = factory(tmp_path / "probe", fwdir, hook=points.append)
    points.clear()
    upload(store, *load_image(fwdir, "1.5.0"))
    store.commit()
    make_store(tmp_path / "probe", fwdir, hook=points.append).boot()
    return points


def test_power_cut_points_cover_every_persisting_step(tmp_path, fwdir):
    points = _record_points(tmp_path, fwdir)
    assert {"chunk_written", "part_synced", "image_installed", "signature_installed", "commit:tmp_written",
            "commit:replaced", "trial:tmp_written", "trial:replaced", "confirm:tmp_written",
            "confirm:replaced"} <= set(points)


POINTS = ["chunk_written#1", "chunk_written#6", "chunk_written#12", "part_synced", "image_installed",
          "signature_installed", "commit:tmp_written", "commit:replaced", "trial:tmp_written", "trial:replaced",
          "confirm:tmp_written"]


@pytest.mark.parametrize("point", POINTS)
def test_power_cut_leaves_a_bootable_version(tmp_path, fwdir, point):
    """Cut the power at ``point`` (the n-th time for chunks) during update + reboot, then boot again."""
    name, _, nth = point.partition("#")
    count = {"n": 0}

    def hook(p: str) -> None:
        if p == name:
            count["n"] += 1
            if count["n"] == int(nth or 1):
                raise PowerCut(p)

    store = factory(tmp_path, fwdir)
    store._hook = hook
    with pytest.raises(PowerCut):
        upload(store, *load_image(fwdir, "1.5.0"))
        store.commit()
        make_store(tmp_path, fwdir, hook=hook).boot()
    after = make_store(tmp_path, fwdir)
    res = after.boot()
    before_commit = name in ("chunk_written", "part_synced", "image_installed", "signature_installed",
                             "commit:tmp_written")
    assert res.manifest.version == ("1.4.0" if before_commit else "1.5.0"), res
    assert after.status()["state"] == "idle"  # the volatile upload session is gone
    # a fresh update still works afterwards
    target = "1.6.0"
    upload(after, *load_image(fwdir, target))
    after.commit()
    assert make_store(tmp_path, fwdir).boot().manifest.version == target


def test_power_cut_during_both_trial_boots_rolls_back(tmp_path, fwdir):
    store = factory(tmp_path, fwdir)
    upload(store, *load_image(fwdir, "1.5.0"))
    store.commit()

    def cut_after_trial(p: str) -> None:
        if p == "trial:replaced":
            raise PowerCut(p)

    for _ in range(2):
        with pytest.raises(PowerCut):
            make_store(tmp_path, fwdir, hook=cut_after_trial).boot()
    res = make_store(tmp_path, fwdir).boot()
    assert (res.manifest.version, res.rolled_back) == ("1.4.0", True)
