"""The dlib backend and the matcher with real weights: card photo vs live frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from harness.biometrics import FaceBackend, FaceMatcher, calibration, conditions
from harness.biometrics.evaluate import EvalConfig, evaluate
from harness.biometrics.datasets import load_lfw_pairs
from harness.biometrics.scene import card_photo, live_frame
from harness.facedata import list_identities, resolve_faces


@pytest.fixture(scope="module")
def portrait():
    """One portrait from the dataset (or the packaged samples: one photo suffices here)."""
    ident = list_identities(resolve_faces())[0]
    img = cv2.imread(str(ident.images[0]))
    assert img is not None
    return img


@pytest.fixture(scope="module")
def lfw(faces_several):
    root = faces_several.root / "lfw-dev"
    if not (root / "pairs.txt").is_file():
        pytest.skip(f"needs lfw-dev/pairs.txt under FACEHIL_FACES ({faces_several.root})")
    return root


def _lfw(root, name, i):
    img = cv2.imread(str(root / name / f"{name}_{i:04d}.jpg"))
    assert img is not None
    return img


def test_backend_follows_the_protocol(dlib_backend):
    assert isinstance(dlib_backend, FaceBackend)
    assert dlib_backend.model_version.startswith("dlib-")
    assert dlib_backend.default_threshold is not None


def test_detect_gives_box_landmarks_and_quality(dlib_backend, portrait):
    frame = live_frame(portrait, 1.6)
    dets = dlib_backend.detect(frame)
    assert len(dets) == 1
    d = dets[0]
    assert d.landmarks.shape == (5, 2)
    x0, y0, x1, y1 = d.box
    assert 160 < x0 < x1 < 480 and 80 < y0 < y1 < 400  # the face is centred in the frame
    assert all(x0 - 20 <= x <= x1 + 20 and y0 - 20 <= y <= y1 + 20 for x, y in d.landmarks)
    chip = dlib_backend.align(frame, d)
    assert chip.shape == (150, 150, 3)
    emb = dlib_backend.embed(chip)
    assert emb.shape == (128,) and emb.dtype == np.float32
    assert dlib_backend.compare(emb, emb) == pytest.approx(1.0)


def test_card_photo_enrolled_once_then_live_frame_matches(dlib_backend, portrait):
    matcher = FaceMatcher(dlib_backend, threshold=0.4)
    card = card_photo(portrait)
    assert card[:12] in (b"\x00\x00\x00\x0cjP  \r\n\x87\n",) or card[:4] == b"\xff\x4f\xff\x51"  # JPEG 2000
    enrollment = matcher.enroll(card)
    assert enrollment.ok and enrollment.face_count == 1
    result = matcher.verify(enrollment, live_frame(portrait, 1.6))
    assert result.accepted and result.reason == "accepted"
    assert result.face_count == 1
    assert result.score >= 0.4
    assert set(result.timings_ms) >= {"decode", "detect", "align", "embed", "compare", "total"}


def test_genuine_accepted_and_impostor_rejected(dlib_backend, lfw):
    matcher = FaceMatcher(dlib_backend, threshold=0.4)
    enrollment = matcher.enroll(card_photo(_lfw(lfw, "Kim_Clijsters", 5)))
    genuine = matcher.verify(enrollment, live_frame(_lfw(lfw, "Kim_Clijsters", 10), 1.6))
    impostor = matcher.verify(enrollment, live_frame(_lfw(lfw, "John_Edwards", 5), 1.6))
    assert genuine.accepted
    assert not impostor.accepted and impostor.reason == "below_threshold"
    assert genuine.score > impostor.score + 0.1


def test_several_faces_largest_central_by_default(dlib_backend, portrait):
    frame = np.full((480, 960, 3), 120, np.uint8)
    big = cv2.resize(portrait, None, fx=1.6, fy=1.6)[:480, :400]
    small = cv2.resize(portrait, None, fx=1.3, fy=1.3)  # ~140 px face: still over the reader's minimum
    frame[:big.shape[0], 280:280 + big.shape[1]] = big  # centred, large
    frame[:small.shape[0], 700:700 + small.shape[1]] = small[:, : 960 - 700]
    matcher = FaceMatcher(dlib_backend, threshold=0.4)
    enrollment = matcher.enroll(card_photo(portrait))
    result = matcher.verify(enrollment, frame)
    assert result.face_count == 2
    assert 280 <= (result.box[0] + result.box[2]) / 2 <= 680  # the big central face was matched
    single = FaceMatcher(dlib_backend, threshold=0.4, policy="single").verify(enrollment, frame)
    assert single.reason == "multiple_faces" and not single.accepted and single.face_count == 2


def test_bad_frames_are_reasons_not_crashes(dlib_backend, portrait):
    matcher = FaceMatcher(dlib_backend, threshold=0.4)
    enrollment = matcher.enroll(card_photo(portrait))
    frame = live_frame(portrait, 1.6)
    cases = {
        "no_face": np.full((480, 640, 3), 128, np.uint8),
        "unreadable": b"\x89PNG\r\n\x1a\n broken",
        "too_large": b"P5\n20000 20000\n255\n",
        "unsupported": np.zeros((480, 640, 2), np.uint8),
    }
    for reason, frame_in in cases.items():
        r = matcher.verify(enrollment, frame_in)
        assert (r.reason, r.accepted, r.score) == (reason, False, None)
    # convertible layouts still match
    rgba = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    deep = frame.astype(np.uint16) * 257
    for f in (rgba, grey, deep):
        r = matcher.verify(enrollment, f)
        assert r.face_count == 1 and r.score is not None


def test_unenrollable_card_photo_fails_every_verify(dlib_backend, portrait):
    matcher = FaceMatcher(dlib_backend, threshold=0.4)
    enrollment = matcher.enroll(np.full((225, 180), 200, np.uint8))
    assert not enrollment.ok and enrollment.reason == "no_face"
    r = matcher.verify(enrollment, live_frame(portrait, 1.6))
    assert r.reason == "enrolment_failed" and not r.accepted


def test_threshold_from_a_calibration_file(dlib_backend, tmp_path):
    cal = calibration.Calibration(backend="dlib", model_version=dlib_backend.model_version, target_fmr=1e-3,
                                  threshold=0.47, fmr_achieved=0.0007, fnmr=0.05, impostors=1467, genuine=1493,
                                  dataset="lfw-dev", dataset_hash="abc")
    path = cal.save(tmp_path / "cal.json")
    assert FaceMatcher(dlib_backend, threshold=path).threshold == pytest.approx(0.47)
    stale = calibration.Calibration(**{**cal.__dict__, "model_version": "dlib-0/old"})
    with pytest.raises(calibration.CalibrationError, match="re-calibrate"):
        FaceMatcher(dlib_backend, threshold=stale.save(tmp_path / "stale.json"))


def test_masked_probe_still_runs(dlib_backend, portrait):
    frame = live_frame(portrait, 1.6)
    box = dlib_backend.detect(frame)[0].box
    masked = conditions.apply(frame, "mask", face_box=box)
    matcher = FaceMatcher(dlib_backend, threshold=0.4)
    r = matcher.verify(matcher.enroll(card_photo(portrait)), masked)
    assert r.reason in ("accepted", "below_threshold", "no_face")


def test_accuracy_on_twenty_lfw_pairs_with_cache(lfw, tmp_path):
    pairs = load_lfw_pairs(lfw / "pairs.txt")
    subset = pairs[:10] + pairs[150:160]  # fold 0: 10 matched, 10 mismatched
    cfg = EvalConfig(backend="dlib", cache_dir=tmp_path / "cache", n_boot=50)
    first = evaluate(subset, cfg)
    assert first["pairs"] == 20 and first["genuine"] == 10 and first["impostor"] == 10
    assert first["fta_pairs"] <= 2
    assert first["eer"] <= 0.2
    assert first["run"]["cache_hits"] == 0 and first["run"]["embedded"] > 0
    again = evaluate(subset, cfg)
    assert again["run"]["embedded"] == 0 and again["run"]["cache_hits"] == first["run"]["images"]
    assert again["eer"] == first["eer"] and again["fnmr_at_fmr"] == first["fnmr_at_fmr"]


def test_shipped_threshold_matches_its_calibration_record(dlib_backend):
    from pathlib import Path

    import harness.biometrics as hb
    from harness.biometrics import dlib_backend as mod

    cal = calibration.load(Path(hb.__file__).parent / "calibrations" / "dlib-lfw-dev.json", "dlib")
    assert cal.model_version == dlib_backend.model_version, "pipeline changed: re-calibrate the default threshold"
    assert mod.DEFAULT_THRESHOLD == pytest.approx(cal.threshold, abs=5e-4)
    assert cal.target_fmr == 1e-3 and cal.fmr_achieved <= 1e-3
