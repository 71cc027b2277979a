"""The rig's screen camera (sim/screen_camera.py) as a process on a live reader panel: an MJPEG
stream cv2.VideoCapture opens, its four ArUco bezel markers found by cv2.aruco at the default
effect strengths, placed where the fixture geometry says, the panel readable through them."""

from __future__ import annotations

import time
import urllib.request

import cv2
import numpy as np
import pytest

from sim.fixture import FIXTURE, MARKER_IDS
from sim.reader.display import PANEL_H_PX, PANEL_W_PX, render_panel
from sim.rig_process import SimProcess
from sim.screen_camera import Effects, ScreenCamera

from panel_reader import panel_reader

WAIT_S = 5.0
DETECTOR = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50))


def marker_centres(frame) -> dict[int, np.ndarray]:
    corners, ids, _ = DETECTOR.detectMarkers(frame)
    if ids is None:
        return {}
    return {int(i): c.reshape(4, 2).mean(axis=0) for i, c in zip(ids.ravel(), corners) if int(i) in MARKER_IDS}


def panel_through(frame, centres) -> np.ndarray:
    """The panel rectified from the camera frame by the markers and the documented geometry."""
    mm = FIXTURE.marker_centres_mm()
    src = np.float32([centres[i] for i in MARKER_IDS])
    dst = np.float32([FIXTURE.mm_to_panel_px(*mm[i]) for i in MARKER_IDS])
    h = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(frame, h, (PANEL_W_PX, PANEL_H_PX))


def similarity(a, b) -> float:
    ga = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gb = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return float(cv2.matchTemplate(ga, gb, cv2.TM_CCOEFF_NORMED).max())


def test_stream_opens_and_markers_and_panel_are_seen(tmp_path):
    with panel_reader(tmp_path) as (sim, hw, dut, panel):
        dut.wait_for_screen("idle", WAIT_S)
        hw.insert()
        shown = dut.wait_for_screen("method_select", WAIT_S).fields
        cam = SimProcess("sim.screen_camera", "--panel", panel.panel_url, "--fps", "10")
        try:
            cap = cv2.VideoCapture(cam.ready["url"])
            assert cap.isOpened()
            found, sims = 0, []
            for _ in range(8):
                ok, frame = cap.read()
                assert ok and frame.shape == (720, 1280, 3)
                centres = marker_centres(frame)
                if len(centres) == 4:
                    found += 1
                    sims.append(similarity(panel_through(frame, centres), render_panel(shown)))
            cap.release()
            # each part says when its scene was taken, on the host's monotonic clock
            with urllib.request.urlopen(cam.ready["url"], timeout=WAIT_S) as stream:
                head = b""
                while b"\r\n\r\n" not in head.split(b"--facehilframe", 1)[-1]:
                    head += stream.read1(4096)
                arrived_s = time.monotonic()
            part = head.split(b"--facehilframe", 1)[1].split(b"\r\n\r\n", 1)[0].decode()
            fields = dict(line.split(": ", 1) for line in part.strip().splitlines() if ": " in line)
            assert int(fields["X-Frame"]) > 0
            assert arrived_s - 2.0 < float(fields["X-Monotonic-S"]) <= arrived_s
        finally:
            cam.stop()
    assert found >= 7, f"all four markers in {found} of 8 frames"
    # what the markers say is the panel is the panel: a shifted geometry would smear this
    assert min(sims) > 0.8, sims
    other = render_panel({"screen": "idle", "msg": "マイナンバーカードを置いてください。"})
    assert max(similarity(other, render_panel(shown)), 0) < min(sims)


def test_effects_change_the_picture_and_stay_within_their_ranges():
    panel = render_panel({"screen": "idle", "msg": "マイナンバーカードを置いてください。"})
    small = dict(width_px=800, height_px=450)  # a cheaper camera: the effects scale with it
    off = dict(perspective_deg=0, glare=0, blur=0, exposure_drift=0, moire=0, **small)
    clean = ScreenCamera(Effects(**off)).view(ScreenCamera(Effects(**off)).compose(panel), 0.0)
    for name, value in (("glare", 1.0), ("blur", 1.0), ("moire", 1.0), ("perspective_deg", 35.0)):
        cam = ScreenCamera(Effects(**{**off, name: value}))
        seen = cam.view(cam.compose(panel), 0.0)
        assert np.abs(seen.astype(int) - clean.astype(int)).mean() > 2, name
        assert len(marker_centres(seen)) == 4, f"{name} at full strength hides markers"
    drift = ScreenCamera(Effects(**{**off, "exposure_drift": 1.0}))
    plate = drift.compose(panel)
    assert drift.view(plate, 7 / 4).mean() > drift.view(plate, 3 * 7 / 4).mean() + 10  # brighter, then darker
    # the stylus is drawn where it rests on the glass, only then
    plain = ScreenCamera(Effects(**off))
    x0 = int(FIXTURE.panel_x_mm / FIXTURE.pixel_pitch_mm + 14 / FIXTURE.pixel_pitch_mm)
    touched = plain.compose(panel, (700.0, 300.0))
    assert touched[int(round((FIXTURE.panel_y_mm + 14) / FIXTURE.pixel_pitch_mm)) + 300, x0 + 700].max() < 60
    assert plain.compose(panel)[int(round((FIXTURE.panel_y_mm + 14) / FIXTURE.pixel_pitch_mm)) + 300,
                                x0 + 700].min() > 200
    for bad in (dict(glare=1.5), dict(perspective_deg=60), dict(blur=-0.1)):
        with pytest.raises(ValueError):
            Effects(**bad)
