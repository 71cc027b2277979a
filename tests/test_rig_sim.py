"""The simulated rig controller (python -m sim.rig) driven by drivers/rig.py over a real pty and
a real socket: commands, events, garbage, duplicates, the reader's supply port, the presenter,
and a controller that goes away."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import pytest
import serial

from drivers.rig import CardPose, RigController, RigDisconnected, RigNak
from sim.rig_process import SimProcess, rig_url

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["pty", "socket"])
def sim_rig(request):
    where = ["--pty"] if request.param == "pty" else ["--socket", "127.0.0.1:0"]
    with SimProcess("sim.rig", *where, "--card", "1", "--card", "2") as p:
        yield p


class SupplyPort:
    """A stand-in for the simulated reader's supply port: records POWER lines, answers OK/ERR."""

    def __init__(self, answer: bytes = b"OK"):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.answer = answer
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile("rb").readline().decode().strip()
                self.lines.append(line)
                conn.sendall(self.answer + b"\n")

    def close(self) -> None:
        self.sock.close()


def test_commands_round_trip(sim_rig):
    with RigController(rig_url(sim_rig)) as rig:
        assert rig.info.proto == "1.0" and rig.info.slots == (1, 2) and "sim" in rig.info.caps
        light = rig.set_lighting(lux=250, cct_k=3200, backlight_lux=900)
        assert (light.lux, light.cct_k, light.backlight_lux) == (250.0, 3200.0, 900.0)
        placed = rig.place_card(1, CardPose.offset(3, -2), speed_mm_s=2000)
        assert placed.slot == 1 and placed.pose == CardPose(3.0, -2.0, 0.0, 0.0) and placed.coupling == "present"
        st = rig.status()
        assert st.card_slot == 1 and st.lighting.cct_k == 3200.0 and st.power_on
        rig.show_subject("Some_One", "mask", carer="Other_One")
        st = rig.status()
        assert (st.display, st.subject, st.condition, st.carer) == ("subject", "Some_One", "mask", "Other_One")
        rig.show_attack("Some_One")
        assert rig.status().display == "attack"
        rig.blank_display()
        assert rig.remove_card(speed_mm_s=2000).slot is None
        assert rig.status().card_slot is None
        assert rig.health().ok


def test_placement_model_present_flaky_absent(sim_rig):
    with RigController(rig_url(sim_rig)) as rig:
        assert rig.place_card(1, CardPose.nominal(), 2000).coupling == "present"
        edge = rig.place_card(1, CardPose.offset(15, 0), 2000)
        assert edge.coupling == "flaky" and 0 < edge.error_rate < 1
        deeper = rig.place_card(1, CardPose.offset(18, 0), 2000)
        assert deeper.error_rate > edge.error_rate
        assert rig.place_card(1, CardPose.height(35), 2000).coupling == "absent"
        assert rig.place_card(2, CardPose.tilted(20), 2000).coupling == "flaky"
        with pytest.raises(RigNak) as info:
            rig.place_card(3)
        assert info.value.code == "E_SLOT"
        with pytest.raises(RigNak) as info:
            rig.place_card(1, CardPose.height(41))
        assert info.value.code == "E_RANGE"


def test_power_cut_events_and_cancel(sim_rig):
    with RigController(rig_url(sim_rig)) as rig:
        rig.power_cut(at_ms=50, restore_ms=50)
        off = rig.wait_event("POWER", timeout_s=5)
        on = rig.wait_event("POWER", timeout_s=5)
        assert (off.fields["power"], off.fields["cause"]) == ("off", "cut")
        assert (on.fields["power"], on.fields["cause"]) == ("on", "restore")
        assert on.monotonic_s >= off.monotonic_s
        rig.power_cut(at_ms=60000)
        assert rig.status().cut_in_ms > 0
        rig.power_on()  # cancels the pending cut
        assert rig.status().cut_in_ms is None


def test_garbage_and_overlong_lines_do_not_disturb_the_controller(sim_rig):
    url = rig_url(sim_rig)
    raw = serial.serial_for_url(url, timeout=2)
    try:
        raw.write(b"\x00\x01\xfe\xff garbage\n")
        assert b"NAK E_FRAME" in raw.readline()
        raw.write(b"7 PLACE " + b"x" * 600 + b"\n")
        assert raw.readline().startswith(b"0 NAK E_FRAME line longer")
        raw.write(b"8 PING*FF\n")
        assert raw.readline().startswith(b"8 NAK E_CHECKSUM")
        raw.write(b"9 PI")  # a host that dies mid-line; the next host resyncs with LF
    finally:
        raw.close()
    with RigController(url) as rig:
        assert rig.ping() >= 0
        assert rig.health().ok


