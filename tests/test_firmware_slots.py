"""Firmware images, A/B slots, refusals and power cuts (sim/reader/firmware.py, slots.py)."""

from __future__ import annotations

import base64
import hashlib
import random
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


# ---------------------------------------------------------------------------- power cuts
# Every scenario: a setup (power stays on), then an action during which the power is cut at
# one persisting step. The steps are not listed here: a recorded run of each action yields
# them (sim/reader/nvstore.py), so a new persisting step becomes a new cut point by itself.

def _store(root: Path, fwdir: Path, hook=None, disk=None) -> SlotStore:
    return SlotStore(root, load_public_key(fwdir / "vendor.pub"), hook=hook, sync=False, disk=disk)


def _power_on(root: Path, fwdir: Path, hook=None, disk=None):
    """What the reader does at power-on (sim/reader/device.py): provision an empty reader, then boot."""
    store = _store(root, fwdir, hook, disk)
    if not store.provisioned():
        store.provision(*load_image(fwdir, "1.4.0"))
    return store, store.boot()


def _update(store: SlotStore, fwdir: Path, version: str = "1.5.0", image_sig=None) -> None:
    upload(store, *(image_sig or load_image(fwdir, version)))
    store.commit()


def _bad_selftest(fwdir: Path) -> tuple[bytes, bytes]:
    bad = build_image(Manifest(version="1.5.1", features=FEATURES_BY_VERSION["1.5.0"], selftest="fail"))
    return bad, sign_image(bad, vendor_key(fwdir))


def _setup_updated(root, fwdir):  # B = 1.5.0 active, A = 1.4.0
    store, _ = _power_on(root, fwdir)
    _update(store, fwdir)
    _power_on(root, fwdir)


def _break_active_b(root, fwdir):
    _setup_updated(root, fwdir)
    img = root / "slot-B.img"
    img.write_bytes(img.read_bytes()[:-1] + b"\x00")


def _lose_boot_record(root, fwdir):
    _setup_updated(root, fwdir)
    (root / "boot.json").write_bytes(b'{"active": "A", "pend')  # damaged outside the update path


def _act_update(root, fwdir, hook, disk):  # upload, commit, reboot into the new image
    store, _ = _power_on(root, fwdir, hook, disk)
    _update(store, fwdir)
    _power_on(root, fwdir, hook, store.nv.observer)


def _act_bad_update(root, fwdir, hook, disk):  # an image whose self-test fails: trial boot, rollback
    store, _ = _power_on(root, fwdir, hook, disk)
    _update(store, fwdir, image_sig=_bad_selftest(fwdir))
    _power_on(root, fwdir, hook, disk)


def _act_abort(root, fwdir, hook, disk):
    store, _ = _power_on(root, fwdir, hook, disk)
    image, sig = load_image(fwdir, "1.5.0")
    store.begin(len(image), hashlib.sha256(image).hexdigest(), base64.b64encode(sig).decode())
    store.chunk(0, image[:8192])
    store.abort()


def _act_boot(root, fwdir, hook, disk):
    _power_on(root, fwdir, hook, disk)


# name: (setup, action, versions a cut may leave, version once the action's last step is durable)
SCENARIOS = {
    "provision": (lambda root, fwdir: None, _act_boot, {"1.4.0"}, "1.4.0"),
    "update": (lambda root, fwdir: _power_on(root, fwdir), _act_update, {"1.4.0", "1.5.0"}, "1.5.0"),
    "rollback": (lambda root, fwdir: _power_on(root, fwdir), _act_bad_update, {"1.4.0"}, "1.4.0"),
    "fallback": (_break_active_b, _act_boot, {"1.4.0"}, "1.4.0"),
    "abort": (_setup_updated, _act_abort, {"1.5.0"}, "1.5.0"),
    "recover": (_lose_boot_record, _act_boot, {"1.5.0"}, "1.5.0"),
}


def _recorded_steps(tmp_path: Path, fwdir: Path, name: str) -> list[str]:
    setup, action, _, _ = SCENARIOS[name]
    root = tmp_path / f"probe-{name}"
    setup(root, fwdir)
    steps: list[str] = []
    action(root, fwdir, steps.append, None)
    return steps


