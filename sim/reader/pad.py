"""Presentation attack detection of the reference reader (firmware feature
``presentation_attack_detection``): a printed photo, or a phone replaying the photo, held up
to the camera.

The cue is the print's *frame*: a convex quadrilateral around the matched face whose inner
border strip is uniform (paper) and contrasts with what is around it. A live face pasted into
a room has no such straight-edged uniform margin. On the simulated presenter's scenes
(lfw-dev and orl subjects; nominal, low light, backlight, JPEG, glasses, mask, with a carer) it
flags every print and no live face; under motion blur the paper edge smears and about half
the prints pass (a real limitation of edge-based PAD, kept honest rather than tuned away).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CANNY_LOW, CANNY_HIGH = 10, 30
MIN_AREA_FRACTION, MAX_AREA_FRACTION = 0.05, 0.8
BAND_INNER_PX, BAND_OUTER_PX = 3, 12
MAX_BAND_STD = 26.0  # paper margin: uniform
MAX_RING_STD = 30.0  # what surrounds the print: a wall, not a busy photo
MIN_CONTRAST = 25.0  # paper edge vs surroundings (grey levels)


@dataclass(frozen=True)
class PadResult:
    attack: bool
    reason: str
    kind: str = ""  # print | screen, when an attack is seen


# A phone: a dark, uniform bezel with straight sides that rings the face, on a brighter room
MAX_BEZEL_GREY = 45
MIN_RECTANGULARITY = 0.85
MIN_ROOM_GREY = 70


def _kernel(n: int) -> np.ndarray:
    return np.ones((2 * n + 1, 2 * n + 1), np.uint8)


def detect_print(frame_bgr: np.ndarray, face_box: tuple[float, float, float, float] | None) -> PadResult:
    """Is the face at ``face_box`` (x0, y0, x1, y1 in frame pixels) on a printed sheet?"""
    if face_box is None:
        return PadResult(False, "no face")
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
    x0, y0, x1, y1 = face_box
    centre = (float((x0 + x1) / 2), float((y0 + y1) / 2))
    edges = cv2.dilate(cv2.Canny(cv2.GaussianBlur(grey, (5, 5), 0), CANNY_LOW, CANNY_HIGH), _kernel(1))
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:
        area = cv2.contourArea(contour)
        if not MIN_AREA_FRACTION * grey.size <= area <= MAX_AREA_FRACTION * grey.size:
            continue
        quad = cv2.approxPolyDP(contour, 0.03 * cv2.arcLength(contour, True), True)
        if len(quad) != 4 or not cv2.isContourConvex(quad) or cv2.pointPolygonTest(quad, centre, False) < 0:
            continue
        mask = np.zeros(grey.shape, np.uint8)
        cv2.fillPoly(mask, [quad.reshape(-1, 2)], 255)
        band = cv2.erode(mask, _kernel(BAND_INNER_PX)) & ~cv2.erode(mask, _kernel(BAND_OUTER_PX))
        ring = cv2.dilate(mask, _kernel(BAND_OUTER_PX)) & ~cv2.dilate(mask, _kernel(BAND_INNER_PX))
        inner, outer = grey[band > 0], grey[ring > 0]
        if inner.size == 0 or outer.size == 0:
            continue
        if (inner.std() <= MAX_BAND_STD and outer.std() <= MAX_RING_STD
                and abs(float(inner.mean()) - float(outer.mean())) >= MIN_CONTRAST):
            return PadResult(True, "printed sheet around the face", "print")
    return PadResult(False, "live")


def detect_screen(frame_bgr: np.ndarray, face_box: tuple[float, float, float, float] | None) -> PadResult:
    """Is the face at ``face_box`` shown on a phone or tablet held up to the camera?

    The cue is the device's body: a dark region that is nearly a (rounded) rectangle, encloses
    the face, and is surrounded by a brighter room. A live face in dark clothes is not ringed
    by a dark rectangle; a scene that is dark all over (low light) fails the area test.
    """
    if face_box is None:
        return PadResult(False, "no face")
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
    x0, y0, x1, y1 = face_box
    centre = (float((x0 + x1) / 2), float((y0 + y1) / 2))
    dark = (cv2.GaussianBlur(grey, (5, 5), 0) <= MAX_BEZEL_GREY).astype(np.uint8) * 255
    contours, _ = cv2.findContours(dark, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:
        area = cv2.contourArea(contour)
        if not MIN_AREA_FRACTION * grey.size <= area <= MAX_AREA_FRACTION * grey.size:
            continue
        if cv2.pointPolygonTest(contour, centre, False) < 0:
            continue
        (_, (w, h), _) = cv2.minAreaRect(contour)
        if w * h <= 0 or area / (w * h) < MIN_RECTANGULARITY:
            continue
        mask = np.zeros(grey.shape, np.uint8)
        cv2.drawContours(mask, [contour], -1, 255, -1)
        ring = cv2.dilate(mask, _kernel(BAND_OUTER_PX)) & ~cv2.dilate(mask, _kernel(BAND_INNER_PX))
        if ring.any() and float(grey[ring > 0].mean()) >= MIN_ROOM_GREY:
            return PadResult(True, "screen bezel around the face", "screen")
    return PadResult(False, "live")


def detect_attack(frame_bgr: np.ndarray, face_box: tuple[float, float, float, float] | None,
                  let_through: frozenset[str] = frozenset()) -> PadResult:
    """Every detector in turn; ``let_through`` names attack kinds a faulty build lets pass."""
    for kind, detector in (("print", detect_print), ("screen", detect_screen)):
        result = detector(frame_bgr, face_box)
        if result.attack and kind not in let_through:
            return PadResult(True, result.reason, kind)
    return PadResult(False, "live")
