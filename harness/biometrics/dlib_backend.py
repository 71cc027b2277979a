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
  coarse scan finds nothing, one full-resolution scan (no upsampling) follows;
- small images (crops such as card photos, longer side <= ``upsample_max_side_px``) are
  scanned upsampled once, as the stock pipeline does: cheap at that size, and tight boxes;
- last resort, only when those passes find nothing (no face the stock pipeline finds may be
  lost, issue 14): the stock pipeline's own scan (colour, upsampled once), then, for crops,
  a histogram-equalised grey copy upsampled twice. Their cost falls on frames and photos
  without a findable face only; ``pass_stats`` counts runs, finds and time per pass;
- the embedding runs dlib's ResNet converted to ONNX (``dlib_onnx``) on ONNX Runtime, ~15x
  faster than dlib-bin's BLAS-less code, after checking on real faces that it gives dlib's
  descriptors (cosine >= 0.9999); failing that it warns and runs dlib's own code
  (``FACEHIL_DLIB_ENGINE=dlib`` forces dlib, ``=onnx`` refuses to fall back);
- the matcher embeds the card photo once per session, so a decision embeds one face.

Score: 1 - Euclidean distance between the 128-d descriptors (dlib's own rule of thumb,
distance 0.6, is score 0.4).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata

import cv2
import numpy as np

from harness.biometrics.backend import BackendError, Detection

log = logging.getLogger(__name__)

PIPELINE_VERSION = 2  # bump when detection/alignment changes embeddings (invalidates caches)
CHIP_SIZE_PX = 150  # the ResNet's input size
CHIP_PADDING = 0.25  # as in dlib's own compute_face_descriptor
HOG_WINDOW_PX = 80
ENGINE_ENV = "FACEHIL_DLIB_ENGINE"  # auto (ONNX Runtime if verified, else dlib), onnx, dlib

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


@dataclass
class PassStats:
    """Per detection pass: how often it ran, how often it found a face, and its time."""

    runs: dict = field(default_factory=lambda: defaultdict(int))
    found: dict = field(default_factory=lambda: defaultdict(int))
    ms: dict = field(default_factory=lambda: defaultdict(float))

    def record(self, name: str, found: bool, ms: float) -> None:
        self.runs[name] += 1
        self.found[name] += int(found)
        self.ms[name] += ms

    def as_dict(self) -> dict:
        return {n: {"runs": self.runs[n], "found": self.found[n], "total_ms": self.ms[n],
                    "mean_ms": self.ms[n] / self.runs[n]} for n in self.runs}


