"""Capture conditions applied to a probe image: what troubles real clinic readers.

``apply(image_bgr, name, seed=0, face_box=None)`` returns a new 8-bit BGR image of the same
size; the input is never modified. The same (image, name, seed) always gives the same
output. Each condition costs well under 10 ms at 640x480 (see tests and benches), so the
simulated camera can render frames with it.

Masks and glasses are drawn where the face is: ``face_box`` (x0, y0, x1, y1, a detector
style box from brows to chin), or, when it is not given, where a centred portrait puts it
(LFW-like crops: centre at 48%/53% of width/height, side 43% of the shorter side).

Names: nominal, low_light, backlight, motion_blur, jpeg, jpeg2000, card_greyscale, mask, glasses.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

Box = tuple[float, float, float, float]


def default_face_box(width: int, height: int) -> Box:
    side = 0.43 * min(width, height)
    cx, cy = 0.484 * width, 0.534 * height
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, sum(map(ord, name))])


def nominal(img: np.ndarray, seed: int, box: Box) -> np.ndarray:
    return img.copy()


def low_light(img: np.ndarray, seed: int, box: Box) -> np.ndarray:
    """~2 stops under-exposed, with sensor noise lifted by the gain (luma noise, seeded)."""
    rng = _rng(seed, "low_light")
    dark = cv2.convertScaleAbs(img, alpha=0.22, beta=2)
    # sum of two uniforms: near-Gaussian (sd ~5 levels) at a fraction of the cost
    size = img.shape[:2]
    noise = rng.integers(-6, 7, size=size, dtype=np.int16) + rng.integers(-6, 7, size=size, dtype=np.int16)
    return np.clip(dark.astype(np.int16) + noise[:, :, None], 0, 255).astype(np.uint8)


def backlight(img: np.ndarray, seed: int, box: Box) -> np.ndarray:
    """A bright window behind the subject: exposure set by the background leaves the face
    dark, the surround blown out."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    r = max(x1 - x0, y1 - y0) * 0.75
    yy, xx = np.ogrid[:h, :w]
    d = np.sqrt(((xx - cx) / r) ** 2 + ((yy - cy) / (1.25 * r)) ** 2).astype(np.float32)
    # gain 0.35 on the face, rising to 1.9 off it, with a soft edge
    gain = 0.35 + 1.55 * np.clip((d - 0.8) / 0.6, 0.0, 1.0)
    out = img.astype(np.float32) * gain[:, :, None] + 25.0 * np.clip(d - 1.0, 0, 1)[:, :, None]
    return np.clip(out, 0, 255).astype(np.uint8)


