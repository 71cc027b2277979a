"""dlib backend: HOG face detector, 5-point landmarks, dlib's ResNet 128-d embedding.

Weights come from the ``face-recognition-models`` package (its ``.dat`` files); the
``face_recognition`` package is *not* used here (it is the benchmark baseline only).

Why it is faster than the stock ``face_locations(img, 1)`` + ``face_encodings`` pipeline
(measured: see benches/bench_face.py and ``facehil bench latency``):
- HOG runs on a greyscale copy scaled so that a face of ``min_face_px`` (160) just fills
  dlib's 80 px detection window: a 640x480 frame is scanned at 320x240 instead of the
  baseline's 1280x960 upsampled copy (16x fewer pixels, one channel instead of three);
- the 5-point landmarks are then fitted on the full-resolution image, starting from the box
  mapped back, so alignment precision is not lost with the coarse scan;
- the coarse scan quantises box size in ~20% steps, and a face smaller than
  ``min_face_px`` gets a box too large; the landmarks are therefore fitted twice, the second
  time from the box a full-resolution scan would give (fixed landmark-to-box geometry,
  measured on LFW): +0.3 ms instead of a ~4 ms re-scan (``refine="roi"``), with the same
  agreement with the stock pipeline's embeddings (median distance 0.03 on LFW frames). If the
  coarse scan finds nothing, one full-resolution scan (no upsampling) follows; faces under
  ~60 px in a camera frame are too far from the reader to matter;
- small images (crops such as card photos, longer side <= ``upsample_max_side_px``) are
  scanned upsampled once, as the stock pipeline does: cheap at that size, and tight boxes;
- the matcher embeds the card photo once per session, so a decision embeds one face.

Score: 1 - Euclidean distance between the 128-d descriptors (dlib's own rule of thumb,
distance 0.6, is score 0.4).
"""

from __future__ import annotations

import logging
from importlib import metadata

import cv2
import numpy as np

from harness.biometrics.backend import BackendError, Detection

log = logging.getLogger(__name__)

PIPELINE_VERSION = 1  # bump when detection/alignment changes embeddings (invalidates caches)
CHIP_SIZE_PX = 150  # the ResNet's input size
CHIP_PADDING = 0.25  # as in dlib's own compute_face_descriptor
HOG_WINDOW_PX = 80

# Calibrated on lfw-dev (3000 View-2 pairs; 1465 impostor and 1482 genuine pairs scored) at
# FMR = 1e-3: 1 impostor accepted (FMR 0.00068), FNMR 2.4%. Provenance (dataset hash, model
# version, date): calibrations/dlib-lfw-dev.json, made by `facehil bench accuracy --dataset
# .../lfw-dev --workers 2 --calibrate-out ...`. With 1465 impostors an FMR of 1e-3 rests on
# one false match: re-calibrate on a larger impostor set before relying on it (rule of 3:
# 3000 impostors to claim FMR <= 1e-3 at zero errors). Score = 1 - distance, so this is
# distance 0.572 (dlib's customary 0.6 would be score 0.4).
DEFAULT_THRESHOLD = 0.428


def model_version() -> str:
    """Weights + library + pipeline identity, without loading any model."""
    try:
        frm = metadata.version("face-recognition-models")
    except metadata.PackageNotFoundError:
        frm = "?"
    import dlib

    return (f"dlib-{dlib.__version__}/resnet_v1+sp5/face-recognition-models-{frm}"
            f"/pipeline-{PIPELINE_VERSION}")


