"""The simulated screen camera: a camera on the rig looking at the reader's panel in its fixture
bezel, as an MJPEG stream OpenCV opens (hardware.md 11.1).

`python -m sim.screen_camera --panel http://HOST:PORT [--fps 15] [--perspective-deg 20] [--glare 0.3]
[--blur 0.3] [--exposure-drift 0.3] [--moire 0.2] [--seed 13]` prints
``READY url=http://HOST:PORT/stream.mjpg control=http://HOST:PORT``.

Each frame: the reader's current panel (its ``/snapshot.jpg``; black while it is off) pasted
into the bezel with its four ArUco markers (sim/fixture.py), the stylus drawn where it rests on
the glass, then seen through the camera: perspective from the mounting angle, blur, glare,
exposure drift, moiré and sensor noise. Each effect's strength is 0..1 (perspective in
degrees); 0 turns it off. ``GET /state``'s ``meta`` holds the panel screen a frame was made
from (ground truth for benches; a host under test reads the picture only).

Also the station component ``start_screen(ctx)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from sim.context import SimContext, StationError
from sim.fixture import ARUCO_DICT, FIXTURE, Fixture
from sim.mjpeg import MjpegServer
from sim.reader.display import PANEL_H_PX, PANEL_W_PX

log = logging.getLogger("sim.screen_camera")

QUIET_ZONE_MM = 3.0  # white margin around each marker (ArUco needs contrast at its border)
BEZEL_MARGIN_MM = 14.0  # fixture plate beyond the marker centres
STYLUS_TIP_MM = 3.5
PANEL_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Effects:
    perspective_deg: float = 20.0  # the camera's tilt off the panel normal
    glare: float = 0.3
    blur: float = 0.3
    exposure_drift: float = 0.3
    moire: float = 0.2
    width_px: int = 1280
    height_px: int = 720

    def __post_init__(self) -> None:
        if not 0 <= self.perspective_deg <= 45:
            raise ValueError("perspective_deg must be within 0..45")
        for name in ("glare", "blur", "exposure_drift", "moire"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within 0..1")
        if not (160 <= self.width_px <= 4096 and 120 <= self.height_px <= 4096):
            raise ValueError("the camera resolution must be within 160x120..4096x4096")


class ScreenCamera:
    """Renders camera frames from panel frames. Pure but for the drift clock and noise seed."""

    def __init__(self, effects: Effects = Effects(), fixture: Fixture = FIXTURE, seed: int = 13):
        self.effects = effects
        self.fixture = fixture
        cv2.setRNGSeed(seed)  # the sensor noise (cv2.randn)
        self.px_per_mm = 1.0 / fixture.pixel_pitch_mm  # the panel pastes 1:1 into the fixture plate
        self.origin_mm = -BEZEL_MARGIN_MM  # plate's top-left corner, fixture mm
        w_mm = fixture.width_mm + 2 * BEZEL_MARGIN_MM
        h_mm = fixture.height_mm + 2 * BEZEL_MARGIN_MM
        self.plate_size = (int(round(w_mm * self.px_per_mm)), int(round(h_mm * self.px_per_mm)))
        self.plate = self._draw_plate()
        self.homography = self._camera_homography()  # plate px -> camera px
        self._moire = self._moire_pattern()
        self._glare = self._glare_map()
        self._noise = self._noise_maps()
        self._frames = 0
        self._t0 = time.monotonic()

    # -- the fixture plate ------------------------------------------------------------------
    def _plate_px(self, x_mm: float, y_mm: float) -> tuple[int, int]:
        return (int(round((x_mm - self.origin_mm) * self.px_per_mm)), int(round((y_mm - self.origin_mm) * self.px_per_mm)))

    def _draw_plate(self) -> np.ndarray:
        w, h = self.plate_size
        plate = np.full((h, w, 3), 45, np.uint8)  # anodised grey bezel
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, ARUCO_DICT))
        side_px = int(round(self.fixture.marker_side_mm * self.px_per_mm))
        quiet = int(round(QUIET_ZONE_MM * self.px_per_mm))
        for marker_id, (cx, cy) in self.fixture.marker_centres_mm().items():
            x0, y0 = self._plate_px(cx, cy)
            x0, y0 = x0 - side_px // 2, y0 - side_px // 2
            plate[y0 - quiet:y0 + side_px + quiet, x0 - quiet:x0 + side_px + quiet] = 255
            marker = cv2.aruco.generateImageMarker(dictionary, marker_id, side_px)
            plate[y0:y0 + side_px, x0:x0 + side_px] = marker[:, :, None]
        return plate

    def compose(self, panel_bgr: np.ndarray | None, touch_px: tuple[float, float] | None = None) -> np.ndarray:
        """The fixture plate with the panel (None: dark) and the stylus tip if it rests on the glass."""
        plate = self.plate.copy()
        x0, y0 = self._plate_px(self.fixture.panel_x_mm, self.fixture.panel_y_mm)
        if panel_bgr is not None:
            if panel_bgr.shape[:2] != (PANEL_H_PX, PANEL_W_PX):
                panel_bgr = cv2.resize(panel_bgr, (PANEL_W_PX, PANEL_H_PX))
            plate[y0:y0 + PANEL_H_PX, x0:x0 + PANEL_W_PX] = panel_bgr
        else:
            plate[y0:y0 + PANEL_H_PX, x0:x0 + PANEL_W_PX] = 8  # an unlit panel is near black
        if touch_px is not None:
            c = (int(round(x0 + touch_px[0])), int(round(y0 + touch_px[1])))
            r = int(round(STYLUS_TIP_MM * self.px_per_mm))
            cv2.circle(plate, (c[0] + r // 2, c[1] + r), r, (70, 70, 70), -1, cv2.LINE_AA)  # its shadow
            cv2.circle(plate, c, r, (25, 25, 25), -1, cv2.LINE_AA)  # the conductive rubber tip
        return plate

    # -- the camera ---------------------------------------------------------------------------
    def _camera_homography(self) -> np.ndarray:
        """A pinhole camera tilted ``perspective_deg`` about the panel's horizontal axis (and a
        third of it about the vertical), framing the whole plate."""
        e = self.effects
        w_mm = self.plate_size[0] / self.px_per_mm
        h_mm = self.plate_size[1] / self.px_per_mm
        corners_mm = np.array([[0, 0, 0], [w_mm, 0, 0], [w_mm, h_mm, 0], [0, h_mm, 0]], np.float64)
        corners_mm -= [w_mm / 2, h_mm / 2, 0]
        tilt, yaw = math.radians(e.perspective_deg), math.radians(e.perspective_deg / 3)
        rx = np.array([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]])
        ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
        distance_mm = 400.0
        cam = (ry @ rx @ corners_mm.T).T + [0, 0, distance_mm]
        proj = cam[:, :2] / cam[:, 2:3]
        # scale and centre so the plate fills 90% of the frame
        lo, hi = proj.min(axis=0), proj.max(axis=0)
        scale = 0.9 * min(e.width_px / (hi[0] - lo[0]), e.height_px / (hi[1] - lo[1]))
        dst = (proj - (lo + hi) / 2) * scale + [e.width_px / 2, e.height_px / 2]
        src = np.array([[0, 0], [self.plate_size[0], 0], list(self.plate_size), [0, self.plate_size[1]]], np.float32)
        return cv2.getPerspectiveTransform(src, dst.astype(np.float32))

    def _moire_pattern(self) -> np.ndarray | None:
        """Two fine gratings at slightly different pitch and angle (the panel's pixel grid against
        the sensor's) beat into broad bands: a darkening factor map, uint8 in 1/255ths."""
        e = self.effects
        if e.moire <= 0:
            return None
        yy, xx = np.mgrid[0:e.height_px, 0:e.width_px].astype(np.float32)
        a = np.sin(2 * np.pi * (xx * math.cos(0.05) + yy * math.sin(0.05)) / 2.9)
        b = np.sin(2 * np.pi * (xx * math.cos(-0.03) + yy * math.sin(-0.03)) / 3.1)
        beat = cv2.GaussianBlur(a * b, (0, 0), 2.0)  # the fine carrier blurs out, the beat stays
        beat /= max(1e-6, float(np.abs(beat).max()))
        factor = 1.0 - 0.35 * e.moire * (0.5 + 0.5 * beat)
        return cv2.merge([np.round(factor * 255).astype(np.uint8)] * 3)

    def _glare_map(self) -> np.ndarray | None:
        """A ceiling light reflected in the glass: a broad bright blob over the upper right of the panel."""
        e = self.effects
        if e.glare <= 0:
            return None
        yy, xx = np.mgrid[0:e.height_px, 0:e.width_px].astype(np.float32)
        cx, cy, sx, sy = 0.66 * e.width_px, 0.35 * e.height_px, 0.10 * e.width_px, 0.12 * e.height_px
        blob = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2) / 2)
        return cv2.merge([np.round(170.0 * e.glare * blob).astype(np.uint8)] * 3)

    def _noise_maps(self, count: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
        """Sensor noise (sigma 2 levels), drawn once: (add, subtract) uint8 pairs cycled per frame."""
        shape = (self.effects.height_px, self.effects.width_px, 3)
        maps = []
        noise = np.empty(shape, np.int16)
        for _ in range(count):
            cv2.randn(noise, 0, 2)  # much faster than numpy's normal for a frame this size
            maps.append((np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)))
        return maps

    def view(self, plate: np.ndarray, t_s: float | None = None) -> np.ndarray:
        """The plate through the camera; uint8 operations only (about 30 ms for 1280x720 on one core)."""
        e = self.effects
        out = cv2.warpPerspective(plate, self.homography, (e.width_px, e.height_px), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(30, 30, 30))
        if e.blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), (0.3 + 2.2 * e.blur) * e.width_px / 1280)  # focus, in 720p pixels
        if self._moire is not None:
            out = cv2.multiply(out, self._moire, scale=1 / 255)
        t = (time.monotonic() - self._t0) if t_s is None else t_s
        gain = 1.0 + 0.3 * e.exposure_drift * math.sin(2 * math.pi * t / 7.0)  # slow: the lab's light, not the camera
        if gain != 1.0:
            out = cv2.LUT(out, np.clip(np.arange(256) * gain, 0, 255).astype(np.uint8))
        if self._glare is not None:
            out = cv2.add(out, self._glare)
        add, sub = self._noise[self._frames % len(self._noise)]
        self._frames += 1
        return cv2.subtract(cv2.add(out, add), sub)


