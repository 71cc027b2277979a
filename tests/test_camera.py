"""drivers/camera.py on real sources: the subject presenter's MJPEG stream (sim/camera.py),
video files and image sequences written here, and a stream that stalls or disappears."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from drivers.camera import (CameraDropped, CameraEnded, CameraTimeout, CameraUnavailable, OpenCVCamera,
                            parse_source)
from harness.facedata import list_identities, resolve_faces
from sim import camera_marker
from sim.rig_process import SimProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def faces():
    source = resolve_faces()
    people = list_identities(source)
    return source, people


@pytest.fixture(scope="module")
def presenter(faces):
    with SimProcess("sim.camera", "--dataset", str(faces[0].root), "--fps", "12") as p:
        yield p


def post(control: str, path: str, payload) -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(control + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def state(control: str) -> dict:
    return json.loads(urllib.request.urlopen(control + "/state", timeout=5).read())


def show(presenter, **payload) -> int:
    status, body = post(presenter.ready["control"], "/subject", payload)
    assert status == 200, body
    return body["version"]


def fresh(cam: OpenCVCamera, presenter) -> np.ndarray:
    """A frame sent after the last change (the counter tells which frames came after it)."""
    first = state(presenter.ready["control"])["frame"]
    while True:
        frame = cam.read(timeout_s=5)
        n = camera_marker.read(frame.image)
        if n is not None and n > first:
            return frame.image


def faces_in(image: np.ndarray) -> int:
    import dlib

    detector = dlib.get_frontal_face_detector()
    return len(detector(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), 1))


@pytest.fixture(scope="module")
def cam(presenter):
    with OpenCVCamera(presenter.ready["url"], read_timeout_s=5) as c:
        yield c


def test_stream_frames_are_640x480_with_increasing_counters_and_timestamps(cam):
    frames = [cam.read(timeout_s=5) for _ in range(6)]
    assert all((f.width, f.height) == (640, 480) for f in frames)
    counters = [camera_marker.read(f.image) for f in frames]
    assert None not in counters
    assert counters == sorted(counters) and len(set(counters)) == len(counters)
    stamps = [f.monotonic_s for f in frames]
    assert stamps == sorted(stamps) and [f.index for f in frames] == sorted({f.index for f in frames})


def test_consumer_gets_the_newest_frame_not_a_buffered_one(cam, presenter):
    first = camera_marker.read(cam.read(timeout_s=5).image)
    control = presenter.ready["control"]
    import time

    deadline = time.monotonic() + 20
    while state(control)["frame"] < first + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    newest = camera_marker.read(cam.read(timeout_s=5).image)
    assert newest > first + 1  # a buffered reader would hand out first + 1 next


def test_what_is_shown_reaches_the_camera(cam, presenter, faces):
    people = faces[1]
    who, carer = people[0].name, people[1].name
    show(presenter, mode="subject", id=who)
    assert faces_in(fresh(cam, presenter)) == 1
    show(presenter, mode="subject", id=who, carer=carer)
    assert faces_in(fresh(cam, presenter)) == 2
    show(presenter, mode="noface")
    assert faces_in(fresh(cam, presenter)) == 0
    show(presenter, mode="attack", id=who)
    attack = fresh(cam, presenter)
    centre = attack[160:360, 240:400].astype(int)
    assert np.abs(centre[..., 2] - centre[..., 0]).mean() < 6  # a greyscale print
    show(presenter, mode="blank")
    blank = fresh(cam, presenter)
    assert blank[16:].mean() < 3  # dark apart from the counter row


def test_every_condition_renders_and_changes_the_picture(presenter, faces):
    from harness.biometrics.conditions import NAMES

    control = presenter.ready["control"]
    who = faces[1][0].name
    show(presenter, mode="subject", id=who)
    nominal = cv2.imdecode(np.frombuffer(urllib.request.urlopen(control + "/snapshot.jpg").read(), np.uint8),
                           cv2.IMREAD_COLOR)
    for name in NAMES:
        if name == "nominal":
            continue
        show(presenter, mode="subject", id=who, condition=name)
        snap = cv2.imdecode(np.frombuffer(urllib.request.urlopen(control + "/snapshot.jpg").read(), np.uint8),
                            cv2.IMREAD_COLOR)
        assert snap.shape == (480, 640, 3)
        changed_px = int((np.abs(snap[16:].astype(int) - nominal[16:].astype(int)).max(axis=2) > 8).sum())
        assert changed_px > 1000, f"{name} left the frame unchanged"
    show(presenter, mode="blank")


def test_lighting_changes_exposure(presenter, faces):
    control = presenter.ready["control"]
    show(presenter, mode="subject", id=faces[1][0].name)

    def face_brightness() -> float:
        snap = cv2.imdecode(np.frombuffer(urllib.request.urlopen(control + "/snapshot.jpg").read(), np.uint8),
                            cv2.IMREAD_GRAYSCALE)
        return float(snap[150:350, 220:380].mean())

    assert post(control, "/lighting", {"lux": 500, "backlight_lux": 0})[0] == 200
    bright = face_brightness()
    assert post(control, "/lighting", {"lux": 60})[0] == 200
    dim = face_brightness()
    assert post(control, "/lighting", {"lux": 500, "backlight_lux": 3000})[0] == 200
    backlit = face_brightness()
    assert dim < bright * 0.6 and backlit < bright
    assert state(control)["lighting"] == {"lux": 500.0, "cct_k": 5000.0, "backlight_lux": 3000.0}
    post(control, "/lighting", {"backlight_lux": 0})


@pytest.mark.parametrize("path,payload,fragment", [
    ("/subject", {"mode": "subject", "id": "Nobody_Known_Here"}, "unknown subject"),
    ("/subject", {"mode": "subject"}, "needs an id"),
    ("/subject", {"mode": "dance"}, "mode must be"),
    ("/subject", {"mode": "subject", "id": "@first", "condition": "fog"}, "condition must be"),
    ("/subject", {"mode": "subject", "id": "@first", "image": 999}, "out of range"),
    ("/subject", {"mode": "subject", "id": "@first", "image": "1"}, "whole number"),
    ("/lighting", {"lux": -1}, "lux must be"),
    ("/lighting", {"cct_k": "warm"}, "must be a number"),
    ("/lighting", b"{not json", "Expecting"),
    ("/lighting", b"[1, 2]", "JSON object"),
    ("/nowhere", {}, "no such resource"),
])
def test_bad_control_requests_get_clear_errors_and_change_nothing(presenter, faces, path, payload, fragment):
    if isinstance(payload, dict) and payload.get("id") == "@first":
        payload = {**payload, "id": faces[1][0].name}
    control = presenter.ready["control"]
    before = state(control)
    status, body = post(control, path, payload)
    assert status in (400, 404) and fragment in body["error"]
    after = state(control)
    assert (after["display"], after["lighting"], after["version"]) == \
        (before["display"], before["lighting"], before["version"])


def test_oversized_body_is_refused(presenter):
    status, body = post(presenter.ready["control"], "/subject", b"x" * 10000)
    assert status == 400 and "at most" in body["error"]


def test_settings_report_what_a_stream_accepted(presenter):
    with OpenCVCamera(presenter.ready["url"], width=320, height=240) as c:
        width = c.settings["width"]
        assert width.requested == 320 and not width.applied and width.accepted == 640
        assert c.read(timeout_s=5).width == 640


def test_recording_is_opt_in_and_writes_a_clip(presenter, tmp_path):
    with OpenCVCamera(presenter.ready["url"]) as c:
        for _ in range(3):
            c.read(timeout_s=5)
        assert list(tmp_path.iterdir()) == []  # nothing is written unless asked
        c.start_recording(tmp_path / "clip.avi", fps=12)
        got = [camera_marker.read(c.read(timeout_s=5).image) for _ in range(5)]
        rec = c.stop_recording()
    assert rec.frames >= 5
    cap = cv2.VideoCapture(str(tmp_path / "clip.avi"))
    counters = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        counters.append(camera_marker.read(img))
    cap.release()
    assert len(counters) == rec.frames and set(got) <= set(counters)


def _marked(n: int) -> np.ndarray:
    img = np.full((120, 160, 3), 90, np.uint8)
    camera_marker.stamp(img, n)
    return img


def test_video_file_reads_in_order_then_ends(tmp_path):
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for n in range(5):
        w.write(_marked(100 + n))
    w.release()
    with OpenCVCamera(str(path)) as c:
        assert [camera_marker.read(c.read().image) for _ in range(5)] == [100, 101, 102, 103, 104]
        with pytest.raises(CameraEnded):
            c.read()
    with OpenCVCamera(str(path), loop=True) as c:
        assert [camera_marker.read(c.read().image) for _ in range(7)] == [100, 101, 102, 103, 104, 100, 101]


@pytest.mark.parametrize("pattern", ["seq_%03d.png", "seq_*.png"])
def test_image_sequences(tmp_path, pattern):
    for n in range(4):
        cv2.imwrite(str(tmp_path / f"seq_{n:03d}.png"), _marked(n))
    src = parse_source(str(tmp_path / pattern))
    assert src.kind == "sequence"
    with OpenCVCamera(src) as c:
        assert [camera_marker.read(c.read().image) for _ in range(4)] == [0, 1, 2, 3]
        with pytest.raises(CameraEnded):
            c.read()


@pytest.mark.parametrize("spec,kind", [(0, "device"), ("2", "device"), ("camera:1", "device"),
                                       ("/dev/video3", "device"), ("http://h/stream.mjpg", "url"),
                                       ("rtsp://cam.local/live", "url"), ("clip.mp4", "file"),
                                       ("f/%04d.jpg", "sequence"), ("f/*.jpg", "sequence")])
def test_parse_source(spec, kind):
    assert parse_source(spec).kind == kind


def test_unavailable_sources(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for spec in (17, str(tmp_path / "missing.avi"), str(tmp_path / "none_*.png"),
                 f"http://127.0.0.1:{port}/stream.mjpg"):
        with pytest.raises(CameraUnavailable):
            OpenCVCamera(spec, open_timeout_s=2, reconnect=False).open()


class StallingStream:
    """An MJPEG server that sends two frames and then goes quiet, keeping the connection open."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/stream.mjpg"
        self.release = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        ok, jpeg = cv2.imencode(".jpg", _marked(7))
        part = (b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode() + b"\r\n\r\n"
                + jpeg.tobytes() + b"\r\n")
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=f\r\n\r\n"
                             + part + part)
                self.release.wait(30)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        self.sock.close()
        self.release.set()


