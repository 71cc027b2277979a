"""Scripted sessions end to end on the whole simulated station: real pcscd and card processes,
the rig on a pty, the MJPEG presenter, the eligibility service over HTTP, and the reference
reader driven only through its control port (drivers/reader.py) and the rig (drivers/rig.py).

One station for the module (``sim_up`` with a private pcscd); the sessions run in order and
each starts from an empty reader.
"""

from __future__ import annotations

import os
import signal
import time
import tomllib
from pathlib import Path

import pytest

from drivers.reader import ReaderNak, open_reader
from sim.eligibility.client import EligibilityClient
from sim.reader.ports import EligibilityUnavailable

pytestmark = pytest.mark.timeout(600)
WAIT_S = 20.0


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    from sim.station import STATION_FILE, StationError, running_station

    state = tmp_path_factory.mktemp("station")
    try:
        with running_station(state, private_pcscd=True, firmware="1.4.0") as path:
            cfg = tomllib.loads(path.read_text())
            cfg["_state"] = state
            yield cfg
    except StationError as exc:
        pytest.fail(f"the simulated station did not start: {exc}")
    assert not (state / "processes.json").exists()
    assert (state / STATION_FILE).exists()


@pytest.fixture(scope="module")
def rig(station):
    from drivers.rig import RigController

    with RigController(station["rig"]["url"], timeout_s=5.0) as r:
        # `sim up` leaves a deck card on the reader (its demo); the sessions start from an empty one
        r.remove_card()
        yield r


@pytest.fixture(scope="module")
def dut(station):
    reader = open_reader(station["dut"]["url"], station["dut"]["adapter"], timeout_s=5.0, connect_timeout_s=20.0)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def eligibility(station):
    from sim.station import read_station_token

    return EligibilityClient(station["eligibility"]["url"], token=read_station_token(station["_state"]))


def persona(station, profile: str) -> dict:
    """The first registered deck card of ``profile``; its placer slot is ``p["_slot"]``."""
    for card in station["cards"]:
        if card["profile"] != profile:
            continue
        path = Path(card["persona"])
        p = tomllib.loads(path.read_text())
        if not p.get("registered_for_insurance", True) or p.get("revoked"):
            continue
        card_dir = Path(p["card_dir"])
        p["_card_dir"] = card_dir if card_dir.is_absolute() else path.parent / card_dir
        p["_slot"] = card["placer_slot"]
        return p
    pytest.fail(f"the station has no registered {profile} card")


def serial_of(p: dict) -> str:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((p["_card_dir"] / "auth.pem").read_bytes())
    return f"{cert.serial_number:X}"


def fresh_session(rig, dut, slot: int):
    """Empty reader, blank display, then the deck card of ``slot`` placed nominally."""
    rig.blank_display()
    rig.remove_card()
    dut.wait_for_screen("idle", WAIT_S)
    dut.clear_events()
    rig.place_card(slot)
    return dut.wait_for_screen("method_select", WAIT_S)


def consent_all_and_finish(dut, rig) -> None:
    dut.wait_for_screen("consent_surgery", WAIT_S)
    dut.press("consent")
    dut.press("decline")
    dut.wait_for_screen("consent_checkup", WAIT_S)
    dut.press("decline_or_under40")
    ev = dut.wait_for_event("eligibility", WAIT_S)
    assert ev.get("result") == "ok", ev.fields
    dut.wait_for_screen("done", WAIT_S)
    rig.remove_card()
    dut.wait_for_screen("idle", WAIT_S)


def last_tx(eligibility, serial: str) -> dict:
    return next(t for t in eligibility.transactions(20) if t["serial"] == serial)


def test_station_file_describes_the_reader(station):
    assert station["dut"]["adapter"] == "reference" and station["dut"]["url"].startswith("serial:/dev/pts/")
    assert station["eligibility"]["url"].startswith("http://127.0.0.1:")
    assert (Path(station["_state"]) / "reader-supply.addr").read_text() == station["dut"]["supply"]