class PanelFeed:
    """The reader's panel, fetched per camera frame: ``/snapshot.jpg`` and its ``X-Meta``."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/").removesuffix("/stream.mjpg")

    def grab(self) -> tuple[np.ndarray | None, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.base_url + "/snapshot.jpg", timeout=PANEL_TIMEOUT_S) as resp:
                meta = json.loads(resp.headers.get("X-Meta") or "{}")
                data = resp.read()
        except (OSError, ValueError) as exc:  # the reader is gone or restarting: a dark panel
            log.debug("panel unavailable: %s", exc)
            return None, {"screen": "off"}
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return frame, meta


def frame_source(camera: ScreenCamera, feed: PanelFeed):
    def source() -> tuple[np.ndarray, dict[str, Any]]:
        exposure_s = time.monotonic()  # the panel as it is now is what this frame shows
        panel, meta = feed.grab()
        touch = meta.get("touch")
        frame = camera.view(camera.compose(panel, tuple(touch) if touch else None))
        return frame, {"panel_screen": meta.get("screen", "off"), "t_monotonic_s": exposure_s,
                       "panel_since_monotonic_s": meta.get("since_monotonic_s")}
    return source


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.screen_camera", description=__doc__.split("\n\n")[0])
    ap.add_argument("--panel", required=True, help="the reader's panel video, http://HOST:PORT[/stream.mjpg]")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fps", type=float, default=15.0)
    d = Effects()
    ap.add_argument("--perspective-deg", type=float, default=d.perspective_deg)
    ap.add_argument("--glare", type=float, default=d.glare)
    ap.add_argument("--blur", type=float, default=d.blur)
    ap.add_argument("--exposure-drift", type=float, default=d.exposure_drift)
    ap.add_argument("--moire", type=float, default=d.moire)
    ap.add_argument("--width", type=int, default=d.width_px)
    ap.add_argument("--height", type=int, default=d.height_px)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    try:
        effects = Effects(args.perspective_deg, args.glare, args.blur, args.exposure_drift, args.moire,
                          args.width, args.height)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)  # leave the cores to the reader and the host under test
    camera = ScreenCamera(effects, seed=args.seed)
    server = MjpegServer(frame_source(camera, PanelFeed(args.panel)), args.fps, args.host, args.port).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY url={server.url} control=http://{server.host}:{server.port}", flush=True)
    stop.wait()
    server.stop()
    return 0


OPTION_KEYS = {"perspective_deg": "screen_perspective_deg", "glare": "screen_glare", "blur": "screen_blur",
               "exposure_drift": "screen_exposure_drift", "moire": "screen_moire"}


def start_screen(ctx: SimContext) -> None:
    """Station component: the screen camera on the reader's panel; writes ``[screen]`` (hardware.md 7)."""
    panel = ctx.station.get("dut", {}).get("panel")
    if not panel:
        raise StationError("the screen camera needs the reader's panel video ([dut] panel) started first")
    try:
        effects = Effects(**{k: float(ctx.options[o]) for k, o in OPTION_KEYS.items() if o in ctx.options})
    except (TypeError, ValueError) as exc:
        raise StationError(f"screen camera option: {exc}") from exc
    argv = ["--panel", panel, "--fps", str(ctx.options.get("screen_fps", 15))]
    for key in OPTION_KEYS:
        argv += [f"--{key.replace('_', '-')}", str(getattr(effects, key))]
    ready = ctx.spawn_ready("screen-camera", ctx.python("sim.screen_camera", *argv))
    if "url" not in ready:
        raise StationError(f"the screen camera announced no url: READY {ready}")
    ctx.station["screen"] = {"camera": ready["url"], "control": ready.get("control", ""), **FIXTURE.station_table(),
                             "effects": {k: v for k, v in asdict(effects).items()}}


if __name__ == "__main__":
    sys.exit(main())
