"""Video: find the face once, then follow its box from frame to frame.

A reader's camera streams frames of one patient who barely moves. A full detection scans
the whole frame (and, failing that, the last-resort passes); following the face only scans
a window (1.5x the face) around the last box, scaled so the face just fills the HOG window:

- ``redetect_every`` frames (and whenever the face is lost) a full detection runs again,
  so a second person stepping in, or a face the window lost, is picked up;
- in between, HOG scans that window (a few pyramid levels of ~130 px) and the 5-point landmarks
  are fitted on the full-resolution frame from the box found, as in a full detection.

``StreamMatcher`` decides frame after frame against one enrolled card photo.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from harness.biometrics.backend import Detection
from harness.biometrics.matcher import (ACCEPTED, BELOW_THRESHOLD, ENROLMENT_FAILED, MULTIPLE_FACES, NO_FACE,
                                        Enrollment, FaceMatcher, MatchResult, choose_face)

WINDOW_FACE_PX = 88  # the face side in the rescaled search window: just over dlib's 80 px HOG window


@dataclass
class TrackState:
    detection: Detection | None = None
    frames_since_detect: int = 0
    full_detections: int = 0
    tracked_frames: int = 0
    losses: int = 0


class FaceTracker:
    """``update(frame)`` -> the face to match in this frame, or None."""

    def __init__(self, backend, redetect_every: int = 15, search_scale: float = 1.5,
                 policy: str = "largest_central"):
        if not hasattr(backend, "_hog") or not hasattr(backend, "_landmarks"):
            raise ValueError(f"face tracking needs the dlib backend's HOG detector, not {backend.name}")
        self.backend = backend
        self.redetect_every = max(1, int(redetect_every))
        self.search_scale = float(search_scale)
        self.policy = policy
        self.state = TrackState()
        self.last_faces = 0

    def reset(self) -> None:
        self.state = TrackState()

    def update(self, frame_bgr: np.ndarray) -> Detection | None:
        s = self.state
        if s.detection is not None and s.frames_since_detect + 1 < self.redetect_every:
            grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
            found = self._follow(grey, s.detection)
            if found is not None:
                s.detection = found
                s.frames_since_detect += 1
                s.tracked_frames += 1
                self.last_faces = 1
                return found
            s.losses += 1
        dets = self.backend.detect(frame_bgr)
        s.full_detections += 1
        s.frames_since_detect = 0
        self.last_faces = len(dets)
        s.detection = choose_face(dets, frame_bgr.shape[1], frame_bgr.shape[0], self.policy)
        return s.detection

    def _follow(self, grey: np.ndarray, last: Detection) -> Detection | None:
        side = max(last.width_px, last.height_px)
        if side < 8:
            return None
        cx, cy = last.centre
        half = side * self.search_scale / 2
        h, w = grey.shape
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
        if x1 - x0 < side * 0.8 or y1 - y0 < side * 0.8:
            return None  # the face has left the frame
        scale = min(1.0, WINDOW_FACE_PX / side)
        found = self.backend._hog(np.ascontiguousarray(grey[y0:y1, x0:x1]), scale, 0)
        if not found:
            return None
        (bx0, by0, bx1, by1), q = max(found, key=lambda d: (d[0][2] - d[0][0]) * (d[0][3] - d[0][1]))
        box = (bx0 + x0, by0 + y0, bx1 + x0, by1 + y0)
        det = self.backend._landmarks(grey, box, q)
        refit = getattr(self.backend, "_refit", None)
        return refit(grey, det) if refit and scale < 1.0 else det


class StreamMatcher:
    """Frame-by-frame decisions for one enrolled card photo, with the face tracked."""

    def __init__(self, matcher: FaceMatcher, enrollment: Enrollment, redetect_every: int = 15):
        self.matcher = matcher
        self.enrollment = enrollment
        self.tracker = FaceTracker(matcher.backend, redetect_every=redetect_every, policy=matcher.policy)

    def verify(self, frame_bgr: np.ndarray) -> MatchResult:
        t0 = time.perf_counter()
        backend, threshold = self.matcher.backend, self.matcher.threshold
        if not self.enrollment.ok:
            return MatchResult(None, False, 0, ENROLMENT_FAILED, {"total": _ms(t0)}, threshold)
        t = time.perf_counter()
        face = self.tracker.update(frame_bgr)
        timings = {"detect": _ms(t)}
        if face is None:
            reason = MULTIPLE_FACES if self.tracker.last_faces else NO_FACE
            timings["total"] = _ms(t0)
            return MatchResult(None, False, self.tracker.last_faces, reason, timings, threshold)
        t = time.perf_counter()
        aligned = backend.align(frame_bgr, face)
        timings["align"] = _ms(t)
        t = time.perf_counter()
        emb = backend.embed(aligned)
        timings["embed"] = _ms(t)
        score = backend.compare(self.enrollment.embedding, emb)
        accepted = score >= threshold
        timings["total"] = _ms(t0)
        return MatchResult(score, accepted, self.tracker.last_faces, ACCEPTED if accepted else BELOW_THRESHOLD,
                           timings, threshold, face.box)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
