"""insightface backend: a local model pack (buffalo_l, buffalo_s, ...) on onnxruntime CPU.

The pack is a folder of ``.onnx`` files, loaded with ``FaceAnalysis(name=<absolute dir>)``;
insightface's model router classifies each file by its signature (a detector has 5+ outputs:
SCRFD scores / boxes / keypoints per stride; a recogniser has one square NCHW input of
112+ px and one output). Only detection and recognition are loaded. Nothing is downloaded:
a missing or empty pack is a ``BackendError`` naming the folder.

Score: cosine similarity of the recogniser's embeddings.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from harness.biometrics.backend import BackendError, Detection

log = logging.getLogger(__name__)

PIPELINE_VERSION = 1
DET_SIZE = (640, 640)


def _pack_dir(model_pack) -> Path:
    if model_pack is None:
        raise BackendError("the insightface backend needs --model-pack DIR: a folder of .onnx files "
                           "such as buffalo_l (packs cannot be downloaded here)")
    pack = Path(model_pack).expanduser().resolve()
    if not pack.is_dir():
        raise BackendError(f"insightface model pack folder does not exist: {pack}")
    if not sorted(pack.glob("*.onnx")):
        raise BackendError(f"insightface model pack folder holds no .onnx files: {pack}")
    return pack


def model_version(model_pack) -> str:
    """Pack name plus a hash of its model files, without building any session."""
    pack = _pack_dir(model_pack)
    h = hashlib.sha256()
    for f in sorted(pack.glob("*.onnx")):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return f"insightface/{pack.name}/{h.hexdigest()[:16]}/pipeline-{PIPELINE_VERSION}"


def compare(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float32).ravel()
    b = np.asarray(b, np.float32).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom > 0 else 0.0


class InsightFaceBackend:
    name = "insightface"

    def __init__(self, model_pack, threads: int | None = None, det_size: tuple[int, int] = DET_SIZE,
                 det_thresh: float = 0.5):
        pack = _pack_dir(model_pack)
        try:
            import onnxruntime as ort
            from insightface.app import FaceAnalysis
        except ImportError as exc:
            raise BackendError(f"insightface backend needs insightface and onnxruntime: {exc}") from exc
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            app = FaceAnalysis(name=str(pack), allowed_modules=["detection", "recognition"],
                               providers=["CPUExecutionProvider"], sess_options=opts)
        except AssertionError as exc:
            raise BackendError(f"insightface model pack {pack} has no face detection model "
                               "(an .onnx file with 5+ outputs)") from exc
        except Exception as exc:  # noqa: BLE001 - onnxruntime/onnx raise many types for bad files
            raise BackendError(f"cannot load insightface model pack {pack}: {exc}") from exc
        if "recognition" not in app.models:
            raise BackendError(f"insightface model pack {pack} has no recognition model "
                               "(an .onnx file with one square NCHW input of 112+ px and one output)")
        app.prepare(ctx_id=-1, det_thresh=det_thresh, det_size=det_size)
        self._det = app.models["detection"]
        self._rec = app.models["recognition"]
        if not getattr(self._det, "use_kps", False):
            raise BackendError(f"the detector in {pack} outputs no keypoints (needs 9 or 15 outputs)")
        self.pack = pack
        self.model_version = model_version(pack)
        self.default_threshold: float | None = None  # calibrate per pack: `facehil bench accuracy`

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        bboxes, kpss = self._det.detect(image_bgr, max_num=0)
        out = []
        for i in range(bboxes.shape[0]):
            x0, y0, x1, y1, score = (float(v) for v in bboxes[i, :5])
            out.append(Detection(box=(x0, y0, x1, y1), landmarks=np.asarray(kpss[i], np.float32),
                                 quality=score))
        return out

    def align(self, image_bgr: np.ndarray, detection: Detection) -> np.ndarray:
        import warnings

        from insightface.utils import face_align

        with warnings.catch_warnings():  # scikit-image deprecation noise inside insightface
            warnings.simplefilter("ignore", FutureWarning)
            return face_align.norm_crop(image_bgr, landmark=detection.landmarks,
                                        image_size=self._rec.input_size[0])

    def embed(self, aligned: np.ndarray) -> np.ndarray:
        return np.asarray(self._rec.get_feat(aligned), np.float32).ravel()

    def compare(self, a: np.ndarray, b: np.ndarray) -> float:
        return compare(a, b)
