"""The reader control port's transports: a pty or TCP (sim/line_port.py), speaking text lines.

A CR before LF is dropped; an over-long line is answered with ``NAK - TOO_LONG``; a handler that
raises is answered with ``NAK - INTERNAL``: the firmware never dies of a command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from drivers.reader import MAX_LINE_BYTES, format_nak
from sim.line_port import LineHandler, PtyPort, SocketPort

log = logging.getLogger(__name__)

TextHandler = Callable[[bytes], list[str]]


def _encode(lines: list[str]) -> bytes:
    return b"".join(line.encode("ascii") + b"\n" for line in lines)


def _text_lines(handler: TextHandler) -> LineHandler:
    def on_line(line: bytes | None) -> bytes | None:
        if line is None:
            return _encode([format_nak(None, "TOO_LONG", f"line longer than {MAX_LINE_BYTES - 1} bytes")])
        try:
            return _encode(handler(line.rstrip(b"\r")))
        except Exception:  # the firmware answers; it never dies of a command
            log.exception("control port handler failed")
            return _encode([format_nak(None, "INTERNAL", "internal error")])
    return on_line


class _TextPort:
    def send(self, line: str) -> None:  # type: ignore[override]
        self.send_bytes(_encode([line]))  # type: ignore[attr-defined]

    def serve(self, handler: TextHandler) -> None:  # type: ignore[override]
        super().serve(_text_lines(handler))  # type: ignore[misc]


class PtyTransport(_TextPort, PtyPort):
    def __init__(self) -> None:
        PtyPort.__init__(self, MAX_LINE_BYTES)


class SocketTransport(_TextPort, SocketPort):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        SocketPort.__init__(self, MAX_LINE_BYTES, host, port)