def test_standard_card_by_face(station, rig, dut, eligibility):
    p = persona(station, "standard")
    screen = fresh_session(rig, dut, p["_slot"])
    assert screen.buttons == ("face", "pin", "end") and screen.fields["card"] == "standard"
    dut.press("face")
    dut.wait_for_screen("face_auth", WAIT_S)
    rig.show_subject(p["face_identity"])
    ev = dut.wait_for_event("auth", WAIT_S)
    assert (ev.get("method"), ev.get("result")) == ("face", "ok"), ev.fields
    consent_all_and_finish(dut, rig)
    tx = last_tx(eligibility, serial_of(p))
    assert tx["method"] == "face" and tx["consents"] == {"surgery": "consent", "care": "decline", "checkup": "decline"}


def test_standard_card_by_pin(station, rig, dut, eligibility):
    p = persona(station, "standard")
    fresh_session(rig, dut, p["_slot"])
    dut.press("pin")
    dut.wait_for_screen("pin_entry", WAIT_S)
    wrong = "0000" if p["pin"] != "0000" else "1111"
    dut.enter_pin(wrong)
    ev = dut.wait_for_event("pin", WAIT_S)
    assert (ev.get("result"), ev.get("tries_left")) == ("wrong", "2")
    dut.enter_pin(p["pin"])  # a right PIN resets the counter on the card
    assert dut.wait_for_event("auth", WAIT_S).fields == {"method": "pin", "result": "ok"}
    consent_all_and_finish(dut, rig)
    assert last_tx(eligibility, serial_of(p))["method"] == "pin"


def test_face_auth_card_by_face(station, rig, dut, eligibility):
    p = persona(station, "face-auth")
    screen = fresh_session(rig, dut, p["_slot"])
    assert screen.buttons == ("face", "end") and screen.fields["card"] == "face_auth"
    with pytest.raises(ReaderNak) as err:
        dut.enter_pin("1234")
    assert err.value.code == "PIN_UNAVAILABLE"
    dut.press("face")
    rig.show_subject(p["face_identity"])
    ev = dut.wait_for_event("auth", WAIT_S)
    assert (ev.get("method"), ev.get("result")) == ("face", "ok"), ev.fields
    consent_all_and_finish(dut, rig)
    assert last_tx(eligibility, serial_of(p))["method"] == "face"


def test_face_auth_card_by_visual_check(station, rig, dut, eligibility):
    p, impostor = persona(station, "face-auth"), persona(station, "standard")
    fresh_session(rig, dut, p["_slot"])
    rig.show_subject(impostor["face_identity"])  # someone else in front of the camera
    dut.press("face")
    ev = dut.wait_for_event("auth", WAIT_S)
    assert (ev.get("result"), ev.get("reason")) == ("fail", "no_match"), ev.fields
    dut.wait_for_screen("staff_call", WAIT_S)
    dut.staff_visual_mode()
    st = dut.wait_for_screen("visual_check", WAIT_S)
    assert st.mode == "visual" and st.fields["photo"] == "1"
    dut.staff_confirm()
    assert dut.wait_for_event("auth", WAIT_S).fields == {"method": "visual", "result": "ok"}
    consent_all_and_finish(dut, rig)
    assert dut.screen().mode == "face"  # back to unattended face mode after the session
    assert any(e.kind == "mode" and e.get("reason") == "session_end" for e in dut.history())
    assert last_tx(eligibility, serial_of(p))["method"] == "visual"


def test_registration_by_face_and_not_by_visual_on_1_4_0(station, rig, dut, eligibility):
    p = persona(station, "face-auth")
    serial = serial_of(p)
    stranger = EligibilityClient(station["eligibility"]["url"], token="0" * 64)  # not the station's token
    with pytest.raises(EligibilityUnavailable, match="HTTP 401"):
        stranger.unregister(serial)
    assert eligibility.unregister(serial) == 1
    # visual check on 1.4.0: registration refused with its own error
    fresh_session(rig, dut, p["_slot"])
    dut.staff_visual_mode()
    dut.press("face")
    dut.wait_for_screen("visual_check", WAIT_S)
    dut.staff_confirm()
    err = dut.wait_for_event("error", WAIT_S)
    assert err.get("code") == "registration_unavailable"
    # by face: the registration screen, then the query
    fresh_session(rig, dut, p["_slot"])
    dut.press("face")
    rig.show_subject(p["face_identity"])
    dut.wait_for_screen("registration", WAIT_S)
    dut.press("register")
    ev = dut.wait_for_event("registration", WAIT_S)
    assert (ev.get("result"), ev.get("method")) == ("ok", "face"), ev.fields
    consent_all_and_finish(dut, rig)
    assert any(r["serial"] == serial and r["method"] == "face" for r in eligibility.registrations())


