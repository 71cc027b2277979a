"""insightface backend: a tiny ONNX pack built here proves loading and plumbing end to end."""

from __future__ import annotations

import numpy as np
import pytest

from harness.biometrics import BackendError, FaceBackend, FaceMatcher, load_backend
from harness.biometrics.insightface_backend import model_version
from harness.biometrics.tinypack import blob_image, build_tiny_pack


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return build_tiny_pack(tmp_path_factory.mktemp("pack") / "tiny_buffalo")


@pytest.fixture(scope="module")
def backend(pack):
    return load_backend("insightface", model_pack=pack, threads=1)


def _patterned(centre, stripe: bool):
    img = blob_image(centre=centre)
    if stripe:
        x, y = centre
        img[y - 48:y + 48, x - 48:x - 10] = 90  # a darker left part: a "different face"
    return img


def test_pack_models_are_routed_by_signature(pack):
    import onnx
    from insightface.model_zoo import model_zoo

    det = model_zoo.get_model(str(pack / "det_tiny.onnx"), providers=["CPUExecutionProvider"])
    rec = model_zoo.get_model(str(pack / "rec_tiny.onnx"), providers=["CPUExecutionProvider"])
    assert det.taskname == "detection" and det.use_kps and det.fmc == 3
    assert rec.taskname == "recognition" and rec.input_size == (112, 112)
    assert len(onnx.load(str(pack / "det_tiny.onnx")).graph.output) == 9


def test_loads_with_face_analysis_and_detects(backend):
    assert isinstance(backend, FaceBackend)
    assert backend.model_version.startswith("insightface/tiny_buffalo/")
    dets = backend.detect(blob_image(centre=(400, 200)))
    assert dets, "the tiny detector should fire on a bright blob"
    best = max(dets, key=lambda d: d.quality)
    cx, cy = best.centre
    assert abs(cx - 400) <= 40 and abs(cy - 200) <= 40
    assert best.landmarks.shape == (5, 2)
    assert backend.detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_align_embed_compare(backend):
    img = blob_image(centre=(320, 240))
    det = max(backend.detect(img), key=lambda d: d.quality)
    crop = backend.align(img, det)
    assert crop.shape == (112, 112, 3)
    emb = backend.embed(crop)
    assert emb.shape == (512,) and emb.dtype == np.float32
    assert backend.compare(emb, emb) == pytest.approx(1.0, abs=1e-5)


def test_matcher_end_to_end_on_the_tiny_pack(backend):
    matcher = FaceMatcher(backend, threshold=0.99, policy="largest_central")
    enrollment = matcher.enroll(_patterned((320, 256), stripe=False))
    assert enrollment.ok
    same = matcher.verify(enrollment, _patterned((416, 160), stripe=False))
    other = matcher.verify(enrollment, _patterned((416, 160), stripe=True))
    assert same.accepted and same.score > other.score
    assert not other.accepted and other.reason == "below_threshold"
    empty = matcher.verify(enrollment, np.zeros((480, 640, 3), np.uint8))
    assert empty.reason == "no_face" and empty.face_count == 0


def test_no_default_threshold_without_calibration(backend):
    with pytest.raises(ValueError, match="calibrate"):
        FaceMatcher(backend)


def test_missing_pack_names_the_folder(tmp_path):
    missing = tmp_path / "buffalo_l"
    with pytest.raises(BackendError, match=str(missing)):
        load_backend("insightface", model_pack=missing)
    missing.mkdir()
    with pytest.raises(BackendError, match="no .onnx files: " + str(missing)):
        load_backend("insightface", model_pack=missing)
    with pytest.raises(BackendError, match="--model-pack"):
        load_backend("insightface")


def test_pack_without_detector_is_a_clear_error(pack, tmp_path):
    only_rec = tmp_path / "rec_only"
    only_rec.mkdir()
    (only_rec / "rec_tiny.onnx").write_bytes((pack / "rec_tiny.onnx").read_bytes())
    with pytest.raises(BackendError, match="no face detection model"):
        load_backend("insightface", model_pack=only_rec)


def test_model_version_follows_pack_content(pack, tmp_path):
    other = build_tiny_pack(tmp_path / "tiny_buffalo", seed=1)
    assert model_version(pack) != model_version(other)
    assert model_version(pack) == model_version(pack)


def test_unknown_backend_name():
    with pytest.raises(BackendError, match="unknown face backend"):
        load_backend("opencv")
