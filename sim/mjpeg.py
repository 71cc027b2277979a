"""A small MJPEG-over-HTTP server for simulated video sources (the reader's panel, the rig's
screen camera): ``GET /stream.mjpg`` (multipart/x-mixed-replace, what ``cv2.VideoCapture(url)``
opens), ``GET /snapshot.jpg`` and ``GET /state`` (JSON).

The source is a callable returning ``(frame_bgr, meta)``; it is called once per tick, only while
a stream client is connected. Each part of the stream carries ``X-Frame: <n>`` and
``X-Monotonic-S: <time.monotonic() when the frame's scene was taken>`` headers (same clock for
every process on the host; a source may give that time as ``meta["t_monotonic_s"]``, like a
camera's exposure timestamp, else it is when the frame was made); ``/state`` lists the recent ``(frame, monotonic_s)`` pairs and the
source's ``meta`` of the newest frame, for hosts whose capture library hides part headers.
"""

from __future__ import annotations

import collections
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

BOUNDARY = "facehilframe"
HISTORY_FRAMES = 256
SEND_BUFFER_BYTES = 64 * 1024
FrameSource = Callable[[], "tuple[np.ndarray, dict[str, Any]]"]


def run_frame_clock(stop: threading.Event, period_s: float, watched: Callable[[], bool],
                    produce: Callable[[], object]) -> None:
    """Tick at ``1/period_s`` until ``stop``: produce a frame on each tick while someone watches."""
    next_tick = time.monotonic()
    while not stop.is_set():
        if watched():
            produce()
        next_tick += period_s
        delay = next_tick - time.monotonic()
        if delay < -period_s:  # fell behind (machine busy): do not burst to catch up
            next_tick = time.monotonic()
            delay = 0
        stop.wait(max(0.0, delay))


class FrameClock:
    """Produces and encodes frames at ``fps`` while someone watches; shared by all clients."""

    def __init__(self, source: FrameSource, fps: float, jpeg_quality: int = 85):
        self.source = source
        self.period_s = 1.0 / fps
        self.fps = fps
        self.jpeg_quality = jpeg_quality
        self.counter = 0
        self.jpeg = b""
        self.meta: dict[str, Any] = {}
        self.produced_s = 0.0
        self.sent: collections.deque = collections.deque(maxlen=HISTORY_FRAMES)
        self.clients = 0
        self._cond = threading.Condition()
        self._produce_lock = threading.Lock()
        self._stop = threading.Event()

    def produce(self) -> None:
        with self._produce_lock:
            try:
                frame, meta = self.source()
            except Exception:  # a source failing once must not stop the stream
                log.exception("frame source failed")
                return
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                log.error("JPEG encoding failed")
                return
            # the frame's time: when the source saw the scene (its "exposure"), else now
            now = float(meta.pop("t_monotonic_s", None) or time.monotonic())
            with self._cond:
                self.counter += 1
                self.jpeg, self.meta, self.produced_s = buf.tobytes(), dict(meta), now
                self.sent.append((self.counter, now))
                self._cond.notify_all()

    def wait_frame(self, after: int, timeout_s: float) -> tuple[int, bytes, float] | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.counter != after or self._stop.is_set(), timeout_s):
                return None
            return (self.counter, self.jpeg, self.produced_s) if self.counter != after else None

    def snapshot(self) -> tuple[bytes, dict[str, Any]]:
        """A frame produced now, and its meta."""
        self.produce()
        with self._cond:
            return self.jpeg, self.meta

    def state(self) -> dict[str, Any]:
        with self._cond:
            return {"frame": self.counter, "fps": self.fps, "clients": self.clients, "meta": self.meta,
                    "sent": list(self.sent)[-64:]}

    def run(self) -> None:
        run_frame_clock(self._stop, self.period_s, lambda: self.clients > 0, self.produce)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()


class _Handler(BaseHTTPRequestHandler):
    server_version = "facehil-mjpeg/0.1"
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        clock: FrameClock = self.server.clock  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        if path == "/stream.mjpg":
            self._stream(clock)
        elif path == "/snapshot.jpg":  # X-Meta: the source's meta of this very frame (JSON)
            jpeg, meta = clock.snapshot()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(jpeg)))
            self.send_header("X-Meta", json.dumps(meta, ensure_ascii=True))
            self.end_headers()
            self.wfile.write(jpeg)
        elif path == "/state":
            self._send(HTTPStatus.OK, "application/json", json.dumps(clock.state()).encode())
        else:
            self._send(HTTPStatus.NOT_FOUND, "application/json", json.dumps({"error": f"no such resource {path}"}).encode())

    def _stream(self, clock: FrameClock) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache, no-store")
        self.end_headers()
        # a small send buffer: a slow client gets the newest frame, not seconds of queued ones
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        with clock._cond:
            clock.clients += 1
            last = clock.counter
        try:
            while not clock._stop.is_set():
                got = clock.wait_frame(last, timeout_s=1.0)
                if got is None:
                    continue
                last, jpeg, produced_s = got
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                                 f"X-Frame: {last}\r\nX-Monotonic-S: {produced_s:.6f}\r\n\r\n".encode()
                                 + jpeg + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass
        finally:
            with clock._cond:
                clock.clients -= 1


class MjpegServer(ThreadingHTTPServer):
    """``MjpegServer(source, fps).start()``; ``url`` is the stream's address."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, source: FrameSource, fps: float, host: str = "127.0.0.1", port: int = 0,
                 jpeg_quality: int = 85):
        super().__init__((host, port), _Handler)
        self.clock = FrameClock(source, fps, jpeg_quality)
        self.host, self.port = self.server_address[:2]
        self._workers: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/stream.mjpg"

    def start(self) -> "MjpegServer":
        serve = lambda: self.serve_forever(poll_interval=0.1)  # noqa: E731 - a prompt stop()
        for target, name in ((self.clock.run, "mjpeg-clock"), (serve, "mjpeg-http")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> None:
        self.clock.stop()
        self.shutdown()
        self.server_close()