def _numbered(steps: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for s in steps:
        seen[s] = seen.get(s, 0) + 1
        out.append(f"{s}#{seen[s]}")
    return out


def test_slots_persist_only_through_the_nv_store():
    """slots.py changes storage only via NvStore, so the recorded steps are every persisting step."""
    import ast
    import inspect

    import sim.reader.slots as slots

    writes = {"replace", "rename", "unlink", "write_bytes", "write_text", "fsync", "mkdir", "rmdir", "truncate",
              "write_atomic", "fsync_dir", "remove", "touch", "chmod"}
    bad = []
    for node in ast.walk(ast.parse(inspect.getsource(slots))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        via_nv = isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute) and f.value.attr == "nv"
        if name == "open" or (name in writes and not via_nv):
            bad.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not bad, "slots.py persists outside NvStore: " + "; ".join(bad)


def test_power_cut_points_cover_every_persisting_step(tmp_path, fwdir, record_property):
    steps = {name: _recorded_steps(tmp_path, fwdir, name) for name in SCENARIOS}
    phases = {s.split(":")[0] for seq in steps.values() for s in seq}
    assert phases == {"provision", "begin", "upload", "commit", "trial", "confirm", "rollback", "fallback",
                      "discard", "recover"}, phases
    total = sum(len(seq) for seq in steps.values())
    record_property("power_cut_points", total)
    print(f"\nfirmware power-cut points: {total} ({', '.join(f'{k} {len(v)}' for k, v in steps.items())})")
    assert total >= 20


def _cut_and_power_on(tmp_path: Path, fwdir: Path, name: str, point: str, mode: str, seed: int):
    from sim.reader.nvstore import PowerCutDisk

    setup, action, _, _ = SCENARIOS[name]
    root = tmp_path / f"{name}-{mode}-{point.replace(':', '_').replace('#', '_')}"
    setup(root, fwdir)
    seen: dict[str, int] = {}

    def hook(step: str) -> None:
        seen[step] = seen.get(step, 0) + 1
        if f"{step}#{seen[step]}" == point:
            raise PowerCut(point)

    disk = PowerCutDisk()
    with pytest.raises(PowerCut):
        action(root, fwdir, hook, disk)
    damage = disk.crash(mode, random.Random(seed))
    store, res = _power_on(root, fwdir)  # power back: must boot, whatever the cut left
    return store, res, damage


@pytest.mark.parametrize("mode", ["lose", "tear"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_power_cut_at_every_step_leaves_a_bootable_reader(tmp_path, fwdir, name, mode):
    """Cut at each recorded step, lose or tear what was not synced, power on: it boots, an allowed version."""
    _, _, allowed, final = SCENARIOS[name]
    points = _numbered(_recorded_steps(tmp_path, fwdir, name))
    last_durable = max((i for i, p in enumerate(points) if ":.:fsync_dir" in p), default=len(points))
    assert points
    damaged = set()
    for i, point in enumerate(points):
        store, res, damage = _cut_and_power_on(tmp_path, fwdir, name, point, mode, seed=i)
        damaged |= set(damage.values())
        where = f"{name}/{mode} cut after {point} (damage {damage})"
        assert res.manifest.version in allowed, where
        if i >= last_durable:
            assert res.manifest.version == final, where
        assert store.status()["state"] == "idle", where  # the volatile upload session is gone
        if name == "update" and i < points.index(next(p for p in points if p.startswith("commit:boot.json:rename"))):
            assert res.manifest.version == "1.4.0", where  # nothing committed yet
    if name in ("update", "rollback"):  # the cuts did destroy unsynced writes
        assert {"gone" if mode == "lose" else "torn"} <= damaged, damaged
    # and a fresh update still works after the last cut
    _update(store, fwdir, "1.6.0")
    assert _power_on(store.root, fwdir)[1].manifest.version == "1.6.0"


def test_power_cut_during_both_trial_boots_rolls_back(tmp_path, fwdir):
    store = factory(tmp_path, fwdir)
    upload(store, *load_image(fwdir, "1.5.0"))
    store.commit()

    def cut_after_trial(p: str) -> None:
        if p == "trial:.:fsync_dir":
            raise PowerCut(p)

    for _ in range(2):
        with pytest.raises(PowerCut):
            make_store(tmp_path, fwdir, hook=cut_after_trial).boot()
    res = make_store(tmp_path, fwdir).boot()
    assert (res.manifest.version, res.rolled_back) == ("1.4.0", True)


@pytest.mark.parametrize("damage", ["garbage", "empty", "missing", "bad slot name"])
def test_unreadable_boot_record_boots_the_newest_verified_slot(tmp_path, fwdir, damage):
    """Not silently slot A: the newest image that verifies and passes its self-test, reported as FW_BOOT_STATE."""
    _setup_updated(tmp_path, fwdir)  # B = 1.5.0 active, A = 1.4.0
    boot = tmp_path / "boot.json"
    if damage == "missing":
        boot.unlink()
    else:
        boot.write_bytes({"garbage": b"\x00\xff{", "empty": b"", "bad slot name": b'{"active": "C"}'}[damage])
    store = make_store(tmp_path, fwdir)
    res = store.boot()
    assert (res.slot, res.manifest.version) == ("B", "1.5.0")
    assert res.error.startswith("FW_BOOT_STATE") and store.status()["last_error"].startswith("FW_BOOT_STATE")
    # the choice is recorded: the next boot reads it and is quiet
    again = make_store(tmp_path, fwdir).boot()
    assert (again.slot, again.error) == ("B", None)


def test_unreadable_boot_record_prefers_a_slot_that_passes_its_self_test(tmp_path, fwdir):
    store, _ = _power_on(tmp_path, fwdir)
    _update(store, fwdir, image_sig=_bad_selftest(fwdir))  # pending B = 1.5.1, fails its self-test
    (tmp_path / "boot.json").write_bytes(b"not json")
    res = make_store(tmp_path, fwdir).boot()
    assert (res.slot, res.manifest.version) == ("A", "1.4.0")


def test_a_factory_install_cut_short_is_installed_again(tmp_path, fwdir):
    def cut(step: str) -> None:
        if step == "provision:slot-A.img:rename":
            raise PowerCut(step)

    with pytest.raises(PowerCut):
        _power_on(tmp_path, fwdir, hook=cut)
    store = _store(tmp_path, fwdir)
    assert not store.provisioned()  # an image without its signature is not an installed reader
    assert _power_on(tmp_path, fwdir)[1].manifest.version == "1.4.0"
