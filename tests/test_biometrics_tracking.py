"""Last-resort detection passes and face tracking across a stream (real dlib models, real frames)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from harness.biometrics import FaceMatcher
from harness.biometrics.dlib_backend import DlibBackend
from harness.biometrics.scene import card_photo, live_frame
from harness.biometrics.tracking import FaceTracker, StreamMatcher
from harness.facedata import list_identities, resolve_faces


@pytest.fixture(scope="module")
def portrait():
    img = cv2.imread(str(list_identities(resolve_faces())[0].images[0]))
    assert img is not None
    return img


@pytest.fixture(scope="module")
def fast_only(dlib_backend):
    """The same detector without the last-resort passes (the pipeline before issue 14)."""
    return DlibBackend(last_resort=False, engine="dlib")


def _face_side(backend, img) -> float:
    d = backend.detect(img)
    assert d, "the portrait itself must be detectable"
    return max(d[0].width_px, d[0].height_px)


def test_small_face_in_a_crop_found_only_by_the_last_resort(dlib_backend, fast_only, portrait):
    # a face of ~28 px: upsampled once it is still under dlib's ~80 px window, twice it is not
    side = _face_side(dlib_backend, portrait)
    small = cv2.resize(portrait, None, fx=28 / side, fy=28 / side, interpolation=cv2.INTER_AREA)
    small = cv2.cvtColor(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)  # a grey card photo
    assert fast_only.detect(small) == []
    found = dlib_backend.detect(small)
    assert len(found) == 1 and dlib_backend.last_pass == "hog_eq_up2"
    stats = dlib_backend.pass_stats.as_dict()
    assert stats["hog_eq_up2"]["found"] >= 1 and stats["hog_eq_up2"]["total_ms"] > 0


def test_far_face_in_a_frame_found_by_the_stock_scan(dlib_backend, fast_only, portrait):
    # ~48 px face in a 640x480 frame: the half-scale and full-scale scans miss it; the
    # stock pipeline's upsampled colour scan (the last resort) finds it
    side = _face_side(dlib_backend, portrait)
    frame = live_frame(portrait, face_scale=48 / side)
    assert fast_only.detect(frame) == []
    found = dlib_backend.detect(frame)
    assert len(found) == 1 and dlib_backend.last_pass == "hog_rgb_up1"
    x0, y0, x1, y1 = found[0].box
    assert 250 < (x0 + x1) / 2 < 390 and 170 < (y0 + y1) / 2 < 310


def test_empty_frame_runs_every_pass_and_finds_nothing(dlib_backend):
    dlib_backend.pass_stats.runs.clear()
    assert dlib_backend.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    assert list(dlib_backend.pass_stats.runs) == ["hog_coarse", "hog_full", "hog_rgb_up1"]


def test_stream_tracks_the_face_and_redetects_every_n_frames(dlib_backend, portrait):
    matcher = FaceMatcher(dlib_backend, threshold=0.4)
    enrollment = matcher.enroll(card_photo(portrait))
    base = live_frame(portrait, 1.6)
    shifts = [(0, 3 * i) for i in range(12)]  # the face slides 3 px right per frame
    frames = [np.roll(base, s, axis=(0, 1)) for s in shifts]
    stream = StreamMatcher(matcher, enrollment, redetect_every=5)
    first_x = None
    for (dy, dx), frame in zip(shifts, frames):
        r = stream.verify(frame)
        assert r.accepted and r.face_count == 1
        single = matcher.verify(enrollment, frame)
        assert abs(r.score - single.score) < 0.03  # tracked boxes align as well as full detections
        cx = (r.box[0] + r.box[2]) / 2
        first_x = cx if first_x is None else first_x
        assert abs(cx - first_x - dx) < 12  # the box follows the face
    st = stream.tracker.state
    assert st.full_detections == 3 and st.tracked_frames == 9  # frames 0, 5 and 10 are full detections


def test_stream_reports_a_lost_face_then_finds_it_again(dlib_backend, portrait):
    matcher = FaceMatcher(dlib_backend, threshold=0.4)
    stream = StreamMatcher(matcher, matcher.enroll(card_photo(portrait)), redetect_every=30)
    face = live_frame(portrait, 1.6)
    empty = np.full_like(face, 120)
    reasons = [stream.verify(f).reason for f in (face, face, empty, empty, face)]
    assert reasons == ["accepted", "accepted", "no_face", "no_face", "accepted"]
    assert stream.tracker.state.losses == 1  # the tracked face vanished once; full scans after that


def test_tracking_needs_the_dlib_detector():
    class Other:
        name = "insightface"

    with pytest.raises(ValueError, match="dlib backend"):
        FaceTracker(Other())