def test_stalled_stream_times_out_then_drops():
    srv = StallingStream()
    try:
        with OpenCVCamera(srv.url, read_timeout_s=1, open_timeout_s=3, reconnect=False) as c:
            c.read(timeout_s=5)
            with pytest.raises(CameraTimeout):
                while True:  # the frames it did send, then silence
                    c.read(timeout_s=0.5)
            srv.close()
            with pytest.raises(CameraDropped):
                c.read(timeout_s=10)
    finally:
        srv.close()


def test_presenter_restart_is_reconnected_and_a_lasting_drop_is_reported(faces):
    p = SimProcess("sim.camera", "--dataset", str(faces[0].root), "--fps", "12")
    port = p.ready["control"].rsplit(":", 1)[1]
    try:
        with OpenCVCamera(p.ready["url"], read_timeout_s=2, backoff_s=0.1, reconnect_attempts=8) as c:
            assert c.read(timeout_s=5).epoch == 0
            p.stop()
            p = SimProcess("sim.camera", "--dataset", str(faces[0].root), "--port", port, "--fps", "12")
            frame = c.read(timeout_s=20)
            while frame.epoch == 0:
                frame = c.read(timeout_s=20)
            assert frame.epoch == 1 and c.stats["reconnects"] == 1 and c.stats["drops"] == 1
            assert camera_marker.read(frame.image) is not None
            c.reconnect_attempts = 2  # the presenter will not come back this time: give up sooner
            p.stop()
            with pytest.raises(CameraDropped, match="reconnect"):
                while True:
                    c.read(timeout_s=30)
    finally:
        p.stop()
