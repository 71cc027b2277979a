"""Failure to acquire, ours against the stock face_recognition pipeline, on the same images.

For every distinct image of a pair list: does our detector find a face (and which pass found
it), does ``face_recognition.face_locations(rgb, number_of_times_to_upsample=1)`` find one.
A pair fails to acquire when either of its images does (ISO/IEC 19795-1 FTA, per pair).
Each detection pass's time is summed so the cost of the last-resort passes is visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2

from harness.biometrics import images
from harness.biometrics.datasets import Pair


@dataclass
class AcquisitionResult:
    dataset: str
    images: int
    pairs: int
    ours_fta_images: int
    baseline_fta_images: int | None
    ours_fta_pairs: int
    baseline_fta_pairs: int | None
    passes: dict  # pass name -> runs, found, total_ms, mean_ms
    baseline_ms: float | None
    lost_vs_baseline: int  # images the baseline finds and we do not

    @property
    def ours_fta_rate(self) -> float:
        return self.ours_fta_pairs / self.pairs if self.pairs else 0.0

    @property
    def baseline_fta_rate(self) -> float | None:
        if self.baseline_fta_pairs is None:
            return None
        return self.baseline_fta_pairs / self.pairs if self.pairs else 0.0

    def as_dict(self) -> dict:
        return {**self.__dict__, "ours_fta_rate": self.ours_fta_rate, "baseline_fta_rate": self.baseline_fta_rate}


def _baseline_detector():
    try:
        import face_recognition
    except ImportError:
        return None
    return lambda bgr: bool(face_recognition.face_locations(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 1))


def compare(backend, pairs: list[Pair], dataset: str, with_baseline: bool = True, progress=None) -> AcquisitionResult:
    """Run both detectors over the pairs' distinct images (ours with a fresh pass tally)."""
    from harness.biometrics.dlib_backend import PassStats

    backend.pass_stats = PassStats()
    base = _baseline_detector() if with_baseline else None
    paths = sorted({str(p) for pair in pairs for p in (pair.reference, pair.probe)})
    ours: dict[str, bool] = {}
    theirs: dict[str, bool] = {}
    base_ms = 0.0
    for i, path in enumerate(paths):
        try:
            bgr = images.load(path).bgr
        except images.ImageError:
            ours[path] = theirs[path] = False
            continue
        ours[path] = bool(backend.detect(bgr))
        if base is not None:
            t = time.perf_counter()
            theirs[path] = base(bgr)
            base_ms += (time.perf_counter() - t) * 1000.0
        if progress:
            progress(i + 1, len(paths))

    def fta_pairs(found: dict[str, bool]) -> int:
        return sum(1 for p in pairs if not (found[str(p.reference)] and found[str(p.probe)]))

    return AcquisitionResult(
        dataset=dataset, images=len(paths), pairs=len(pairs),
        ours_fta_images=sum(not v for v in ours.values()),
        baseline_fta_images=sum(not v for v in theirs.values()) if base else None,
        ours_fta_pairs=fta_pairs(ours), baseline_fta_pairs=fta_pairs(theirs) if base else None,
        passes=backend.pass_stats.as_dict(), baseline_ms=base_ms if base else None,
        lost_vs_baseline=sum(1 for p in paths if theirs.get(p) and not ours[p]) if base else 0)

