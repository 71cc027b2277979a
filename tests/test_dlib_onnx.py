"""The dlib ResNet -> ONNX converter: same descriptors as dlib, clear refusals of bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.biometrics import dlib_onnx
from harness.facedata import list_identities, resolve_faces


@pytest.fixture(scope="module")
def dat_bytes() -> bytes:
    try:
        path = dlib_onnx.dat_path()
    except ImportError:
        pytest.skip("needs face-recognition-models (dlib_face_recognition_resnet_model_v1.dat)")
    if not path.is_file():
        pytest.skip(f"dlib's face ResNet weights are absent: {path}")
    return path.read_bytes()


@pytest.fixture(scope="module")
def converted(tmp_path_factory, dat_bytes):
    """A conversion into an empty cache folder, as on a fresh clone."""
    return dlib_onnx.cached(directory=tmp_path_factory.mktemp("onnx-cache"))


def test_parse_reads_every_layer_of_anet_type(dat_bytes):
    net = dlib_onnx.parse(dat_bytes)
    convs = [layer for layer in net.layers if layer.kind == "con"]
    assert len(convs) == 29 and sum(layer.kind == "affine" for layer in net.layers) == 29
    assert convs[-1].params["w"].shape == (32, 3, 7, 7)  # the stem, innermost
    assert net.channel_means == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)  # dlib's input layer
    assert net.input_px == (150, 150)
    fc = net.layers[0]
    assert fc.kind == "fc" and fc.params["w"].shape == (256, 128)


def test_converted_network_gives_dlib_descriptors(converted, dlib_backend):
    """On real faces (lfw-dev if present, else the packaged samples): cosine >= 0.9999 each."""
    chips = []
    for ident in list_identities(resolve_faces())[:10]:
        img = cv2.imread(str(ident.images[0]))
        dets = dlib_backend.detect(img)
        if dets:
            chips.append(dlib_backend.align(img, dets[0]))
    assert len(chips) >= 5
    net = dlib_onnx.OnnxResNet(converted.onnx_path)
    report = dlib_onnx.verify(net, dlib_backend._dlib_embed, chips)
    assert report["min_cosine"] >= dlib_onnx.VERIFY_MIN_COSINE
    assert report["max_distance"] < 1e-4  # scores are 1 - distance: decisions cannot move
    assert 0.2e9 < converted.macs_per_face < 0.4e9
    # a chip of the wrong size is a clear error, not a crash inside ONNX Runtime
    with pytest.raises(ValueError, match="150x150"):
        net(np.zeros((1, 112, 112, 3), np.uint8))


def test_cache_is_keyed_by_the_dat_hash(tmp_path, dat_bytes, converted):
    again = dlib_onnx.cached(directory=converted.onnx_path.parent)
    assert again.onnx_path == converted.onnx_path
    assert again.onnx_path.stat().st_mtime_ns == converted.onnx_path.stat().st_mtime_ns  # not rebuilt
    other = bytearray(dat_bytes)
    other[-200] ^= 0x01  # lowest mantissa bit of a weight: still a valid file, another hash
    dat = tmp_path / "other.dat"
    dat.write_bytes(bytes(other))
    rebuilt = dlib_onnx.cached(dat, directory=converted.onnx_path.parent)
    assert rebuilt.onnx_path != converted.onnx_path and rebuilt.onnx_path.is_file()
    assert rebuilt.dat_sha256 != converted.dat_sha256


@pytest.mark.parametrize("keep", [0.0005, 0.3, 0.999])
def test_truncated_dat_is_refused_naming_the_layer(dat_bytes, keep):
    cut = dat_bytes[: int(len(dat_bytes) * keep)]
    with pytest.raises(dlib_onnx.DatFormatError, match=r"(layer \d+ \(|loss layer|input layer).*truncated"):
        dlib_onnx.parse(cut)


def test_flipped_bytes_are_refused_naming_the_layer(dat_bytes):
    # a layer name: the 10th conv's "con_4" turned into something else
    at = -1
    for _ in range(10):
        at = dat_bytes.index(b"con_4", at + 1)
    bad = bytearray(dat_bytes)
    bad[at + 4] ^= 0x08  # "con_4" -> "con_<"
    with pytest.raises(dlib_onnx.DatFormatError, match=r"layer \d+ \(.*con.*expected 'con_4'.*found 'con_<'"):
        dlib_onnx.parse(bytes(bad))
    # a weight's sign/exponent byte: the value becomes absurd (or not a number)
    net_end = len(dat_bytes) - 4000
    bad = bytearray(dat_bytes)
    for off in range(net_end, net_end + 400, 4):  # hit whichever float32 the offset falls in
        bad[off + 3] ^= 0x7F
    with pytest.raises(dlib_onnx.DatFormatError, match=r"layer \d+ \(.*(implausible|non-finite)"):
        dlib_onnx.parse(bytes(bad))
    # a size field: the stem conv's filter count
    bad = bytearray(dat_bytes)
    stem = dat_bytes.index(b"con_4")  # details come innermost first: the stem is the first conv
    bad[stem + 5 + 1] ^= 0x0F  # params tensor version byte
    with pytest.raises(dlib_onnx.DatFormatError, match=r"layer \d+ \(stem con"):
        dlib_onnx.parse(bytes(bad))
    with pytest.raises(dlib_onnx.DatFormatError, match="trailing bytes"):
        dlib_onnx.parse(dat_bytes + b"\x00")


def test_backend_falls_back_to_dlib_with_a_warning(monkeypatch, tmp_path, caplog, dat_bytes):
    """If the converted network disagrees with dlib, the backend warns and runs dlib's own code."""
    from harness.biometrics.dlib_backend import DlibBackend

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # empty cache: converts, then verifies
    monkeypatch.setattr(dlib_onnx, "VERIFY_MIN_COSINE", 1.0 + 1e-9)  # no network can pass this
    with caplog.at_level(logging.WARNING, logger="harness.biometrics.dlib_backend"):
        backend = DlibBackend()
    assert backend.engine == "dlib"
    assert any("falling back to dlib" in r.getMessage() and "disagrees" in r.getMessage() for r in caplog.records)
    cache = tmp_path / "facehil" / "dlib-onnx"
    assert list(cache.glob("*.onnx")) and not list(cache.glob("*.verified-*.json"))  # converted, not trusted
    chip = np.full((150, 150, 3), 128, np.uint8)
    assert backend.embed(chip).shape == (128,)  # dlib's own code answers


