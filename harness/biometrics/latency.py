"""Per-stage and end-to-end latency of a backend, on one thread, as p50/p95/p99 (ms).

Stages: decode (a 640x480 JPEG camera frame), detect, align, embed, compare. End to end:
a live 640x480 BGR frame to a decision, with the card photo already enrolled. When the
``face_recognition`` package is importable, its stock pipeline (face_locations upsample 1 +
face_encodings + distance) runs on the same frame in the same process as the baseline,
alternating call by call with ours so that load from other processes hits both alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from harness.biometrics import images
from harness.biometrics.matcher import FaceMatcher, choose_face

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stat:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    n: int

    def as_dict(self) -> dict:
        return {"p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms, "mean_ms": self.mean_ms,
                "n": self.n}


def time_it(fn: Callable[[], object], iterations: int, warmup: int = 2) -> Stat:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000.0)
    a = np.array(samples)
    return Stat(float(np.percentile(a, 50)), float(np.percentile(a, 95)), float(np.percentile(a, 99)),
                float(a.mean()), len(samples))


def baseline_pipeline():
    """The stock face_recognition pipeline as a callable frame_bgr -> embedding, or None."""
    try:
        import face_recognition
    except ImportError:
        return None

    def run(frame_bgr: np.ndarray):
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        boxes = face_recognition.face_locations(rgb, number_of_times_to_upsample=1)
        if not boxes:
            return None
        largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
        return face_recognition.face_encodings(rgb, [largest], num_jitters=1)[0]

    return run


def measure(backend, card_photo: bytes, frame_bgr: np.ndarray, iterations: int = 30,
            with_baseline: bool = True, threshold: float | None = None) -> dict:
    frame_jpeg = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    matcher = FaceMatcher(backend, threshold=threshold if threshold is not None else
                          (backend.default_threshold if backend.default_threshold is not None else 0.0))
    enrollment = matcher.enroll(card_photo)
    if not enrollment.ok:
        raise RuntimeError(f"the card photo could not be enrolled: {enrollment.reason}")
    dets = backend.detect(frame_bgr)
    face = choose_face(dets, frame_bgr.shape[1], frame_bgr.shape[0])
    if face is None:
        raise RuntimeError("no face found in the live frame")
    aligned = backend.align(frame_bgr, face)
    emb = backend.embed(aligned)
    stages = {
        "decode": time_it(lambda: images.decode(frame_jpeg), iterations),
        "detect": time_it(lambda: backend.detect(frame_bgr), iterations),
        "align": time_it(lambda: backend.align(frame_bgr, face), iterations),
        "embed": time_it(lambda: backend.embed(aligned), iterations),
        "compare": time_it(lambda: backend.compare(enrollment.embedding, emb), iterations),
        "end_to_end": time_it(lambda: matcher.verify(enrollment, frame_bgr), iterations),
    }
    result = matcher.verify(enrollment, frame_bgr)
    out = {"backend": backend.name, "model_version": backend.model_version,
           "frame": {"width": frame_bgr.shape[1], "height": frame_bgr.shape[0],
                     "face_box_px": [round(v, 1) for v in face.box]},
           "stages": {k: v.as_dict() for k, v in stages.items()},
           "decision": {"score": result.score, "accepted": result.accepted, "reason": result.reason,
                        "face_count": result.face_count}}
    if with_baseline:
        run = baseline_pipeline()
        if run is None:
            out["baseline"] = None
        else:
            ref = enrollment.embedding

            def baseline_decision():
                e = run(frame_bgr)
                return None if e is None else float(np.linalg.norm(np.asarray(e) - ref)) <= 0.6

            ours_ms, base_ms = interleaved(lambda: matcher.verify(enrollment, frame_bgr), baseline_decision,
                                           iterations)
            out["baseline"] = {"pipeline": "face_recognition face_locations(upsample=1) + face_encodings",
                               "end_to_end": base_ms.as_dict(), "ours_interleaved": ours_ms.as_dict(),
                               "speedup_p50": base_ms.p50_ms / ours_ms.p50_ms}
    return out


def interleaved(a: Callable[[], object], b: Callable[[], object], iterations: int) -> tuple[Stat, Stat]:
    """Time two callables alternately, so load from other processes hits both alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(iterations):
        t = time.perf_counter()
        a()
        ta.append((time.perf_counter() - t) * 1000.0)
        t = time.perf_counter()
        b()
        tb.append((time.perf_counter() - t) * 1000.0)

    def stat(x: list[float]) -> Stat:
        arr = np.array(x)
        return Stat(float(np.percentile(arr, 50)), float(np.percentile(arr, 95)), float(np.percentile(arr, 99)),
                    float(arr.mean()), len(x))

    return stat(ta), stat(tb)