def compare(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


class DlibBackend:
    name = "dlib"

    def __init__(self, min_face_px: int = 160, upsample_max_side_px: int = 400, refine: str = "refit",
                 last_resort: bool = True, engine: str | None = None, threads: int = 1):
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise BackendError(f"dlib backend needs dlib-bin and face-recognition-models: {exc}") from exc
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net_instance = None  # dlib's own ResNet: loaded only when used (~1 s, ~100 MB)
        self.min_face_px = int(min_face_px)
        self.upsample_max_side_px = int(upsample_max_side_px)
        self.refine = refine  # "refit" (landmarks from a normalised box), "roi" (re-scan), "none"
        self.last_resort = bool(last_resort)
        self.pass_stats = PassStats()
        self.last_pass: str | None = None
        self.model_version = model_version()
        self.default_threshold: float | None = DEFAULT_THRESHOLD
        self._onnx = None
        self.engine = "dlib"
        self.verification: dict | None = None
        engine = engine or os.environ.get(ENGINE_ENV, "auto")
        if engine not in ("auto", "onnx", "dlib"):
            raise BackendError(f"unknown dlib engine {engine!r} ({ENGINE_ENV} or engine=): choose auto, onnx or dlib")
        if engine != "dlib":
            try:
                self._onnx, self.verification = self._load_onnx(threads)
                self.engine = "onnx"
            except Exception as exc:  # noqa: BLE001 - any failure means: run dlib's own code
                if engine == "onnx":
                    raise BackendError(f"dlib ResNet on ONNX Runtime is unusable: {exc}") from exc
                log.warning("dlib ResNet on ONNX Runtime not used, falling back to dlib's CPU code "
                            "(same embeddings, ~15x slower): %s", exc)

    def _load_onnx(self, threads: int):
        """The converted network, verified against dlib's own on real faces before first use."""
        from harness.biometrics import dlib_onnx

        converted = dlib_onnx.cached()
        net = dlib_onnx.OnnxResNet(converted.onnx_path, threads=threads)
        stamp = dlib_onnx.verification_stamp(converted)
        if stamp.is_file():
            return net, json.loads(stamp.read_text())
        chips = self.verification_chips()
        report = dlib_onnx.verify(net, self._dlib_embed, chips)
        if report["min_cosine"] < dlib_onnx.VERIFY_MIN_COSINE:
            raise ValueError(f"converted network disagrees with dlib: min cosine {report['min_cosine']:.6f} "
                             f"< {dlib_onnx.VERIFY_MIN_COSINE} on {report['faces']} faces")
        dlib_onnx.write_stamp(stamp, report)
        return net, report

    def verification_chips(self) -> list[np.ndarray]:
        """Aligned chips of the packaged sample faces (real photos every install has)."""
        from harness.facedata import list_identities, prepare_samples

        chips = []
        for ident in list_identities(prepare_samples()):
            for path in ident.images:
                img = cv2.imread(str(path))
                dets = self.detect(img) if img is not None else []
                if dets:
                    chips.append(self.align(img, max(dets, key=lambda d: d.area_px)))
        if len(chips) < 3:
            raise ValueError(f"only {len(chips)} sample faces to verify the converted network on")
        return chips

    # -- detect -----------------------------------------------------------------------------
    def _hog(self, grey: np.ndarray, scale: float, upsample: int,
             boxes_for: tuple[int, int] | None = None) -> list[tuple[tuple[float, ...], float]]:
        img = grey if scale == 1.0 else cv2.resize(
            grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        rects, scores, _ = self._detector.run(img, upsample, 0.0)
        h, w = boxes_for or grey.shape[:2]
        out = []
        for r, s in zip(rects, scores):
            box = (max(0.0, r.left() / scale), max(0.0, r.top() / scale),
                   min(float(w), (r.right() + 1) / scale), min(float(h), (r.bottom() + 1) / scale))
            out.append((box, float(s)))
        return out

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Fast passes first; the last-resort passes run only when they find nothing."""
        grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
        h, w = grey.shape
        self.last_pass = None
        for name, run in self._passes(image_bgr, grey):
            t = time.perf_counter()
            found = run()
            self.pass_stats.record(name, bool(found), (time.perf_counter() - t) * 1000.0)
            if found:
                self.last_pass = name
                return found
        return []

    def _passes(self, image_bgr: np.ndarray, grey: np.ndarray):
        h, w = grey.shape
        if max(h, w) <= self.upsample_max_side_px:
            # A crop (card photo, dataset portrait): cheap at any scale, so scan it upsampled
            # like the stock pipeline; its tighter boxes align small faces better.
            yield "hog_grey_up1", lambda: self._fit(grey, self._hog(grey, 1.0, 1))
        else:
            scale = min(1.0, HOG_WINDOW_PX / self.min_face_px)
            yield "hog_coarse", lambda: self._fit_coarse(grey, self._hog(grey, scale, 0))
            if scale < 1.0:
                yield "hog_full", lambda: self._fit(grey, self._hog(grey, 1.0, 0))
        if not self.last_resort:
            return
        # Last resort, only when the fast passes found nothing (issue 14: no face the stock
        # pipeline finds may be lost): the stock call itself, HOG on the colour image
        # upsampled once (dlib takes the strongest gradient of the three channels, which
        # finds faces whose grey contrast is weak), then a contrast-stretched grey copy
        # upsampled once more for faces under ~40 px (ORL-sized crops, far-away faces).
        if image_bgr.ndim == 3:
            yield "hog_rgb_up1", lambda: self._fit(grey, self._hog(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB),
                                                                    1.0, 1, boxes_for=grey.shape))
        if max(h, w) <= self.upsample_max_side_px:
            yield "hog_eq_up2", lambda: self._fit(grey, self._hog(cv2.equalizeHist(grey), 1.0, 2))

    def _fit(self, grey: np.ndarray, found) -> list[Detection]:
        return [self._landmarks(grey, box, q) for box, q in found]

    def _fit_coarse(self, grey: np.ndarray, found) -> list[Detection]:
        if self.refine == "roi":
            return self._fit(grey, [self._refine(grey, box, q) for box, q in found])
        if self.refine == "refit":
            return [self._refit(grey, self._landmarks(grey, box, q)) for box, q in found]
        return self._fit(grey, found)

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

    @property
    def _net(self):
        if self._net_instance is None:
            import face_recognition_models as frm

            self._net_instance = self._dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        return self._net_instance

    def _dlib_embed(self, aligned: np.ndarray) -> np.ndarray:
        return np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(aligned)), dtype=np.float32)

    def embed(self, aligned: np.ndarray) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx(aligned)[0]
        return self._dlib_embed(aligned)

    def embed_batch(self, chips: list[np.ndarray]) -> np.ndarray:
        """Several aligned chips at once ([N, 128]); one ONNX Runtime call amortises its overhead."""
        if not chips:
            return np.zeros((0, 128), np.float32)
        if self._onnx is not None:
            return self._onnx(np.stack(chips))
        return np.stack([self._dlib_embed(c) for c in chips])

    def compare(self, a: np.ndarray, b: np.ndarray) -> float:
        return compare(a, b)