def test_firmware_update_with_a_power_cut(station, rig, dut):
    import base64
    import hashlib

    from sim.reader.firmware import load_image

    rig.remove_card()
    image, sig = load_image(Path(station["dut"]["firmware_dir"]), "1.5.0")
    assert dut.info().version == "1.4.0"
    dut.command("FW BEGIN", f"size={len(image)}", f"sha256={hashlib.sha256(image).hexdigest()}",
                f"sig={base64.b64encode(sig).decode()}")
    for off in range(0, 6 * 4096, 4096):
        dut.command("FW CHUNK", off, base64.b64encode(image[off:off + 4096]).decode())
    cut = time.monotonic()
    rig.power_off()  # the rig's relay cuts the reader's supply mid-upload
    time.sleep(0.3)
    rig.power_on()
    dut.wait_for_boot(cut, WAIT_S)
    assert dut.info().version == "1.4.0"
    assert dut.firmware_status().state == "idle"
    assert dut.firmware_upload(image, sig) == "1.5.0"
    dut.firmware_commit()
    dut.reboot(timeout_s=WAIT_S)
    info = dut.info()
    assert info.version == "1.5.0" and "visual_check_registration" in info.features
    assert dut.firmware_status().previous_version == "1.4.0"


def test_visual_check_registration_on_1_5_0(station, rig, dut, eligibility):
    p = persona(station, "face-auth")
    assert "visual_check_registration" in dut.info().features
    eligibility.unregister(serial_of(p))
    fresh_session(rig, dut, p["_slot"])
    dut.staff_visual_mode()
    dut.press("face")
    dut.wait_for_screen("visual_check", WAIT_S)
    dut.staff_confirm()
    dut.wait_for_screen("registration", WAIT_S)
    dut.press("register")
    ev = dut.wait_for_event("registration", WAIT_S)
    assert (ev.get("result"), ev.get("method")) == ("ok", "visual"), ev.fields
    consent_all_and_finish(dut, rig)


def test_printed_photo_refused_on_1_6_0(station, rig, dut):
    from sim.reader.firmware import load_image

    rig.remove_card()
    assert dut.firmware_upload(*load_image(Path(station["dut"]["firmware_dir"]), "1.6.0")) == "1.6.0"
    dut.firmware_commit()
    dut.reboot(timeout_s=WAIT_S)
    assert "presentation_attack_detection" in dut.info().features
    p = persona(station, "face-auth")
    fresh_session(rig, dut, p["_slot"])
    rig.show_attack(p["face_identity"])  # a print of the card photo held up to the camera
    dut.press("face")
    ev = dut.wait_for_event("auth", WAIT_S)
    assert (ev.get("result"), ev.get("reason")) == ("fail", "presentation_attack"), ev.fields
    dut.wait_for_screen("staff_call", WAIT_S)
    rig.remove_card()
    dut.wait_for_screen("idle", WAIT_S)


def test_status_reports_a_crashed_part(station):
    from sim.station import sim_status

    rows = {r["name"]: r for r in sim_status(station["_state"])}
    assert all(r["alive"] for r in rows.values()), rows
    os.kill(rows["eligibility"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not {r["name"]: r for r in sim_status(station["_state"])}["eligibility"]["alive"]:
            break
        time.sleep(0.05)
    rows = {r["name"]: r for r in sim_status(station["_state"])}
    assert not rows["eligibility"]["alive"] and rows["reader"]["alive"]
