"""Face matching: latency, embedding against the core's peak, acquisition, stream, throughput.

Run: ``make bench`` or ``.venv/bin/python -m pytest benches/bench_face.py`` (FACEHIL_FACES for
real portraits; otherwise a packaged sample is used). One thread (OpenCV set to 1; dlib's CPU
code is serial; ONNX Runtime sessions are made with one intra-op thread).

Goals of issue 14, printed as MET/MISSED in the "bench goals" summary (never asserted):
- end to end, 640x480 frame to decision, one thread: p50 at least 4x faster than the stock
  face_recognition pipeline, at reader distance (--face-scale 1.6) and in the LFW crop layout (1.0);
- the embedding stage within 3x of the limit its multiply-adds give at this core's peak. The
  peak is measured, not looked up: the best of several single-thread 1024x1024x1024 float32
  MatMuls on ONNX Runtime (the same kernels the embedding uses), in multiply-adds per second;
- FTA (pairs) at most the baseline's on every dataset at hand (lfw-dev, ORL, packaged samples),
  with the time each detection pass costs;
- a stream: per-frame cost with the face tracked against full detection on every frame;
- a cold ``bench accuracy`` on lfw-dev (3,000 pairs, 2 workers, no cache) in at most 60 s;
- the converted network against dlib's own on all of lfw-dev: same threshold, same EER.
Ratios are measured within one run (the machine is shared; absolute times move).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.biometrics import FaceMatcher, choose_face, images
from harness.biometrics.latency import baseline_pipeline, interleaved, time_it
from harness.biometrics.scene import card_photo, live_frame
from harness.facedata import list_identities, prepare_samples, resolve_faces

SCALES = {"reader_distance": 1.6, "lfw_crop": 1.0}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(previous)


@pytest.fixture(scope="module")
def portraits():
    idents = list_identities(resolve_faces())
    ident = next((i for i in idents if len(i.images) >= 2), idents[0])
    return cv2.imread(str(ident.images[0])), cv2.imread(str(ident.images[-1]))


@pytest.fixture(scope="module")
def session(dlib_backend, portraits):
    matcher = FaceMatcher(dlib_backend)
    enrollment = matcher.enroll(card_photo(portraits[0]))
    assert enrollment.ok, enrollment.reason
    return matcher, enrollment


def _frame(portraits, layout):
    return live_frame(portraits[1], SCALES[layout])


def _faces_root() -> Path | None:
    root = os.environ.get("FACEHIL_FACES")
    return Path(root) if root and Path(root).is_dir() else None


@pytest.mark.parametrize("stage", ["decode", "detect", "align", "embed", "compare"])
def test_stage(benchmark, dlib_backend, session, portraits, stage):
    matcher, enrollment = session
    frame = _frame(portraits, "reader_distance")
    face = choose_face(dlib_backend.detect(frame), frame.shape[1], frame.shape[0])
    assert face is not None
    aligned = dlib_backend.align(frame, face)
    emb = dlib_backend.embed(aligned)
    jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    fn = {
        "decode": lambda: images.decode(jpeg),
        "detect": lambda: dlib_backend.detect(frame),
        "align": lambda: dlib_backend.align(frame, face),
        "embed": lambda: dlib_backend.embed(aligned),
        "compare": lambda: dlib_backend.compare(enrollment.embedding, emb),
    }[stage]
    benchmark.group = f"face stages (640x480, reader distance, engine {dlib_backend.engine})"
    benchmark(fn)


@pytest.mark.parametrize("layout", list(SCALES))
def test_end_to_end_against_baseline(benchmark, session, portraits, goals, layout):
    """Ours and the stock pipeline alternate call by call, so load hits both alike."""
    run = baseline_pipeline()
    if run is None:
        pytest.skip("face_recognition (the baseline) is not installed: pip install --no-deps face_recognition==1.3.0")
    matcher, enrollment = session
    frame = _frame(portraits, layout)
    ref = enrollment.embedding

    def baseline_decision():
        e = run(frame)
        return None if e is None else bool(np.linalg.norm(np.asarray(e) - ref) <= 0.6)

    assert baseline_decision() is not None
    ours, base = interleaved(lambda: matcher.verify(enrollment, frame), baseline_decision, 25)
    benchmark.group = f"face end to end: {layout}"
    result = benchmark.pedantic(matcher.verify, (enrollment, frame), rounds=10, warmup_rounds=1)
    assert result.face_count == 1 and result.score is not None
    ratio = base.p50_ms / ours.p50_ms
    goals(f"end-to-end speed-up vs face_recognition, p50, --face-scale {SCALES[layout]} "
          f"(ours {ours.p50_ms:.1f} ms, baseline {base.p50_ms:.1f} ms)", ratio, ">= 4", "x", ratio >= 4.0)


def peak_macs_per_s(n: int = 1024, repeats: int = 5) -> float:
    """Single-thread multiply-adds per second of ONNX Runtime's float32 GEMM (best of ``repeats``)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    sess.run(None, {"a": a, "b": b})
    best = min(_timed(lambda: sess.run(None, {"a": a, "b": b})) for _ in range(repeats))
    return n ** 3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_embedding_against_core_peak(dlib_backend, session, portraits, goals):
    from harness.biometrics import dlib_onnx

    if dlib_backend.engine != "onnx":
        pytest.skip("the converted network is not in use (see the backend's warning)")
    frame = _frame(portraits, "reader_distance")
    face = choose_face(dlib_backend.detect(frame), frame.shape[1], frame.shape[0])
    chip = dlib_backend.align(frame, face)
    macs = dlib_onnx.cached().macs_per_face
    # alternate peak and embedding measurements so both see the same load
    peaks, embeds = [], []
    for _ in range(3):
        peaks.append(peak_macs_per_s(repeats=3))
        embeds.append(time_it(lambda: dlib_backend.embed(chip), 15).p50_ms)
    peak = max(peaks)
    limit_ms = macs / peak * 1000.0
    embed_ms = min(embeds)
    ratio = embed_ms / limit_ms
    goals(f"embedding vs multiply-add limit ({macs / 1e9:.3f} G MAC at a measured {peak / 1e9:.1f} G MAC/s "
          f"= {limit_ms:.2f} ms; embedding p50 {embed_ms:.2f} ms)", ratio, "<= 3", "x the limit", ratio <= 3.0)
    batch = np.stack([chip] * 16)
    per_face = time_it(lambda: dlib_backend.embed_batch(list(batch)), 5).p50_ms / 16
    goals(f"batched embedding (16 faces, one thread): {per_face:.2f} ms per face vs limit {limit_ms:.2f} ms",
          per_face / limit_ms, "<= 3", "x the limit", per_face / limit_ms <= 3.0)