def motion_blur(img: np.ndarray, seed: int, box: Box) -> np.ndarray:
    """Sideways motion during exposure: a horizontal line kernel of 9-21 px (seeded)."""
    length = int(_rng(seed, "motion_blur").integers(9, 22)) | 1
    scale = max(1.0, min(img.shape[:2]) / 480.0)  # the same motion at any resolution
    length = int(length * scale) | 1
    kernel = np.full((1, length), 1.0 / length, np.float32)
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def jpeg(img: np.ndarray, seed: int, box: Box) -> np.ndarray:
    """A heavily compressed stream (quality 15-25, seeded)."""
    q = int(_rng(seed, "jpeg").integers(15, 26))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def jpeg2000(img: np.ndarray, seed: int, box: Box) -> np.ndarray:
    """The face region as a JPEG 2000 card photo carries it: at most 144 px, ~1:40.

    Only the face region (padded 60%) goes through OpenJPEG, at card-photo resolution, and is
    scaled back: a whole 640x480 frame would cost ~50 ms, and only the face reaches the matcher.
    """
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    pw, ph = (x1 - x0) * 0.6, (y1 - y0) * 0.6
    a, b = int(max(0, x0 - pw)), int(max(0, y0 - ph))
    c, d = int(min(w, x1 + pw)), int(min(h, y1 + ph))
    out = img.copy()
    if c - a < 8 or d - b < 8:
        return out
    rate = int(_rng(seed, "jpeg2000").integers(20, 30))  # x1000 compression parameter
    region = img[b:d, a:c]
    shrink = min(1.0, 144.0 / max(region.shape[:2]))
    small = cv2.resize(region, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1 else region
    ok, buf = cv2.imencode(".jp2", np.ascontiguousarray(small), [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, rate])
    back = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    out[b:d, a:c] = cv2.resize(back, (c - a, d - b), interpolation=cv2.INTER_LINEAR) if shrink < 1 else back
    return out


def card_greyscale(img: np.ndarray, seed: int, box: Box) -> np.ndarray:
    """What a card photo loses: colour, and some contrast in print/scan."""
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    grey = cv2.convertScaleAbs(grey, alpha=0.85, beta=18)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def mask(img: np.ndarray, seed: int, box: Box) -> np.ndarray:
    """A surgical mask from just below the eyes' line + nose bridge to under the chin."""
    rng = _rng(seed, "mask")
    x0, y0, x1, y1 = box
    fw, fh = x1 - x0, y1 - y0
    top = y0 + 0.50 * fh
    pts = np.array([
        (x0 - 0.02 * fw, top + 0.08 * fh), (x0 + 0.30 * fw, top - 0.02 * fh), (x0 + 0.50 * fw, top - 0.06 * fh),
        (x0 + 0.70 * fw, top - 0.02 * fh), (x1 + 0.02 * fw, top + 0.08 * fh), (x1 - 0.05 * fw, y1 + 0.02 * fh),
        (x0 + 0.50 * fw, y1 + 0.12 * fh), (x0 + 0.05 * fw, y1 + 0.02 * fh),
    ], np.float32)
    colours = [(235, 225, 215), (230, 200, 150), (60, 60, 60), (240, 240, 240)]
    colour = colours[int(rng.integers(len(colours)))]
    out = img.copy()
    cv2.fillPoly(out, [np.round(pts * 16).astype(np.int32)], colour, lineType=cv2.LINE_AA, shift=4)
    # pleats, so the mask is not a flat blob
    for k in (0.2, 0.45, 0.7):
        y = int(top + k * (y1 - top))
        cv2.line(out, (int(x0 + 0.08 * fw), y), (int(x1 - 0.08 * fw), y),
                 tuple(int(c * 0.85) for c in colour), max(1, int(fw / 60)), cv2.LINE_AA)
    # ear loops
    lw = max(1, int(fw / 50))
    cv2.line(out, (int(x0), int(top + 0.1 * fh)), (int(x0 - 0.04 * fw), int(y0 + 0.3 * fh)), colour, lw, cv2.LINE_AA)
    cv2.line(out, (int(x1), int(top + 0.1 * fh)), (int(x1 + 0.04 * fw), int(y0 + 0.3 * fh)), colour, lw, cv2.LINE_AA)
    return out


def glasses(img: np.ndarray, seed: int, box: Box) -> np.ndarray:
    """New glasses: thick dark frames with slightly tinted lenses over both eyes."""
    rng = _rng(seed, "glasses")
    x0, y0, x1, y1 = box
    fw, fh = x1 - x0, y1 - y0
    eye_y = y0 + 0.31 * fh
    half_w, half_h = 0.17 * fw, 0.11 * fh
    centres = [(x0 + 0.30 * fw, eye_y), (x0 + 0.70 * fw, eye_y)]
    tint = 0.55 + 0.3 * float(rng.random())
    out = img.copy()
    lens = np.zeros(img.shape[:2], np.uint8)
    for cx, cy in centres:
        cv2.ellipse(lens, (int(cx), int(cy)), (int(half_w), int(half_h)), 0, 0, 360, 255, -1)
    sel = lens > 0
    out[sel] = (out[sel].astype(np.float32) * tint).astype(np.uint8)
    thick = max(2, int(fw / 28))
    frame_colour = (20, 20, 20) if rng.random() < 0.7 else (30, 40, 90)
    for cx, cy in centres:
        cv2.ellipse(out, (int(cx), int(cy)), (int(half_w), int(half_h)), 0, 0, 360, frame_colour, thick, cv2.LINE_AA)
    cv2.line(out, (int(centres[0][0] + half_w), int(eye_y)), (int(centres[1][0] - half_w), int(eye_y)),
             frame_colour, thick, cv2.LINE_AA)
    for side, cx in ((-1, centres[0][0] - half_w), (1, centres[1][0] + half_w)):
        cv2.line(out, (int(cx), int(eye_y)), (int(cx + side * 0.12 * fw), int(eye_y - 0.02 * fh)),
                 frame_colour, thick, cv2.LINE_AA)
    return out


CONDITIONS: dict[str, Callable[[np.ndarray, int, Box], np.ndarray]] = {
    "nominal": nominal, "low_light": low_light, "backlight": backlight, "motion_blur": motion_blur,
    "jpeg": jpeg, "jpeg2000": jpeg2000, "card_greyscale": card_greyscale, "mask": mask, "glasses": glasses,
}
NAMES = tuple(CONDITIONS)


def apply(image_bgr: np.ndarray, name: str, seed: int = 0, face_box: Box | None = None) -> np.ndarray:
    """The probe as captured under condition ``name`` (see module docstring)."""
    try:
        fn = CONDITIONS[name]
    except KeyError:
        raise ValueError(f"unknown condition {name!r}: one of {', '.join(NAMES)}") from None
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError("conditions apply to 8-bit 3-channel BGR images")
    h, w = image_bgr.shape[:2]
    box = tuple(float(v) for v in face_box) if face_box is not None else default_face_box(w, h)
    return fn(np.ascontiguousarray(image_bgr), int(seed), box)
