"""Card photo vs live frame: choose one face, embed it, compare, decide.

``extract`` is the one pipeline (decode -> detect -> choose -> align -> embed) that both the
matcher and the accuracy evaluation use, so benches measure what readers run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.biometrics import calibration, images
from harness.biometrics.backend import BackendError, Detection, FaceBackend

log = logging.getLogger(__name__)

POLICIES = ("largest_central", "largest", "central", "single")

# Reason codes (MatchResult.reason, Extraction.reason)
ACCEPTED = "accepted"
BELOW_THRESHOLD = "below_threshold"
NO_FACE = "no_face"
MULTIPLE_FACES = "multiple_faces"
ENROLMENT_FAILED = "enrolment_failed"
# plus images.ImageError reasons: "unreadable", "too_large", "unsupported"


def load_backend(name: str = "dlib", model_pack=None, **options) -> FaceBackend:
    """A ready backend: ``"dlib"`` (default, bundled weights) or ``"insightface"`` (needs a pack)."""
    if name == "dlib":
        from harness.biometrics.dlib_backend import DlibBackend

        return DlibBackend(**options)
    if name == "insightface":
        from harness.biometrics.insightface_backend import InsightFaceBackend

        return InsightFaceBackend(model_pack, **options)
    raise BackendError(f"unknown face backend {name!r}: choose dlib or insightface")


def model_version(name: str, model_pack=None) -> str:
    """A backend's model version without loading its models (for cache keys)."""
    if name == "dlib":
        from harness.biometrics import dlib_backend

        return dlib_backend.model_version()
    if name == "insightface":
        from harness.biometrics import insightface_backend

        return insightface_backend.model_version(model_pack)
    raise BackendError(f"unknown face backend {name!r}: choose dlib or insightface")


def scorer(name: str):
    """The compare function of a backend, without loading its models."""
    if name == "dlib":
        from harness.biometrics.dlib_backend import compare
    elif name == "insightface":
        from harness.biometrics.insightface_backend import compare
    else:
        raise BackendError(f"unknown face backend {name!r}")
    return compare


def choose_face(detections: list[Detection], width: int, height: int,
                policy: str = "largest_central") -> Detection | None:
    """The face to match when a frame holds several.

    - ``largest_central`` (default): area minus twice the squared distance of the box centre
      from the frame centre (px^2): a big face wins unless it is far off-centre;
    - ``largest``: the biggest box; ``central``: the box centre nearest the frame centre;
    - ``single``: exactly one face or none (the caller reports ``multiple_faces``).
    """
    if not detections:
        return None
    cx, cy = width / 2, height / 2

    def off2(d: Detection) -> float:
        x, y = d.centre
        return (x - cx) ** 2 + (y - cy) ** 2

    if policy == "largest_central":
        return max(detections, key=lambda d: d.area_px - 2.0 * off2(d))
    if policy == "largest":
        return max(detections, key=lambda d: d.area_px)
    if policy == "central":
        return min(detections, key=off2)
    if policy == "single":
        return detections[0] if len(detections) == 1 else None
    raise ValueError(f"unknown face policy {policy!r}: one of {', '.join(POLICIES)}")


@dataclass
class Extraction:
    embedding: np.ndarray | None
    reason: str  # "ok" or an FTA reason code
    face_count: int = 0
    detection: Detection | None = None
    was_grey: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    aligned: np.ndarray | None = None  # the face chip, kept only when extract(embed=False)

    @property
    def ok(self) -> bool:
        return self.embedding is not None


