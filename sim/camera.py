"""The subject presenter: what stands in front of the reader's camera, as a real MJPEG stream.

`python -m sim.camera [--host 127.0.0.1] [--port 0] [--dataset PATH] [--fps 12]` prints
``READY url=http://HOST:PORT/stream.mjpg control=http://HOST:PORT`` and serves:

- ``GET /stream.mjpg``  multipart/x-mixed-replace JPEG frames, 640x480, ``--fps`` per second;
- ``GET /snapshot.jpg`` the current frame;
- ``GET /state``        JSON: what is shown, the lighting, the frame counter, and the send time
  (``time.monotonic()``, same clock for every process on the host) of recent frames;
- ``POST /subject``     JSON ``{"mode": "subject"|"noface"|"attack"|"blank", "id", "condition",
  "image", "carer"}``;
- ``POST /lighting``    JSON ``{"lux", "cct_k", "backlight_lux"}`` (any subset).

The scene is rendered once per change; each tick only stamps the frame counter
(sim/camera_marker.py) and encodes, and only while someone is watching.
Also the station component ``start_camera(ctx)``.
"""

from __future__ import annotations

import argparse
import collections
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from harness.facedata import list_identities, resolve_faces
from sim import camera_marker
from sim.camera_scene import Display, Light, SceneError, SceneRenderer
from sim.context import TOKEN_ENV, SimContext, StationError
from sim.mjpeg import run_frame_clock

log = logging.getLogger("sim.camera")

BOUNDARY = "facehilframe"
JPEG_QUALITY = 85
HISTORY_FRAMES = 256
MAX_BODY_BYTES = 4096


class Presenter:
    """State, rendering and the current encoded frame; shared by every HTTP client."""

    def __init__(self, renderer: SceneRenderer, fps: float = 12.0):
        self.renderer = renderer
        self.period_s = 1.0 / fps
        self.fps = fps
        self.display = Display()
        self.light = Light()
        self.version = 0
        self.render_monotonic_s = time.monotonic()
        self._base = renderer.render(self.display, self.light)
        self._state_lock = threading.Lock()  # display/light/base
        self._frame_cond = threading.Condition()
        self._produce_lock = threading.Lock()  # one frame at a time: counters stay in send order
        self.counter = 0
        self.jpeg = b""
        self.jpeg_version = -1
        self.sent = collections.deque(maxlen=HISTORY_FRAMES)  # (counter, monotonic_s)
        self.clients = 0
        self._stop = threading.Event()

    # -- control --------------------------------------------------------------------------
    def set_display(self, payload: dict) -> Display:
        d = Display(mode=str(payload.get("mode", "")), subject=_opt_str(payload.get("id")),
                    condition=str(payload.get("condition") or "nominal"), image=_opt_int(payload.get("image"), "image"),
                    carer=_opt_str(payload.get("carer")), species=str(payload.get("species") or "print"))
        if d.mode in ("noface", "blank"):
            d = Display(mode=d.mode)
        self.renderer.validate(d)
        self._rerender(display=d)
        return d

    def set_lighting(self, payload: dict) -> Light:
        cur = self.light
        light = Light(lux=_num(payload, "lux", cur.lux, 0, 100000), cct_k=_num(payload, "cct_k", cur.cct_k, 1500, 15000),
                      backlight_lux=_num(payload, "backlight_lux", cur.backlight_lux, 0, 100000))
        self._rerender(light=light)
        return light

    def _rerender(self, display: Display | None = None, light: Light | None = None) -> None:
        with self._state_lock:
            d = display or self.display
            li = light or self.light
            base = self.renderer.render(d, li)  # may raise SceneError: state stays as it was
            self.display, self.light, self._base = d, li, base
            self.version += 1
            self.render_monotonic_s = time.monotonic()
        if self.clients > 0:
            self.produce()  # show a change at once, as a display does on its next refresh

    def state(self) -> dict:
        with self._frame_cond:
            recent = list(self.sent)[-64:]
            counter = self.counter
        return {"display": asdict(self.display), "lighting": asdict(self.light), "version": self.version,
                "render_monotonic_s": self.render_monotonic_s, "frame": counter, "fps": self.fps,
                "clients": self.clients, "width": int(self._base.shape[1]), "height": int(self._base.shape[0]),
                "sent": recent}

    # -- frames ---------------------------------------------------------------------------
    def produce(self) -> None:
        """Stamp the next counter on the current scene, encode once, wake every streaming client."""
        with self._produce_lock:
            self._produce()

    def _produce(self) -> None:
        with self._state_lock:
            frame = self._base.copy()
            version = self.version
        with self._frame_cond:
            counter = self.counter + 1
        camera_marker.stamp(frame, counter)
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            log.error("JPEG encoding failed")
            return
        with self._frame_cond:
            self.counter = counter
            self.jpeg = buf.tobytes()
            self.jpeg_version = version
            self.sent.append((counter, time.monotonic()))
            self._frame_cond.notify_all()

    def wait_frame(self, after: int, timeout_s: float) -> tuple[int, bytes] | None:
        with self._frame_cond:
            if not self._frame_cond.wait_for(lambda: self.counter != after or self._stop.is_set(), timeout_s):
                return None
            return (self.counter, self.jpeg) if self.counter != after else None

    def snapshot(self) -> bytes:
        """The current frame; rendered now if the last one sent predates a change."""
        if not self.jpeg or self.jpeg_version != self.version:
            self.produce()
        with self._frame_cond:
            return self.jpeg

    def run(self) -> None:
        """Frame clock: ticks at the frame rate while a stream client is connected."""
        run_frame_clock(self._stop, self.period_s, lambda: self.clients > 0, self.produce)

    def stop(self) -> None:
        self._stop.set()
        with self._frame_cond:
            self._frame_cond.notify_all()


