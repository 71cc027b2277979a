"""The simulated rig controller's ports: a pty or TCP (sim/line_port.py), with the rig's framing
rule for an over-long line (NAK E_FRAME, hardware.md)."""

from __future__ import annotations

from collections.abc import Callable

from sim.line_port import LineHandler, PtyPort, SocketPort
from sim.rig_protocol import MAX_LINE_BYTES, nak

Handler = Callable[[bytes], "bytes | None"]


def _rig_lines(handler: Handler) -> LineHandler:
    def on_line(line: bytes | None) -> bytes | None:
        if line is None:
            return nak(0, "E_FRAME", f"line longer than {MAX_LINE_BYTES - 1} bytes")
        return handler(line)
    return on_line


class PtyTransport(PtyPort):
    def __init__(self) -> None:
        super().__init__(MAX_LINE_BYTES)

    def serve(self, handler: Handler) -> None:
        super().serve(_rig_lines(handler))


class SocketTransport(SocketPort):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(MAX_LINE_BYTES, host, port)

    def serve(self, handler: Handler) -> None:
        super().serve(_rig_lines(handler))
