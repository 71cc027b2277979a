"""Line-oriented device ports for simulated firmware: a pty (like a USB serial adapter) or TCP
(like a serial-to-Ethernet converter). The rig controller and the reader's control port both
use them; each supplies a handler that turns one received line into reply bytes.

Framing follows hardware.md: LF ends a line, a line longer than ``max_line_bytes`` is reported
to the handler as ``None`` and skipped up to the next LF, and a partial line idle for
``PARTIAL_LINE_IDLE_MS`` is dropped, so a host that died mid-line cannot glue garbage onto the
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

log = logging.getLogger(__name__)

PARTIAL_LINE_IDLE_MS = 1000
# One received line (None: an over-long line that was dropped) -> bytes to send back, if any.
LineHandler = Callable[[bytes | None], "bytes | None"]


class LineSplitter:
    """Accumulates received bytes and yields complete lines; ``None`` marks a dropped long line."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.buf = bytearray()
        self.skipping = False
        self.last_byte_s = 0.0

    def feed(self, data: bytes) -> list[bytes | None]:
        self.last_byte_s = time.monotonic()
        out: list[bytes | None] = []
        parts = data.split(b"\n")
        for part in parts[:-1]:
            out.append(None if self._add(part) else bytes(self.buf))
            self.buf.clear()
            self.skipping = False
        self._add(parts[-1])
        return out

    def _add(self, part: bytes) -> bool:
        """Append; True if the current line is (now) too long."""
        if not self.skipping:
            self.buf += part
            if len(self.buf) >= self.max_line_bytes:
                self.skipping = True
                self.buf.clear()
        return self.skipping

    def expire(self) -> bool:
        """Drop a partial line that has been idle too long; True if one was dropped."""
        if (self.buf or self.skipping) and time.monotonic() - self.last_byte_s > PARTIAL_LINE_IDLE_MS / 1000:
            self.buf.clear()
            self.skipping = False
            return True
        return False


class PtyPort:
    """A pseudo-terminal; the host opens ``path`` like /dev/ttyUSB0. We keep the slave open so
    the master never reads EIO between hosts."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.master, self.slave = os.openpty()
        os.fchmod(self.slave, 0o600)  # devpts makes it group-writable (tty): only its owner may drive it
        tty.setraw(self.slave)  # no echo, no line editing: a serial line carries bytes
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def describe(self) -> str:
        return f"pty={self.path}"

    def url(self) -> str:
        return self.path

    def send_bytes(self, data: bytes) -> None:
        with self._lock:
            try:
                os.write(self.master, data)
            except BlockingIOError:
                log.debug("pty output full; %d bytes lost", len(data))
            except OSError as exc:
                log.debug("pty write failed: %s", exc)

    def serve(self, handler: LineHandler) -> None:
        splitter = LineSplitter(self.max_line_bytes)
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
            _dispatch(handler, splitter.feed(data), self.send_bytes)

    send = send_bytes  # the rig sends bytes; the reader's port overrides send() for text lines

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class SocketPort:
    """TCP, like a serial-to-Ethernet converter: one host at a time; a new one replaces the old."""

    def __init__(self, max_line_bytes: int, host: str = "127.0.0.1", port: int = 0) -> None:
        self.max_line_bytes = max_line_bytes
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

    def send_bytes(self, data: bytes) -> None:
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
        splitter = LineSplitter(self.max_line_bytes)
        while not self._stop.is_set():
            client = self.client
            watch = [self.listener] + ([client] if client else [])
            try:
                ready, _, _ = select.select(watch, [], [], 0.2)
            except (OSError, ValueError):
                self._drop_client()
                continue
            if not ready:
                splitter.expire()
                continue
            if self.listener in ready:
                conn, peer = self.listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(2.0)
                self._drop_client()
                with self._lock:
                    self.client = conn
                splitter = LineSplitter(self.max_line_bytes)
                log.info("host connected from %s:%d", *peer[:2])
                continue
            try:
                data = client.recv(4096) if client else b""
            except OSError:
                data = b""
            if not data:
                self._drop_client()
                continue
            _dispatch(handler, splitter.feed(data), self.send_bytes)

    send = send_bytes  # the rig sends bytes; the reader's port overrides send() for text lines

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._drop_client()
        self.listener.close()


def _dispatch(handler: LineHandler, lines: list[bytes | None], send: Callable[[bytes], None]) -> None:
    for line in lines:
        reply = handler(line)
        if reply:
            send(reply)
