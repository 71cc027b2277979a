"""Where face photos come from: a user's dataset, or low-fidelity packaged samples.

Resolution order for the face dataset root:
1. an explicit path (station file ``[faces] dataset``, or ``--dataset``);
2. the ``FACEHIL_FACES`` environment variable;
3. packaged samples: the photos insightface's wheel ships (one portrait, and six faces cropped
   from its group photo). They are *low-fidelity samples*: one photo per identity, so anything
   that needs several photos per identity must skip and name ``FACEHIL_FACES``.

A dataset root may hold ``lfw-dev/`` (LFW layout ``name/name_0001.jpg``) and ``orl/``
(``sN/K.pgm``), or be one of those folders itself, or any folder of identity sub-folders.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV_VAR = "FACEHIL_FACES"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".ppm", ".tif", ".tiff", ".webp", ".jp2"}
NEEDS_SEVERAL = (f"needs a face dataset with several photos per identity: set {ENV_VAR} to a folder "
                 "such as lfw-dev or orl (only low-fidelity packaged samples are available)")


class FaceDataError(RuntimeError):
    """A face dataset path is missing or holds no usable identities."""


@dataclass(frozen=True)
class Identity:
    name: str
    images: tuple[Path, ...]


@dataclass(frozen=True)
class FaceSource:
    root: Path
    kind: str  # "dataset" or "samples"

    @property
    def low_fidelity(self) -> bool:
        return self.kind == "samples"


def samples_dir() -> Path:
    """Where the packaged sample faces are prepared (cropped once, then cached)."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facehil" / "sample-faces"
    return base


def _insightface_images() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise FaceDataError("no face dataset given and insightface (which ships sample photos) is not installed; "
                            f"set {ENV_VAR} or pass --dataset")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


def prepare_samples(dest: Path | None = None) -> Path:
    """Build a folder-of-identities from the photos insightface ships. Idempotent."""
    import cv2
    import dlib

    dest = dest or samples_dir()
    marker = dest / ".complete"
    if marker.exists():
        return dest
    src = _insightface_images()
    dest.mkdir(parents=True, exist_ok=True)
    portrait = cv2.imread(str(src / "Tom_Hanks_54745.png"))
    if portrait is not None:
        (dest / "sample_00").mkdir(exist_ok=True)
        cv2.imwrite(str(dest / "sample_00" / "sample_00_0001.png"), portrait)
    group = cv2.imread(str(src / "t1.jpg"))
    if group is not None:
        detector = dlib.get_frontal_face_detector()
        rects = sorted(detector(cv2.cvtColor(group, cv2.COLOR_BGR2RGB), 1), key=lambda r: r.left())
        h, w = group.shape[:2]
        for i, r in enumerate(rects, start=1):
            # Pad generously so the crop looks like a portrait, as LFW crops do.
            pad = int(r.width() * 0.8)
            x0, y0 = max(0, r.left() - pad), max(0, r.top() - pad)
            x1, y1 = min(w, r.right() + pad), min(h, r.bottom() + pad)
            name = f"sample_{i:02d}"
            (dest / name).mkdir(exist_ok=True)
            cv2.imwrite(str(dest / name / f"{name}_0001.png"), group[y0:y1, x0:x1])
    marker.write_text("insightface sample photos, cropped by dlib's HOG detector\n")
    return dest


def resolve_faces(explicit: str | os.PathLike | None = None) -> FaceSource:
    """The face dataset to use; raises FaceDataError naming the path when it does not exist."""
    for origin, value in (("dataset path", explicit), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value:
            root = Path(value).expanduser()
            if not root.is_dir():
                raise FaceDataError(f"face dataset from {origin} does not exist or is not a folder: {root}")
            return FaceSource(root=root.resolve(), kind="dataset")
    return FaceSource(root=prepare_samples(), kind="samples")


def _identity_dirs(root: Path) -> list[Path]:
    preferred = [root / "lfw-dev", root / "orl"]
    if any(p.is_dir() for p in preferred):
        dirs: list[Path] = []
        for p in preferred:
            if p.is_dir():
                dirs.extend(sorted(d for d in p.iterdir() if d.is_dir()))
        return dirs
    return sorted(d for d in root.iterdir() if d.is_dir())


def list_identities(source: FaceSource | Path, min_images: int = 1) -> list[Identity]:
    """Identities under a dataset root, sorted by name, each with its image files sorted."""
    root = source.root if isinstance(source, FaceSource) else Path(source)
    out = []
    for d in _identity_dirs(root):
        images = tuple(sorted((p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                              key=lambda p: (len(p.stem), p.stem)))
        if len(images) >= min_images:
            out.append(Identity(name=d.name, images=images))
    if not out:
        raise FaceDataError(f"no identity folders with at least {min_images} image(s) under {root}")
    return out


def tree_hash(paths: list[Path]) -> str:
    """A stable hash of a set of files' names and contents (dataset provenance for run records)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()
