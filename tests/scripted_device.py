"""A scripted device on the project's own line port (sim/line_port.py): it ACKs every command and
sends whatever lines or bytes a test gives it. Tests of the reader driver use it where the
driver's side of the link is under test, not the reference firmware."""

from __future__ import annotations

import threading
import time

from sim.reader.transport import PtyTransport, SocketTransport


class ScriptedDevice:
    """TCP by default, not a pty: a pty drops what the host has not read yet, and some tests
    send thousands of lines at once."""

    def __init__(self, transport: str = "socket") -> None:
        self.port = SocketTransport() if transport == "socket" else PtyTransport()
        self.handler = self.ack_all  # a test may replace it: one received line -> reply lines
        self.commands: list[bytes] = []
        self.port_thread = threading.Thread(target=self.port.serve, args=(self._on_line,), daemon=True)
        self.port_thread.start()
        self.url = self.port.url()

    def _on_line(self, raw: bytes) -> list[str]:
        self.commands.append(raw)
        return self.handler(raw)

    def ack_all(self, raw: bytes) -> list[str]:
        tokens = raw.decode("ascii", "replace").split()
        if len(tokens) >= 2 and tokens[0].isdigit():
            extra = " proto=1" if tokens[1] == "HELLO" else ""
            return [f"ACK {tokens[0]}{extra}"]
        return []

    def send(self, data: bytes) -> None:
        if isinstance(self.port, SocketTransport):
            self.port.send_bytes(data)
            return
        for i in range(0, len(data), 1024):  # a pty drops what does not fit: pace it like a UART
            self.port.send_bytes(data[i:i + 1024])
            time.sleep(0.002)

    def events(self, seqs, boot_id: str = "b1") -> None:
        """EVT lines for ``seqs``; event 1 is a boot."""
        lines = [f"EVT {s} {s} boot boot_id={boot_id}" if s == 1 else f"EVT {s} {s} tick n={s}" for s in seqs]
        self.send("".join(line + "\n" for line in lines).encode())

    def close(self) -> None:
        self.port.stop()
        self.port_thread.join(timeout=2)
        self.port.close()