def compare(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


class DlibBackend:
    name = "dlib"

    def __init__(self, min_face_px: int = 160, upsample_max_side_px: int = 400, refine: str = "refit"):
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise BackendError(f"dlib backend needs dlib-bin and face-recognition-models: {exc}") from exc
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self.min_face_px = int(min_face_px)
        self.upsample_max_side_px = int(upsample_max_side_px)
        self.refine = refine  # "refit" (landmarks from a normalised box), "roi" (re-scan), "none"
        self.model_version = model_version()
        self.default_threshold: float | None = DEFAULT_THRESHOLD

    # -- detect -----------------------------------------------------------------------------
    def _hog(self, grey: np.ndarray, scale: float, upsample: int) -> list[tuple[tuple[float, ...], float]]:
        img = grey if scale == 1.0 else cv2.resize(
            grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        rects, scores, _ = self._detector.run(img, upsample, 0.0)
        h, w = grey.shape
        out = []
        for r, s in zip(rects, scores):
            box = (max(0.0, r.left() / scale), max(0.0, r.top() / scale),
                   min(float(w), (r.right() + 1) / scale), min(float(h), (r.bottom() + 1) / scale))
            out.append((box, float(s)))
        return out

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
        h, w = grey.shape
        if max(h, w) <= self.upsample_max_side_px:
            # A crop (card photo, dataset portrait): cheap at any scale, so scan it upsampled
            # like the stock pipeline; its tighter boxes align small faces better.
            found = self._hog(grey, 1.0, 1)
        else:
            scale = min(1.0, HOG_WINDOW_PX / self.min_face_px)
            found = self._hog(grey, scale, 0)
            if not found and scale < 1.0:
                found = self._hog(grey, 1.0, 0)
            elif self.refine == "roi":
                found = [self._refine(grey, box, q) for box, q in found]
            elif self.refine == "refit":
                return [self._refit(grey, self._landmarks(grey, box, q)) for box, q in found]
        return [self._landmarks(grey, box, q) for box, q in found]

    def _refit(self, grey: np.ndarray, det: Detection) -> Detection:
        """Fit the landmarks again from the box a full-resolution scan would have given.

        A coarse scan quantises box size in 20% steps; the 5-point model was trained on
        HOG boxes, whose geometry relative to the landmarks is fixed (measured on LFW):
        centre 0.33 eye distances below the landmarks' centroid, side 2.58 eye distances.
        """
        p = det.landmarks
        eye_dist = float(np.linalg.norm(p[0:2].mean(0) - p[2:4].mean(0)))
        if eye_dist < 4:
            return det
        cx, cy = float(p[:, 0].mean()), float(p[:, 1].mean()) + 0.33 * eye_dist
        half = 1.29 * eye_dist
        h, w = grey.shape
        box = (max(0.0, cx - half), max(0.0, cy - half), min(float(w), cx + half), min(float(h), cy + half))
        refit = self._landmarks(grey, box, det.quality)
        return Detection(box=det.box, landmarks=refit.landmarks, quality=det.quality)

    def _refine(self, grey: np.ndarray, box: tuple[float, ...], quality: float) -> tuple[tuple[float, ...], float]:
        """A coarse scan boxes faces smaller than ``min_face_px`` too large; re-scan around them.

        The 5-point model was trained on boxes that fit, so a loose box costs alignment.
        """
        side = max(box[2] - box[0], box[3] - box[1])
        if side >= 1.25 * self.min_face_px:
            return box, quality
        h, w = grey.shape
        pad = side * 0.5
        x0, y0 = int(max(0, box[0] - pad)), int(max(0, box[1] - pad))
        x1, y1 = int(min(w, box[2] + pad)), int(min(h, box[3] + pad))
        inner = self._hog(np.ascontiguousarray(grey[y0:y1, x0:x1]), 1.0, 0)
        if not inner:
            return box, quality
        (bx0, by0, bx1, by1), q = max(inner, key=lambda d: (d[0][2] - d[0][0]) * (d[0][3] - d[0][1]))
        return (bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), q

    def _landmarks(self, grey: np.ndarray, box: tuple[float, ...], quality: float) -> Detection:
        rect = self._dlib.rectangle(int(round(box[0])), int(round(box[1])),
                                    int(round(box[2])) - 1, int(round(box[3])) - 1)
        shape = self._shape(grey, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return Detection(box=tuple(float(v) for v in box), landmarks=pts, quality=quality)

    # -- align / embed / compare ------------------------------------------------------------
    def align(self, image_bgr: np.ndarray, detection: Detection) -> np.ndarray:
        dlib = self._dlib
        x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
        shape = dlib.full_object_detection(dlib.rectangle(x0, y0, x1 - 1, y1 - 1),
                                           [dlib.point(int(round(x)), int(round(y))) for x, y in detection.landmarks])
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        return dlib.get_face_chip(rgb, shape, size=CHIP_SIZE_PX, padding=CHIP_PADDING)

    def embed(self, aligned: np.ndarray) -> np.ndarray:
        return np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(aligned)), dtype=np.float32)

    def compare(self, a: np.ndarray, b: np.ndarray) -> float:
        return compare(a, b)