def test_duplicate_line_acts_once(sim_rig):
    supply = SupplyPort()
    try:
        with SimProcess("sim.rig", "--pty", "--supply", supply.address) as p:
            raw = serial.Serial(p.ready["pty"], timeout=3)
            try:
                raw.write(b"41 POWER CYCLE off_ms=10\n")
                first = raw.readline()
                raw.write(b"41 POWER CYCLE off_ms=10\n")  # the host missed the reply and retransmits
                second = raw.readline()
            finally:
                raw.close()
        assert first == second and first.startswith(b"41 ACK power=on off_ms=10 supply=ok")
        assert supply.lines == ["POWER OFF", "POWER ON"]  # one cycle, not two
    finally:
        supply.close()


def test_supply_port_is_driven_and_failures_reported(tmp_path):
    ok, refusing = SupplyPort(), SupplyPort(b"ERR not now")
    addr_file = tmp_path / "reader-supply.addr"
    try:
        with SimProcess("sim.rig", "--socket", "127.0.0.1:0", "--supply-file", str(addr_file)) as p, \
                RigController(rig_url(p)) as rig:
            rig.power_off()
            assert rig.status().fields["power"] == "off"
            assert "supply=none" in _raw_status(rig, "POWER ON")  # no reader yet: state kept only
            addr_file.write_text(ok.address + "\n")  # the reader starts after the rig
            rig.power_off()
            rig.power_on()
            assert ok.lines == ["POWER OFF", "POWER ON"]
            addr_file.write_text(refusing.address)
            assert "supply=error" in _raw_status(rig, "POWER OFF")
            assert rig.health().faults == ("supply",)
            addr_file.write_text(ok.address)
            rig.power_on()
            assert rig.health().ok
    finally:
        ok.close()
        refusing.close()


def _raw_status(rig: RigController, command: str) -> str:
    r = rig.command(command)
    return " ".join(f"{k}={v}" for k, v in r.fields.items())


def test_socket_controller_takes_over_from_a_dead_host_and_driver_reconnects():
    with SimProcess("sim.rig", "--socket", "127.0.0.1:0") as p:
        rig = RigController(rig_url(p), backoff_s=0.05)
        rig.open()
        host, port = p.ready["socket"].split(":")
        with socket.create_connection((host, int(port))) as other:  # a second host takes the line
            other.sendall(b"1 PING\n")
            assert other.makefile("rb").readline().startswith(b"1 ACK")
        assert rig.ping() >= 0  # our connection was dropped: the driver reconnected and retransmitted
        assert rig.stats["reconnects"] == 1
        rig.close()


def test_controller_process_gone_gives_rig_disconnected_not_a_hang():
    p = SimProcess("sim.rig", "--pty")
    rig = RigController(rig_url(p), backoff_s=0.05, reconnect_attempts=2)
    rig.open()
    p.stop()
    started = time.monotonic()
    with pytest.raises(RigDisconnected):
        rig.ping()
    assert time.monotonic() - started < 30  # bounded (the exact time belongs to benches)
    rig.close()


def test_presenter_link(tmp_path):
    """SHOW and LIGHT reach a real presenter process; its refusals and absence come back as NAKs."""
    from harness.facedata import list_identities, resolve_faces

    who = list_identities(resolve_faces())[0].name
    with SimProcess("sim.camera", "--fps", "5") as cam:
        control = cam.ready["control"]
        with SimProcess("sim.rig", "--pty", "--presenter", control) as p, RigController(rig_url(p)) as rig:
            rig.show_subject(who, "glasses")
            rig.set_lighting(lux=120, backlight_lux=2000)
            state = json.loads(urllib.request.urlopen(control + "/state", timeout=5).read())
            assert state["display"]["subject"] == who and state["display"]["condition"] == "glasses"
            assert state["lighting"]["lux"] == 120 and state["lighting"]["backlight_lux"] == 2000
            with pytest.raises(RigNak) as info:
                rig.show_subject("Nobody_Known_Here")
            assert info.value.code == "E_ARG" and "unknown subject" in info.value.detail
            cam.stop()
            with pytest.raises(RigNak) as info:
                rig.show_no_face()
            assert info.value.code == "E_HW"
            assert "presenter" in rig.health().faults
