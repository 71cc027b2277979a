"""One simulated reader put together: device + control-port transport + supply port.

Used by the reader process (``python -m sim.reader``) and, with recorded hardware, by tests
that talk to it over a real pty or socket.
"""

from __future__ import annotations

import threading

from sim.reader.control import ControlPort
from sim.reader.device import DeviceOptions, Hardware, ReaderDevice
from sim.reader.supply import SupplyPort
from sim.reader.transport import PtyTransport, SocketTransport


class SimulatedReader:
    def __init__(self, options: DeviceOptions, hardware: Hardware, transport: PtyTransport | SocketTransport,
                 supply_host: str = "127.0.0.1", supply_port: int = 0):
        self.transport = transport
        self.device = ReaderDevice(options, hardware, transport.send)
        self.control = ControlPort(self.device)
        self.supply = SupplyPort(self.device, supply_host, supply_port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.transport.url()

    def start(self, power_on: bool = True) -> "SimulatedReader":
        self._thread = threading.Thread(target=self.transport.serve, args=(self.control.handle,),
                                        name="reader-control", daemon=True)
        self._thread.start()
        self.supply.start()
        if power_on:
            self.device.power_on()
        return self

    def serve_forever(self) -> None:
        """Run until ``stop()`` (the process's main thread parks here)."""
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        self.device.power_off()
        self.transport.stop()
        self.supply.stop()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.transport.close()

    def __enter__(self) -> "SimulatedReader":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
