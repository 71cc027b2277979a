"""Byte transports for the simulated rig controller: a pty (like a USB serial adapter) or TCP.

Both split the byte stream into lines the way the firmware of hardware.md does: LF ends a
line, a line longer than MAX_LINE_BYTES is dropped with a NAK, and a partial line that sits
idle for PARTIAL_LINE_IDLE_MS is discarded (so a host that died mid-line cannot wedge us).
Output never blocks: with nobody reading, bytes are lost, as on a real UART.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
import tty
from typing import Callable

from sim.rig_protocol import MAX_LINE_BYTES, nak

log = logging.getLogger(__name__)

PARTIAL_LINE_IDLE_MS = 1000
Handler = Callable[[bytes], "bytes | None"]


class LineSplitter:
    """Accumulates received bytes; yields complete lines; answers over-long ones with a NAK."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.overflow = False
        self.last_byte_monotonic_s = 0.0

    def feed(self, data: bytes) -> list[bytes | Exception]:
        out: list[bytes | Exception] = []
        self.last_byte_monotonic_s = time.monotonic()
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._append(data[start:])
                break
            self._append(data[start:nl])
            if self.overflow:
                out.append(OverflowError("line too long"))
            else:
                out.append(bytes(self.buf))
            self.buf.clear()
            self.overflow = False
            start = nl + 1
        return out

    def _append(self, part: bytes) -> None:
        if self.overflow:
            return
        self.buf += part
        if len(self.buf) >= MAX_LINE_BYTES:
            self.overflow = True
            self.buf.clear()

    def expire(self) -> bool:
        """Drop a partial line that has been idle too long; True if one was dropped."""
        if (self.buf or self.overflow) and \
                time.monotonic() - self.last_byte_monotonic_s > PARTIAL_LINE_IDLE_MS / 1000.0:
            self.buf.clear()
            self.overflow = False
            return True
        return False


def _answer(handler: Handler, item: bytes | Exception) -> bytes | None:
    if isinstance(item, Exception):
        return nak(0, "E_FRAME", f"line longer than {MAX_LINE_BYTES - 1} bytes")
    return handler(item)


class PtyTransport:
    """A pseudo-terminal: the host opens ``path`` as if it were /dev/ttyUSB0."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing: a serial line carries bytes
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._write_lock = threading.Lock()
        self._stop = threading.Event()

    def describe(self) -> str:
        return f"pty={self.path}"

    def send(self, data: bytes) -> None:
        with self._write_lock:
            try:
                os.write(self.master, data)
            except BlockingIOError:
                log.debug("pty output full; %d bytes lost", len(data))
            except OSError as exc:
                log.debug("pty write failed: %s", exc)

    def serve(self, handler: Handler) -> None:
        splitter = LineSplitter()
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                splitter.expire()
                continue
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # no slave open (we keep one, so only at teardown)
                    time.sleep(0.05)
                    continue
                raise
            for item in splitter.feed(data):
                reply = _answer(handler, item)
                if reply:
                    self.send(reply)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class SocketTransport:
    """TCP, like a serial-to-Ethernet converter: one host at a time; a new one replaces the old."""

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(4)
        self.host, self.port = self.listener.getsockname()[:2]
        self.client: socket.socket | None = None
        self._write_lock = threading.Lock()
        self._stop = threading.Event()

    def describe(self) -> str:
        return f"socket={self.host}:{self.port}"

    def send(self, data: bytes) -> None:
        with self._write_lock:
            client = self.client
            if client is None:
                return
            try:
                client.sendall(data)
            except OSError as exc:
                log.debug("socket write failed: %s", exc)

    def _drop_client(self) -> None:
        with self._write_lock:
            if self.client is not None:
                try:
                    self.client.close()
                except OSError:
                    pass
                self.client = None

    def serve(self, handler: Handler) -> None:
        splitter = LineSplitter()
        while not self._stop.is_set():
            watch = [self.listener] + ([self.client] if self.client else [])
            ready, _, _ = select.select(watch, [], [], 0.2)
            if not ready:
                splitter.expire()
                continue
            if self.listener in ready:
                conn, peer = self.listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(1.0)
                self._drop_client()
                with self._write_lock:
                    self.client = conn
                splitter = LineSplitter()
                log.info("host connected from %s:%d", *peer[:2])
                continue
            try:
                data = self.client.recv(4096) if self.client else b""
            except OSError:
                data = b""
            if not data:
                self._drop_client()
                continue
            for item in splitter.feed(data):
                reply = _answer(handler, item)
                if reply:
                    self.send(reply)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._drop_client()
        self.listener.close()