def test_scores_and_decisions_identical_to_dlib_on_lfw_pairs(dlib_backend, faces_several):
    """Same pairs, both engines: every score within 1e-5 and every decision at the shipped threshold equal."""
    from harness.biometrics.datasets import load_lfw_pairs
    from harness.biometrics.dlib_backend import DEFAULT_THRESHOLD

    lfw = faces_several.root / "lfw-dev"
    if not (lfw / "pairs.txt").is_file():
        pytest.skip(f"needs lfw-dev/pairs.txt under FACEHIL_FACES ({faces_several.root})")
    assert dlib_backend.engine == "onnx"
    pairs = load_lfw_pairs(lfw / "pairs.txt")
    subset = pairs[:6] + pairs[150:156]
    chips = {}
    for p in {q for pair in subset for q in (pair.reference, pair.probe)}:
        img = cv2.imread(str(p))
        dets = dlib_backend.detect(img)
        if dets:
            chips[p] = dlib_backend.align(img, max(dets, key=lambda d: d.area_px))
    keys = sorted(chips)
    ours = dict(zip(keys, dlib_backend.embed_batch([chips[k] for k in keys])))
    ref = {k: dlib_backend._dlib_embed(chips[k]) for k in keys}
    compared = 0
    for pair in subset:
        if pair.reference in chips and pair.probe in chips:
            s_onnx = dlib_backend.compare(ours[pair.reference], ours[pair.probe])
            s_dlib = dlib_backend.compare(ref[pair.reference], ref[pair.probe])
            assert abs(s_onnx - s_dlib) < 1e-5
            assert (s_onnx >= DEFAULT_THRESHOLD) == (s_dlib >= DEFAULT_THRESHOLD)
            compared += 1
    assert compared >= 9


def test_dat_path_is_the_installed_model():
    assert Path(dlib_onnx.dat_path()).name == "dlib_face_recognition_resnet_model_v1.dat"
