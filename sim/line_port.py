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
import hmac
import logging
import os
import select
import socket
import threading
import time
import tty
from collections.abc import Callable

from sim.context import TOKEN_ENV

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


AUTH_TIMEOUT_S = 2.0
AUTH_MAX_BYTES = 200


class SocketPort:
    """TCP, like a serial-to-Ethernet converter: one host at a time; a new one replaces the old
    (a host reconnecting after a network fault must win), and the station log says so.

    With a station token (``token``, else ``FACEHIL_STATION_TOKEN``: sim/context.py) a new
    connection must first send ``AUTH <token>`` LF within 2 s (-> ``AUTH OK`` LF); anything else
    gets ``AUTH REFUSED`` LF and is closed without disturbing the connected host. Until then it
    receives nothing and its bytes reach no handler."""

    def __init__(self, max_line_bytes: int, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None) -> None:
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self._pending: dict[socket.socket, tuple[bytearray, float, str]] = {}
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

    def _adopt(self, conn: socket.socket, peer: str) -> None:
        """``conn`` becomes the host; a connected one is dropped, and that is logged."""
        with self._lock:
            previous = self.client
        if previous is not None:
            try:
                old = "%s:%d" % previous.getpeername()[:2]
            except OSError:
                old = "?"
            log.warning("host %s replaces the connected host %s", peer, old)
        self._drop_client()
        with self._lock:
            self.client = conn
        log.info("host connected from %s", peer)

    def _check_auth(self, conn: socket.socket) -> bool | None:
        """Read a pending connection's AUTH line: True (adopt), False (refuse), None (not yet)."""
        buf, deadline, _ = self._pending[conn]
        try:
            chunk = conn.recv(AUTH_MAX_BYTES)
        except OSError:
            chunk = b""
        if not chunk:
            return False
        buf += chunk
        if b"\n" not in buf:
            return None if len(buf) < AUTH_MAX_BYTES else False
        words = bytes(buf.split(b"\n", 1)[0]).strip().split()
        return (len(words) == 2 and words[0] == b"AUTH" and self.token is not None
                and hmac.compare_digest(words[1], self.token.encode()))

    def _serve_pending(self, ready: list) -> None:
        now = time.monotonic()
        for conn in list(self._pending):
            verdict = self._check_auth(conn) if conn in ready else (False if now > self._pending[conn][1] else None)
            if verdict is None:
                continue
            _, _, peer = self._pending.pop(conn)
            try:
                conn.sendall(b"AUTH OK\n" if verdict else b"AUTH REFUSED\n")
            except OSError:
                verdict = False
            if verdict:
                self._adopt(conn, peer)
            else:
                log.warning("connection from %s refused: no valid AUTH line", peer)
                conn.close()

    def serve(self, handler: LineHandler) -> None:
        splitter = LineSplitter(self.max_line_bytes)
        while not self._stop.is_set():
            client = self.client
            watch = [self.listener] + ([client] if client else []) + list(self._pending)
            try:
                ready, _, _ = select.select(watch, [], [], 0.2)
            except (OSError, ValueError):
                self._drop_client()
                continue
            if self._pending:
                self._serve_pending(ready)
                if self.client is not client:  # a host authenticated and took over
                    splitter = LineSplitter(self.max_line_bytes)
                    continue
            if not ready:
                splitter.expire()
                continue
            if self.listener in ready:
                conn, addr = self.listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(2.0)
                peer = "%s:%d" % addr[:2]
                if self.token is not None:
                    self._pending[conn] = (bytearray(), time.monotonic() + AUTH_TIMEOUT_S, peer)
                    continue
                self._adopt(conn, peer)
                splitter = LineSplitter(self.max_line_bytes)
                continue
            if client is None or client not in ready:
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
        for conn in self._pending:
            conn.close()
        self._pending.clear()
        self.listener.close()


def _dispatch(handler: LineHandler, lines: list[bytes | None], send: Callable[[bytes], None]) -> None:
    for line in lines:
        reply = handler(line)
        if reply:
            send(reply)
