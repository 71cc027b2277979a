"""The rig's finger (sim/finger.py): TAP on the rig line (drivers/rig.py) and Grbl G-code on its
own pty (drivers/finger_grbl.py), both through real ptys of a ``python -m sim.rig`` process,
landing on the reference reader's real touch port through the finger's hidden mounting error."""

from __future__ import annotations

import math
import time

import pytest

from drivers.finger_grbl import FingerError, GrblFinger
from drivers.rig import RigController, RigNak
from sim.finger import TRAVEL_Z_MM, XY_SPEED_MM_S, Z_SPEED_MM_S, Finger, Mounting
from sim.fixture import FIXTURE
from sim.reader.display import button_rects
from sim.rig_firmware import RigFirmware
from sim.rig_process import SimProcess

from panel_reader import panel_reader

WAIT_S = 5.0
MOUNTING = Mounting(rotation_deg=0.8, dx_mm=1.1, dy_mm=-0.7)  # what the host does not know


def command_for(px: float, py: float) -> tuple[float, float]:
    """Fixture mm to command so that the stylus lands on panel pixel (px, py) (the test knows the
    mounting error; a host fits it)."""
    return MOUNTING.command_for(*FIXTURE.panel_px_to_mm(px, py))


@pytest.fixture
def station(tmp_path):
    with panel_reader(tmp_path) as (sim, hw, dut, panel):
        addr = tmp_path / "reader-touch.addr"
        addr.write_text(panel.touch_url)
        rig = SimProcess("sim.rig", "--pty", "--finger-touch-file", str(addr), "--finger-grbl",
                         "--finger-mounting", f"{MOUNTING.rotation_deg},{MOUNTING.dx_mm},{MOUNTING.dy_mm}")
        try:
            yield rig, hw, dut, panel
        finally:
            rig.stop()


def test_tap_on_the_rig_line_travels_and_lands_on_the_computed_pixel(station):
    rig, hw, dut, panel = station
    dut.wait_for_screen("idle", WAIT_S)
    hw.insert()
    state = dut.wait_for_screen("method_select", WAIT_S).fields
    x, y, w, h = button_rects(state)["face"]
    want_px = (x + w / 2, y + h / 2)
    cx, cy = command_for(*want_px)
    with RigController(rig.ready["pty"], timeout_s=3.0) as ctl:
        assert "finger" in ctl.info.caps
        # commanding the drawing's nominal position would miss by the mounting error
        nominal = FIXTURE.panel_px_to_mm(*want_px)
        assert math.dist(Finger(mounting=MOUNTING).contact_px(*nominal), want_px) > 1.0
        t0 = time.monotonic()
        tap = ctl.tap(cx, cy, hold_ms=120)
        took_s = time.monotonic() - t0
        travel_s = math.dist((0, 0), (cx, cy)) / XY_SPEED_MM_S + 2 * TRAVEL_Z_MM / Z_SPEED_MM_S + 0.12
        assert took_s >= travel_s * 0.98 and abs(tap.moved_ms / 1000 - travel_s) < 0.15
        assert panel.touch.last_down is not None
        assert math.dist(panel.touch.last_down, want_px) < 0.2  # the .1 px of the DOWN line
        assert dut.wait_for_event("screen", WAIT_S, id="face_auth")
        # bad taps are refused with the reason, and nothing moves or touches
        touches = panel.touch.touches
        for cmd, code in (("TAP 500 10 100", "E_RANGE"), ("TAP 10 10 20000", "E_RANGE"), ("TAP 10 10", "E_ARG"),
                          ("TAP x 10 100", "E_ARG"), ("TAP 10 10 1.5", "E_ARG")):
            with pytest.raises(RigNak) as err:
                ctl.command(cmd)
            assert err.value.code == code, cmd
        # on the bezel: the stylus moves there, the glass is not touched
        ctl.tap(2.0, 2.0, hold_ms=0)
        assert panel.touch.touches == touches


def test_grbl_finger_on_its_own_pty(station):
    rig, hw, dut, panel = station
    dut.wait_for_screen("idle", WAIT_S)
    hw.insert()
    state = dut.wait_for_screen("method_select", WAIT_S).fields
    x, y, w, h = button_rects(state)["end"]
    want_px = (x + w / 2, y + h / 2)
    with GrblFinger(rig.ready["finger_grbl"]) as finger:
        st = finger.status()
        assert (st.state, st.z_mm) == ("Idle", TRAVEL_Z_MM)
        took_s = finger.tap(*command_for(*want_px), hold_ms=100)
        assert took_s >= 2 * TRAVEL_Z_MM / Z_SPEED_MM_S + 0.1
        assert math.dist(panel.touch.last_down, want_px) < 0.2
        assert panel.touch.presses == 1
        st = finger.status()
        assert st.z_mm == TRAVEL_Z_MM and math.dist((st.x_mm, st.y_mm), command_for(*want_px)) < 0.01
        with pytest.raises(FingerError, match="error:15"):
            finger.command("G0 X900 Y10")  # beyond the travel: soft limit
        with pytest.raises(FingerError, match="error:20"):
            finger.command("G2 X10 Y10")  # arcs are not for fingers
        with pytest.raises(FingerError, match="error:1"):
            finger.command("HELLO")
    assert dut.wait_for_event("screen", WAIT_S, id="done")  # 終了する pressed through the glass


def test_tap_without_a_finger_is_refused():
    fw = RigFirmware()
    assert b"NAK E_HW no finger" in fw.handle(b"1 TAP 10 10 100")
    assert b"finger" not in fw.handle(b"2 HELLO 1.0")
    fitted = RigFirmware(finger=Finger(sleep=lambda s: None))
    assert b"caps=power,light,placer,display,finger,sim" in fitted.handle(b"3 HELLO 1.0")
    assert fitted.handle(b"4 TAP 20 20 0").startswith(b"4 ACK x_mm=20 y_mm=20 hold_ms=0 moved_ms=")


def test_hardware_md_tap_transcript_byte_for_byte():
    """The TAP example of hardware.md 4.5 against the simulated finger (motions at once)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "hardware.md").read_text()
    block = text.split("```rig-tap-transcript\n", 1)[1].split("```", 1)[0]
    fw = RigFirmware(finger=Finger(sleep=lambda s: None))
    lines = block.strip().splitlines()
    assert len(lines) == 4
    for host, rig in zip(lines[::2], lines[1::2]):
        assert host.startswith("> ") and rig.startswith("< ")
        assert fw.handle(host[2:].encode()) == rig[2:].encode() + b"\n"
