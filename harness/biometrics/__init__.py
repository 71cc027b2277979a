"""Face matching for face-authentication readers: backends, matcher, metrics, datasets.

Stable API (docs/interfaces.md; the reference reader firmware uses exactly this)::

    from harness.biometrics import load_backend, FaceMatcher

    backend = load_backend("dlib")                 # or ("insightface", model_pack="/abs/buffalo_l")
    matcher = FaceMatcher(backend)                 # threshold=None: the backend's shipped default;
                                                   # or a float, a Calibration, a calibration JSON path
    enrollment = matcher.enroll(card_photo)        # JPEG 2000 bytes, any image bytes, path or array;
                                                   # once per session. enrollment.ok / .reason
    result = matcher.verify(enrollment, frame_bgr) # BGR array (or encoded bytes), e.g. 640x480
    result.score        # similarity, higher = more alike (None if no comparison happened)
    result.accepted     # score >= matcher.threshold
    result.face_count   # faces detected in the frame
    result.reason       # accepted | below_threshold | no_face | multiple_faces | enrolment_failed
                        # | unreadable | too_large | unsupported
    result.timings_ms   # decode, detect, align, embed, compare, total

With several faces in the frame the matcher takes the largest-and-most-central one
(``FaceMatcher(policy=...)``: largest_central, largest, central, single). Bad images never
raise: they come back as a reason. Capture conditions for probes:
``harness.biometrics.conditions.apply(image_bgr, name, seed=0)``.

Video: ``tracking.StreamMatcher(matcher, enrollment).verify(frame)`` per frame follows the
face box and re-detects every N frames or when the face is lost.

Modules: backend (Protocol), dlib_backend, dlib_onnx (dlib's ResNet read from its .dat and
run on ONNX Runtime), insightface_backend, matcher, tracking (video), images (decode and
normalise), conditions, metrics (ISO/IEC 19795-1, model-agnostic), datasets (pairs),
calibration, cache, evaluate (streaming accuracy), acquisition (FTA against the stock
pipeline), latency, report (HTML), scene, tinypack.
"""

from harness.biometrics.backend import BackendError, Detection, FaceBackend
from harness.biometrics.matcher import (Enrollment, Extraction, FaceMatcher, MatchResult, choose_face, extract,
                                        load_backend)

__all__ = ["BackendError", "Detection", "FaceBackend", "Enrollment", "Extraction", "FaceMatcher", "MatchResult",
           "choose_face", "extract", "load_backend"]
