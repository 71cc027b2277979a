"""A reference reader with its panel ports, in this process: recorded card and face, real
sockets (control port, touch port, panel MJPEG). For the panel, camera and finger tests."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from drivers.reader import LineProtocolReader
from sim.reader.assembly import SimulatedReader
from sim.reader.device import DeviceOptions
from sim.reader.firmware import ensure_firmware_dir
from sim.reader.flow import FlowConfig
from sim.reader.ports import SystemClock
from sim.reader.recorded import RecordedCard, RecordedFace, RecordedHardware, recorded_ports
from sim.reader.touch import PanelPorts
from sim.reader.transport import SocketTransport


@contextmanager
def panel_reader(tmp_path: Path, fps: float = 20.0):
    """Yields (simulated reader, recorded hardware, control-port driver, panel ports)."""
    fw = tmp_path / "fw"
    ensure_firmware_dir(fw)
    hw = RecordedHardware(lambda: recorded_ports(card=RecordedCard(), face=RecordedFace(), clock=SystemClock()))
    opts = DeviceOptions(state_dir=tmp_path / "reader", firmware_dir=fw, boot_ms=20, tick_ms=10,
                         flow_config=FlowConfig(face_timeout_ms=3000))
    sim = SimulatedReader(opts, hw, SocketTransport()).start()
    panel = PanelPorts(sim.device, fps=fps).start()
    dut = LineProtocolReader(sim.url, timeout_s=2.0, connect_timeout_s=5.0)
    try:
        dut.open()
        yield sim, hw, dut, panel
    finally:
        dut.close()
        panel.stop()
        sim.stop()