def _opt_str(v) -> str | None:
    return None if v in (None, "") else str(v)


def _opt_int(v, key: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise SceneError(f"{key} must be a whole number")
    return v


def _num(payload: dict, key: str, default: float, lo: float, hi: float) -> float:
    if key not in payload:
        return default
    v = payload[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SceneError(f"{key} must be a number")
    if not lo <= v <= hi:
        raise SceneError(f"{key} must be within {lo:g}..{hi:g}")
    return float(v)


class Handler(BaseHTTPRequestHandler):
    server_version = "facehil-presenter/0.1"
    protocol_version = "HTTP/1.0"

    @property
    def presenter(self) -> Presenter:
        return self.server.presenter  # type: ignore[attr-defined]

    def log_message(self, fmt, *args) -> None:  # requests are not worth a log line each
        log.debug("%s " + fmt, self.address_string(), *args)

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/stream.mjpg":
            self._stream()
        elif path == "/snapshot.jpg":
            jpeg = self.presenter.snapshot()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(jpeg)))
            self.end_headers()
            self.wfile.write(jpeg)
        elif path == "/state":
            self._json(HTTPStatus.OK, self.presenter.state())
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such resource {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        token = self.server.token  # type: ignore[attr-defined]
        if token and not hmac.compare_digest(self.headers.get("Authorization", "").encode(),
                                             f"Bearer {token}".encode()):
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "station token required"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"body must be JSON of at most {MAX_BODY_BYTES} bytes"})
            return
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(payload, dict):
                raise ValueError("expected a JSON object")
            if path == "/subject":
                result = asdict(self.presenter.set_display(payload))
            elif path == "/lighting":
                result = asdict(self.presenter.set_lighting(payload))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such resource {path}"})
                return
        except (ValueError, SceneError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except Exception as exc:  # noqa: BLE001 - a bad request must not take the presenter down
            log.exception("POST %s failed", path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": type(exc).__name__})
            return
        self._json(HTTPStatus.OK, {"ok": True, "state": result, "version": self.presenter.version})

    def _stream(self) -> None:
        p = self.presenter
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache, no-store")
        self.send_header("Pragma", "no-cache")
        self.end_headers()
        with p._frame_cond:
            p.clients += 1
            last = p.counter  # start with the next frame: a cached one may show an old scene
        try:
            while not p._stop.is_set():
                got = p.wait_frame(last, timeout_s=1.0)
                if got is None:
                    continue
                last, jpeg = got
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                                 f"X-Frame: {last}\r\n\r\n".encode() + jpeg + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass
        finally:
            with p._frame_cond:
                p.clients -= 1


class PresenterServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], presenter: Presenter, token: str | None = None):
        super().__init__(address, Handler)
        self.presenter = presenter
        # a station's token (sim/context.py): then every POST (what the camera sees) needs it
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.camera", description="the simulated subject presenter")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dataset", help="face dataset root (else FACEHIL_FACES, else packaged samples)")
    ap.add_argument("--fps", type=float, default=12.0)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    cv2.setNumThreads(1)  # a presenter frame is small; leave the cores to the reader under test
    identities = list_identities(resolve_faces(args.dataset))
    presenter = Presenter(SceneRenderer(identities), fps=args.fps)
    server = PresenterServer((args.host, args.port), presenter)
    host, port = server.server_address[:2]
    clock = threading.Thread(target=presenter.run, name="frame-clock", daemon=True)
    clock.start()
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    serving.start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY url=http://{host}:{port}/stream.mjpg control=http://{host}:{port}", flush=True)
    stop.wait()
    presenter.stop()
    server.shutdown()
    server.server_close()
    return 0


def start_camera(ctx: SimContext) -> None:
    """Station component: the subject presenter, on the station's face dataset."""
    argv = ctx.python("sim.camera", "--dataset", str(ctx.faces.root),
                      "--fps", str(ctx.options.get("camera_fps", 12)))
    fields = ctx.spawn_ready("camera", argv)
    if "url" not in fields or "control" not in fields:
        raise StationError(f"the subject presenter announced no url and control: READY {fields}")
    ctx.station["camera"] = {"url": fields["url"], "control": fields["control"]}


if __name__ == "__main__":
    sys.exit(main())