def _acquisition_datasets() -> list[tuple[str, Path, list]]:
    from harness.biometrics.datasets import Pair, pairs_for

    out = []
    root = _faces_root()
    for name in ("lfw-dev", "orl"):
        if root is not None and (root / name).is_dir():
            out.append((name, root / name, pairs_for(root / name)[0]))
    samples = prepare_samples()
    idents = list_identities(samples)
    paths = [i.images[0] for i in idents]
    ring = [Pair(paths[k], paths[(k + 1) % len(paths)], False, idents[k].name, idents[(k + 1) % len(paths)].name)
            for k in range(len(paths))]  # every sample image in two impostor pairs
    out.append(("packaged samples", samples, ring))
    return out


LONG_S = 3600  # the whole-dataset benches take minutes, more on a shared machine (pytest's timeout is 300 s)


@pytest.mark.timeout(LONG_S)
@pytest.mark.parametrize("dataset", ["lfw-dev", "orl", "packaged samples"])
def test_fta_against_baseline(dlib_backend, goals, dataset):
    from harness.biometrics import acquisition

    found = {name: (root, pairs) for name, root, pairs in _acquisition_datasets()}
    if dataset not in found:
        pytest.skip(f"{dataset} is not under FACEHIL_FACES ({os.environ.get('FACEHIL_FACES')})")
    if baseline_pipeline() is None:
        pytest.skip("face_recognition (the baseline) is not installed")
    root, pairs = found[dataset]
    r = acquisition.compare(dlib_backend, pairs, dataset)
    passes = "; ".join(f"{n} ran {p['runs']}x found {p['found']} mean {p['mean_ms']:.1f} ms total "
                       f"{p['total_ms'] / 1000:.1f} s" for n, p in r.passes.items())
    goals(f"FTA {dataset}: ours {r.ours_fta_pairs}/{r.pairs} pairs ({r.ours_fta_images} images), baseline "
          f"{r.baseline_fta_pairs}/{r.pairs} ({r.baseline_fta_images} images, {r.baseline_ms / 1000:.1f} s); "
          f"passes: {passes}", r.ours_fta_rate * 100, f"<= baseline {r.baseline_fta_rate * 100:.2f}", "% of pairs",
          r.ours_fta_pairs <= r.baseline_fta_pairs)


