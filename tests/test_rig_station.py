"""`facehil sim up` includes the rig controller and the subject presenter, wired to the cards:
the station file it writes loads with harness.config and drives them through the drivers."""

from __future__ import annotations

import socket

import pytest

from drivers.camera import OpenCVCamera
from drivers.rig import CardPose, RigController
from harness.config import load_station
from harness.facedata import list_identities, resolve_faces
from sim import camera_marker
from sim.card.control import CardControl
from sim.card.control import ControlError
from sim.station import read_station_token, running_station, sim_status

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("rig-station") / "sim"
    with running_station(state_dir, private_pcscd=True) as path:
        yield load_station(path)


def test_sim_up_runs_rig_and_camera_and_they_drive_the_station(station):
    names = {p["name"] for p in sim_status(station.station.state_dir) if p["alive"]}
    assert {"rig", "camera"} <= names
    assert station.rig.url.scheme == "serial" and station.camera.url.scheme == "http"
    slots = {c.placer_slot: c for c in station.cards}
    token = read_station_token(station.station.state_dir)  # the station's card control ports require it
    with RigController(station.rig.url.serial_url) as rig:
        assert set(rig.info.slots) == set(slots)
        demo = rig.status().card_slot  # `sim up` leaves its first registered standard card on the reader
        assert demo is not None and slots[demo].profile == "standard"
        assert CardControl.from_address(slots[demo].control, token).status()["inserted"] == "1"
        ref = station.extra["pcsc"]["reference_card"]  # in the reference reader, not in the placer
        assert ref["slot"] == 1 and ref["id"] not in {c.id for c in station.cards}
        assert CardControl.from_address(ref["control"], token).status()["inserted"] == "1"
        target = max(slots)
        rig.place_card(target, CardPose.nominal(), 2000)
        st = CardControl.from_address(slots[target].control, token).status()
        assert (st["inserted"], st["coupling"]) == ("1", "present")
        for slot, card in slots.items():
            if slot != target:  # one placer, one reader: the other deck cards are off it
                assert CardControl.from_address(card.control, token).status()["inserted"] == "0"
        who = list_identities(resolve_faces(station.faces.dataset))[0].name
        rig.show_subject(who)
        with OpenCVCamera(station.camera.source) as cam:
            frame = cam.read(timeout_s=10)
            assert (frame.width, frame.height) == (640, 480) and camera_marker.read(frame.image) is not None
            rig.blank_display()
            while frame.image[16:].mean() > 3:  # the display goes dark in the stream
                frame = cam.read(timeout_s=10)
        rig.remove_card(2000)
        assert CardControl.from_address(slots[target].control, token).status()["inserted"] == "0"


def test_the_rig_sees_and_touches_the_readers_screen(station):
    """Issue 13: `sim up` gives the reader a face: the screen camera shows the bezel markers, and
    the rig's finger (TAP, through its hidden mounting error) presses a button the reader acts on.
    Before the power relay test: a power cycle during the reader's first boot can leave it dark
    (sim/reader/hw.py CardWatch restarts its threads)."""
    import json
    import time
    import urllib.request

    import cv2

    from sim.finger import Mounting
    from sim.fixture import FIXTURE
    from sim.reader.display import button_rects

    screen, finger = station.extra["screen"], station.extra["rig"]["finger"]
    assert finger["protocol"] == "facehil" and finger["grbl"].startswith("serial:")
    panel = station.dut.extra["panel"].removesuffix("/stream.mjpg")

    def panel_screen() -> str:  # ground truth from the panel (a host under test reads the camera)
        with urllib.request.urlopen(panel + "/snapshot.jpg", timeout=5) as resp:
            return json.loads(resp.headers["X-Meta"])["screen"]

    def wait_screen(want: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while panel_screen() != want:
            assert time.monotonic() < deadline, f"the panel never showed {want}"
            time.sleep(0.1)

    cap = cv2.VideoCapture(screen["camera"])
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (screen["effects"]["height_px"], screen["effects"]["width_px"], 3)
    corners, ids, _ = cv2.aruco.ArucoDetector(
        cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50)).detectMarkers(frame)
    assert ids is not None and set(screen["marker_ids"]) <= set(ids.ravel().tolist())

    standard = next(c for c in station.cards if c.profile == "standard" and not c.extra.get("disposable"))
    with RigController(station.rig.url.serial_url) as rig:
        assert "finger" in rig.info.caps
        rig.place_card(standard.placer_slot, CardPose.nominal(), 2000)
        try:
            wait_screen("method_select")
            x, y, w, h = button_rects({"screen": "method_select", "buttons": "face,pin,end"})["end"]
            # aim with the simulated finger's hidden mounting error (a host fits it from taps instead)
            cmd = Mounting().command_for(*FIXTURE.panel_px_to_mm(x + w / 2, y + h / 2))
            rig.tap(*cmd, hold_ms=80)
            wait_screen("done", 10.0)
        finally:
            rig.remove_card(2000)


def _supply_status(address: str, state_dir) -> dict[str, str]:
    from drivers.station_auth import authenticate_socket
    from sim.station import read_station_token

    host, _, port = address.strip().rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        authenticate_socket(s, "supply port", token=read_station_token(state_dir))  # hardware.md 9.1
        s.sendall(b"STATUS\n")
        reply = s.makefile("rb").readline().decode().split()
    assert reply and reply[0] == "OK", reply
    return dict(kv.split("=", 1) for kv in reply[1:])


def test_power_relay_switches_the_simulated_reader(station):
    addr_file = station.station.state_dir / "reader-supply.addr"
    if not addr_file.exists():
        pytest.skip("the simulated station has no reader supply port (sim/reader component absent)")
    address = addr_file.read_text()
    with RigController(station.rig.url.serial_url) as rig:
        assert rig.command("POWER OFF").fields["supply"] == "ok"
        assert _supply_status(address, station.station.state_dir)["power"] == "off"
        assert rig.command("POWER ON").fields["supply"] == "ok"
        assert _supply_status(address, station.station.state_dir)["power"] == "on"
        assert rig.health().ok


def test_the_station_token_guards_every_card_control_port(station):
    """Issue 10 §4: a card's control port (REISSUE unblocks a PIN) answers only a client holding
    the station's token, kept in the state folder readable by its owner alone."""
    state_dir = station.station.state_dir
    token_file = state_dir / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = read_station_token(state_dir)
    assert token and len(token) >= 32
    cards = list(station.cards) + [station.extra["pcsc"]["reference_card"]]
    for card in cards:
        control = card["control"] if isinstance(card, dict) else card.control
        for wrong in (None, "0" * len(token)):
            with pytest.raises(ControlError, match="auth required|refused the token"):
                CardControl.from_address(control, wrong).command("REISSUE")
        assert "inserted" in CardControl.from_address(control, token).status()
    # the station's own processes get the token through their environment, never on argv
    for proc in sim_status(state_dir):
        if proc["alive"] and proc["kind"] != "pcscd":
            assert token not in " ".join(proc["argv"])


def test_the_rig_and_reader_ptys_are_only_their_owners(station):
    import os
    import stat

    for path in (station.rig.url.serial_url, station.dut.url.removeprefix("serial:")):
        mode = os.stat(path).st_mode
        assert stat.S_ISCHR(mode) and mode & 0o077 == 0, f"{path} mode {oct(mode & 0o777)}"