def extract(backend: FaceBackend, image, policy: str = "largest_central", embed: bool = True) -> Extraction:
    """Decode (path, bytes or array), detect, choose one face, align, embed. Never raises
    for bad image content: failures come back as ``reason``.

    ``embed=False`` stops after alignment (``reason`` "ok", chip in ``aligned``) so that a
    caller can embed many chips in one batch."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        decoded = images.load(image)
    except images.ImageError as exc:
        log.debug("image rejected: %s", exc)
        return Extraction(None, exc.reason, timings_ms={"decode": _ms(t0)})
    timings["decode"] = _ms(t0)
    bgr = decoded.bgr
    t = time.perf_counter()
    detections = backend.detect(bgr)
    timings["detect"] = _ms(t)
    face = choose_face(detections, bgr.shape[1], bgr.shape[0], policy)
    if face is None:
        reason = MULTIPLE_FACES if detections else NO_FACE
        return Extraction(None, reason, len(detections), was_grey=decoded.was_grey, timings_ms=timings)
    t = time.perf_counter()
    aligned = backend.align(bgr, face)
    timings["align"] = _ms(t)
    if not embed:
        return Extraction(None, "ok", len(detections), face, decoded.was_grey, timings, aligned)
    t = time.perf_counter()
    emb = backend.embed(aligned)
    timings["embed"] = _ms(t)
    return Extraction(emb, "ok", len(detections), face, decoded.was_grey, timings)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


@dataclass(frozen=True)
class Enrollment:
    """The card photo's embedding (or why there is none), computed once per session."""

    embedding: np.ndarray | None
    reason: str
    face_count: int
    model_version: str
    timings_ms: dict[str, float]

    @property
    def ok(self) -> bool:
        return self.embedding is not None


@dataclass(frozen=True)
class MatchResult:
    score: float | None  # similarity; None when no comparison was possible
    accepted: bool
    face_count: int  # faces detected in the live frame
    reason: str  # accepted | below_threshold | no_face | multiple_faces | enrolment_failed | image errors
    timings_ms: dict[str, float]  # decode, detect, align, embed, compare, total
    threshold: float = float("nan")
    box: tuple[float, float, float, float] | None = None  # the face matched, frame pixels


class FaceMatcher:
    """Matches live frames against an enrolled card photo.

    ``threshold``: a float (score units of the backend), a ``Calibration``, a path to a
    calibration JSON, or None for the backend's shipped default.
    """

    def __init__(self, backend: FaceBackend, threshold=None, policy: str = "largest_central"):
        if policy not in POLICIES:
            raise ValueError(f"unknown face policy {policy!r}: one of {', '.join(POLICIES)}")
        self.backend = backend
        self.policy = policy
        self.threshold = self._resolve_threshold(threshold)

    def _resolve_threshold(self, threshold) -> float:
        if threshold is None:
            if self.backend.default_threshold is None:
                raise ValueError(f"backend {self.backend.name} ships no default threshold: calibrate one "
                                 "(`facehil bench accuracy ... --calibrate-out FILE`) and pass it")
            return float(self.backend.default_threshold)
        if isinstance(threshold, (str, Path)):
            threshold = calibration.load(Path(threshold), self.backend.name, self.backend.model_version)
        if isinstance(threshold, calibration.Calibration):
            if threshold.model_version != self.backend.model_version:
                raise calibration.CalibrationError(
                    f"calibration is for {threshold.model_version!r}, backend runs {self.backend.model_version!r}")
            return float(threshold.threshold)
        return float(threshold)

    def enroll(self, image) -> Enrollment:
        """Embed the card photo (JPEG 2000 bytes, any image bytes, path or array)."""
        ex = extract(self.backend, image, self.policy)
        if not ex.ok:
            log.info("card photo not enrollable: %s (%d faces)", ex.reason, ex.face_count)
        return Enrollment(ex.embedding, ex.reason, ex.face_count, self.backend.model_version, ex.timings_ms)

    def verify(self, enrollment: Enrollment, frame) -> MatchResult:
        """Decide whether the face in ``frame`` (BGR array, or encoded bytes) is the enrolled one."""
        t0 = time.perf_counter()
        if enrollment.model_version != self.backend.model_version:
            raise ValueError("enrolment was made with another model; enroll again with this matcher")
        if not enrollment.ok:
            return MatchResult(None, False, 0, ENROLMENT_FAILED, {"total": _ms(t0)}, self.threshold)
        ex = extract(self.backend, frame, self.policy)
        timings = dict(ex.timings_ms)
        if not ex.ok:
            timings["total"] = _ms(t0)
            return MatchResult(None, False, ex.face_count, ex.reason, timings, self.threshold)
        t = time.perf_counter()
        score = self.backend.compare(enrollment.embedding, ex.embedding)
        timings["compare"] = _ms(t)
        accepted = score >= self.threshold
        timings["total"] = _ms(t0)
        return MatchResult(score, accepted, ex.face_count, ACCEPTED if accepted else BELOW_THRESHOLD,
                           timings, self.threshold, ex.detection.box if ex.detection else None)
