"""Byte transports of the reader's control port: a pty (a USB serial adapter) or TCP.

Both cut the stream into lines the way the reference firmware does (hardware.md): LF ends a
line (a CR before it is dropped), a line longer than ``MAX_LINE_BYTES`` is answered with
``NAK - TOO_LONG`` and skipped up to the next LF, and a partial line idle for
``PARTIAL_LINE_IDLE_MS`` is dropped, so a host that died mid-line cannot glue garbage to the
next command. Output never blocks: with nobody listening, bytes are lost, as on a real UART.
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
from collections.abc import Callable

from drivers.reader import MAX_LINE_BYTES, format_nak

log = logging.getLogger(__name__)

PARTIAL_LINE_IDLE_MS = 1000
LineHandler = Callable[[bytes], list[str]]


class LineCutter:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.skipping = False
        self.last_byte_s = 0.0

    def feed(self, data: bytes) -> list[bytes | None]:
        """Complete lines; ``None`` stands for an over-long line that was dropped."""
        self.last_byte_s = time.monotonic()
        out: list[bytes | None] = []
        parts = data.split(b"\n")
        for part in parts[:-1]:
            out.append(None if self._add(part) else bytes(self.buf).rstrip(b"\r"))
            self.buf.clear()
            self.skipping = False
        self._add(parts[-1])
        return out

    def _add(self, part: bytes) -> bool:
        """Append; True if the line is (now) too long."""
        if not self.skipping:
            self.buf += part
            if len(self.buf) >= MAX_LINE_BYTES:
                self.skipping = True
                self.buf.clear()
        return self.skipping

    def expire(self) -> None:
        if (self.buf or self.skipping) and time.monotonic() - self.last_byte_s > PARTIAL_LINE_IDLE_MS / 1000:
            self.buf.clear()
            self.skipping = False


def _answer(handler: LineHandler, line: bytes | None) -> list[str]:
    if line is None:
        return [format_nak(None, "TOO_LONG", f"line longer than {MAX_LINE_BYTES - 1} bytes")]
    try:
        return handler(line)
    except Exception:  # the firmware answers; it never dies of a command
        log.exception("control port handler failed")
        return [format_nak(None, "INTERNAL", "internal error")]


class PtyTransport:
    """A pseudo-terminal; the host opens ``path`` like /dev/ttyUSB0. We keep the slave open so
    the master never reads EIO between hosts."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def describe(self) -> str:
        return f"pty={self.path}"

    def url(self) -> str:
        return self.path

    def send(self, line: str) -> None:
        data = line.encode("ascii") + b"\n"
        with self._lock:
            try:
                os.write(self.master, data)
            except BlockingIOError:
                log.debug("pty output full; %d bytes lost", len(data))
            except OSError as exc:
                log.debug("pty write failed: %s", exc)

    def serve(self, handler: LineHandler) -> None:
        cutter = LineCutter()
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                cutter.expire()
                continue
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:
                    time.sleep(0.05)
                    continue
                raise
            for line in cutter.feed(data):
                for reply in _answer(handler, line):
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

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(4)
        self.host, self.port = self.listener.getsockname()[:2]
        self.client: socket.socket | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def describe(self) -> str:
        return f"socket={self.host}:{self.port}"

    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def send(self, line: str) -> None:
        data = line.encode("ascii") + b"\n"
        with self._lock:
            if self.client is None:
                return
            try:
                self.client.sendall(data)
            except OSError as exc:
                log.debug("socket write failed: %s", exc)

    def _drop_client(self) -> None:
        with self._lock:
            if self.client is not None:
                try:
                    self.client.close()
                except OSError:
                    pass
                self.client = None

    def serve(self, handler: LineHandler) -> None:
        cutter = LineCutter()
        while not self._stop.is_set():
            client = self.client
            watch = [self.listener] + ([client] if client else [])
            try:
                ready, _, _ = select.select(watch, [], [], 0.2)
            except (OSError, ValueError):
                self._drop_client()
                continue
            if not ready:
                cutter.expire()
                continue
            if self.listener in ready:
                conn, peer = self.listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(2.0)
                self._drop_client()
                with self._lock:
                    self.client = conn
                cutter = LineCutter()
                log.info("control host connected from %s:%d", *peer[:2])
                continue
            try:
                data = client.recv(4096) if client else b""
            except OSError:
                data = b""
            if not data:
                self._drop_client()
                continue
            for line in cutter.feed(data):
                for reply in _answer(handler, line):
                    self.send(reply)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._drop_client()
        self.listener.close()
