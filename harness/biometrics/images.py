"""Turn whatever a caller hands us (path, encoded bytes, array) into an 8-bit BGR image.

Bad input never raises anything but ``ImageError``, whose ``reason`` is a short code that
evaluation counts as a failure to acquire (FTA):
- ``unreadable``: not an image any decoder here understands (or a missing file);
- ``too_large``: more pixels than ``MAX_PIXELS`` (checked from the header, before decoding);
- ``unsupported``: a pixel layout we cannot interpret (e.g. 2 channels, complex numbers).

Convertible layouts are converted, not rejected: greyscale (the card photo is greyscale),
RGBA/BGRA (alpha dropped), 16-bit and float images (scaled to 8 bits). Images whose longer
side exceeds ``MAX_SIDE_PX`` are downscaled, which bounds detection time and memory.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MAX_PIXELS = 80_000_000  # ~ 9000 x 9000: decoding more would cost > 240 MB per image
MAX_SIDE_PX = 2048


class ImageError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Decoded:
    bgr: np.ndarray
    was_grey: bool
    original_size: tuple[int, int]  # (width, height) before any downscale
    scale: float  # bgr pixels per original pixel


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header without decoding pixels, or None if unknown."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit; PIL's warning is not an error here
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # noqa: BLE001 - any decoder failure just means "no header info"
        return None


def read_bytes(source: str | os.PathLike) -> bytes:
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ImageError("unreadable", f"cannot read {source}: {exc.strerror or exc}") from exc


def decode(data: bytes | bytearray | memoryview, name: str = "image") -> Decoded:
    """Decode encoded image bytes (JPEG, PNG, JPEG 2000, PGM, ...) into normalised BGR."""
    data = bytes(data)
    if not data:
        raise ImageError("unreadable", f"{name} is empty")
    size = _header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ImageError("too_large", f"{name} is {size[0]}x{size[1]} px, over the {MAX_PIXELS} px limit")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        arr = _decode_with_pillow(data, name)
    return normalise(arr, name)


def _decode_with_pillow(data: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            arr = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - every decoder failure is the same FTA
        raise ImageError("unreadable", f"{name} is not a decodable image ({type(exc).__name__})") from exc
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if arr.dtype in (np.int8, np.int16, np.int32, np.uint32, np.int64, np.uint64, np.bool_):
        a = arr.astype(np.float64)
    elif np.issubdtype(arr.dtype, np.floating):
        a = np.nan_to_num(arr.astype(np.float64))
        if a.max(initial=0) <= 1.0 and a.min(initial=0) >= 0.0:
            return np.round(a * 255).astype(np.uint8)
    else:
        raise ImageError("unsupported", f"{name} has pixel type {arr.dtype}")
    lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def normalise(arr: np.ndarray, name: str = "image", max_side_px: int = MAX_SIDE_PX) -> Decoded:
    """Any 2-D/3-D pixel array -> 8-bit 3-channel BGR, downscaled if huge."""
    if not isinstance(arr, np.ndarray) or arr.ndim not in (2, 3) or arr.size == 0:
        raise ImageError("unsupported", f"{name} is not a 2-D or 3-D pixel array")
    h, w = arr.shape[:2]
    if h * w > MAX_PIXELS:
        raise ImageError("too_large", f"{name} is {w}x{h} px, over the {MAX_PIXELS} px limit")
    if min(h, w) < 8:
        raise ImageError("unsupported", f"{name} is only {w}x{h} px")
    arr = _to_uint8(arr, name)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if channels == 1:
        bgr, grey = cv2.cvtColor(arr.reshape(h, w), cv2.COLOR_GRAY2BGR), True
    elif channels == 3:
        bgr, grey = arr, False
    elif channels == 4:
        bgr, grey = cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR), False
    else:
        raise ImageError("unsupported", f"{name} has {channels} channels")
    if not grey:
        # a colour container holding a greyscale picture (e.g. JPEG of a card photo)
        sub = bgr[:: max(1, h // 64), :: max(1, w // 64)].astype(np.int16)
        grey = bool(np.abs(sub[:, :, 0] - sub[:, :, 1]).max() <= 2 and np.abs(sub[:, :, 1] - sub[:, :, 2]).max() <= 2)
    scale = 1.0
    if max(h, w) > max_side_px:
        scale = max_side_px / max(h, w)
        bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return Decoded(bgr=np.ascontiguousarray(bgr), was_grey=grey, original_size=(w, h), scale=scale)


def load(source) -> Decoded:
    """Path, bytes or array -> Decoded."""
    if isinstance(source, np.ndarray):
        return normalise(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode(source)
    return decode(read_bytes(source), name=str(source))