def test_stream_per_frame_cost(dlib_backend, session, portraits, goals):
    """60 frames of a face swaying (up to +-20 px): tracked stream against full detection per frame."""
    from harness.biometrics.tracking import StreamMatcher

    matcher, enrollment = session
    base = _frame(portraits, "reader_distance")
    frames = [np.roll(base, (int(10 * np.sin(i / 8)), int(20 * np.sin(i / 11))), axis=(0, 1)) for i in range(60)]
    stream = StreamMatcher(matcher, enrollment, redetect_every=15)
    tracked, single = [], []
    for f in frames:  # alternate, so load hits both alike
        tracked.append(_timed(lambda: stream.verify(f)) * 1000)
        single.append(_timed(lambda: matcher.verify(enrollment, f)) * 1000)
    st = stream.tracker.state
    t50, s50 = float(np.median(tracked)), float(np.median(single))
    goals(f"stream per-frame cost: tracked p50 {t50:.1f} ms (mean {np.mean(tracked):.1f}), full detection "
          f"p50 {s50:.1f} ms (mean {np.mean(single):.1f}); {st.full_detections} full detections, "
          f"{st.tracked_frames} tracked frames, {st.losses} losses", s50 / t50, "> 1 (tracking cheaper)", "x",
          t50 < s50)


@pytest.mark.timeout(LONG_S)
def test_cold_accuracy_lfw_dev_two_workers(goals, tmp_path):
    from harness.biometrics.datasets import load_lfw_pairs
    from harness.biometrics.evaluate import EvalConfig, evaluate

    root = _faces_root()
    if root is None or not (root / "lfw-dev" / "pairs.txt").is_file():
        pytest.skip("needs lfw-dev/pairs.txt under FACEHIL_FACES")
    pairs = load_lfw_pairs(root / "lfw-dev" / "pairs.txt")
    t = time.perf_counter()
    result = evaluate(pairs, EvalConfig(workers=2, use_cache=False, n_boot=1000))
    elapsed = time.perf_counter() - t
    cpu = result["run"]["cpu_s"]
    goals(f"cold accuracy lfw-dev, {len(pairs)} pairs, 2 workers, no cache (EER {result['eer'] * 100:.2f}%, "
          f"FTA {result['fta_pairs']} pairs; {cpu:.0f} CPU-s in all, i.e. {cpu / 2:.0f} s on two free cores)",
          elapsed, "<= 60", "s wall", elapsed <= 60.0)


@pytest.mark.timeout(LONG_S)
def test_converted_network_keeps_accuracy_and_threshold(goals, monkeypatch):
    """All of lfw-dev through both engines: identical threshold at FMR 1e-3, EER, FNMR."""
    from harness.biometrics.datasets import load_lfw_pairs
    from harness.biometrics.dlib_backend import ENGINE_ENV
    from harness.biometrics.evaluate import EvalConfig, evaluate
    from harness.biometrics.metrics import fnmr_at_fmr

    root = _faces_root()
    if root is None or not (root / "lfw-dev" / "pairs.txt").is_file():
        pytest.skip("needs lfw-dev/pairs.txt under FACEHIL_FACES")
    pairs = load_lfw_pairs(root / "lfw-dev" / "pairs.txt")
    runs = {}
    for engine in ("onnx", "dlib"):
        monkeypatch.setenv(ENGINE_ENV, engine)  # the spawned workers inherit it
        runs[engine] = evaluate(pairs, EvalConfig(workers=2, use_cache=False, n_boot=0))
    a, b = runs["onnx"]["_scores"]["nominal"], runs["dlib"]["_scores"]["nominal"]
    same_pairs = a.genuine.size == b.genuine.size and a.impostor.size == b.impostor.size
    diff = max(np.abs(a.genuine - b.genuine).max(), np.abs(a.impostor - b.impostor).max()) if same_pairs else np.inf
    ta, tb = fnmr_at_fmr(a, 1e-3).threshold, fnmr_at_fmr(b, 1e-3).threshold
    same = same_pairs and runs["onnx"]["eer"] == runs["dlib"]["eer"] and abs(ta - tb) < 1e-5
    goals(f"ONNX vs dlib on lfw-dev: max score difference {diff:.2e}; threshold@FMR1e-3 {ta:.5f} vs {tb:.5f}; "
          f"EER {runs['onnx']['eer'] * 100:.3f}% vs {runs['dlib']['eer'] * 100:.3f}%; cold run "
          f"{runs['onnx']['run']['elapsed_s']:.0f} s vs {runs['dlib']['run']['elapsed_s']:.0f} s",
          diff, "< 1e-5 and identical threshold/EER", "score units", same and diff < 1e-5)
