"""Presentation-attack instruments the subject presenter can hold up (ISO/IEC 30107 "species").

Each renderer turns the card photo into a *sprite*: the instrument as the camera would see it
(BGR, float32), its opacity, and where the photo's face sits inside it. The presenter pastes
the sprite into the room scene (sim/camera_scene.py). The printed photo itself stays in
camera_scene (``print``); this module adds:

* ``screen``: the photo replayed on a phone: a black bezel with rounded corners, an emissive,
  slightly blue screen, the moiré that the camera's sampling of the pixel grid produces, and a
  specular glare band from a ceiling light;
* ``cutout``: the print cut out along the head, held close to the camera, so no paper margin
  and no straight edge are in view (the classic counter to edge/frame-based detection).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SPECIES = ("print", "screen", "cutout")

# A 6.1-inch phone held ~20 cm from the camera, in scene pixels
SCREEN_W_PX, SCREEN_H_PX = 250, 440
BEZEL_PX = 10
CORNER_PX = 18
PIXEL_PITCH_PX = 2.6  # the phone's pixel grid as seen by the camera: near its sampling -> moiré
GLARE_GAIN = 110.0


@dataclass(frozen=True)
class Sprite:
    image: np.ndarray  # BGR float32
    alpha: np.ndarray  # float32 0..1, same height and width
    photo_origin: tuple[float, float]  # top-left of the photo inside the sprite
    photo_scale: float  # sprite px per photo px


def _rounded_mask(h: int, w: int, r: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.rectangle(mask, (r, 0), (w - 1 - r, h - 1), 255, -1)
    cv2.rectangle(mask, (0, r), (w - 1, h - 1 - r), 255, -1)
    for cx, cy in ((r, r), (w - 1 - r, r), (r, h - 1 - r), (w - 1 - r, h - 1 - r)):
        cv2.circle(mask, (cx, cy), r, 255, -1)
    return mask.astype(np.float32) / 255.0


def screen_replay(photo_bgr: np.ndarray, seed: int = 0) -> Sprite:
    """The card photo on a phone screen, as the reader's camera sees it."""
    rng = np.random.default_rng(seed)
    h, w = photo_bgr.shape[:2]
    inner_w, inner_h = SCREEN_W_PX - 2 * BEZEL_PX, SCREEN_H_PX - 2 * BEZEL_PX
    scale = min(inner_w / w, inner_h / h)
    pw, ph = max(1, int(w * scale)), max(1, int(h * scale))
    shown = cv2.resize(photo_bgr, (pw, ph), interpolation=cv2.INTER_AREA).astype(np.float32)
    # emissive screen: lifted blacks, cool white point
    shown = 25 + shown * 0.9
    shown *= np.array([1.08, 1.0, 0.92], np.float32)
    # moiré: the camera samples the phone's RGB stripe grid at a slightly different pitch and
    # angle, so the grid beats into broad bands across the picture
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    angle = np.deg2rad(3.0 + rng.uniform(-1.0, 1.0))
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    grid = 0.5 + 0.5 * np.cos(2 * np.pi * u / PIXEL_PITCH_PX) * np.cos(2 * np.pi * v / PIXEL_PITCH_PX)
    shown *= (0.78 + 0.22 * grid)[..., None]
    # glare: a soft diagonal band of a ceiling light reflected by the glass
    band = np.exp(-((u - 0.35 * pw - 0.25 * v) / (0.12 * pw)) ** 2)
    shown += (GLARE_GAIN * band)[..., None]
    body = np.zeros((SCREEN_H_PX, SCREEN_W_PX, 3), np.float32)
    body[:] = (18, 18, 20)  # the bezel: black glass
    x0 = (SCREEN_W_PX - pw) // 2
    y0 = (SCREEN_H_PX - ph) // 2
    body[y0:y0 + ph, x0:x0 + pw] = shown
    body = np.clip(body, 0, 255)
    alpha = _rounded_mask(SCREEN_H_PX, SCREEN_W_PX, CORNER_PX)
    return Sprite(body, alpha, (float(x0), float(y0)), scale)


def cutout(photo_bgr: np.ndarray, height_px: int = 300) -> Sprite:
    """A greyscale print of the card photo cut out along the head (no paper margin left)."""
    grey = cv2.cvtColor(photo_bgr, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape[:2]
    scale = height_px / h
    grey = cv2.resize(grey, (max(1, int(w * scale)), height_px), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    grey = 40 + grey * 0.75  # ink never reaches black
    ch, cw = grey.shape
    # scissors follow the head: an ellipse around the face, cut with a hard (not feathered) edge
    mask = np.zeros((ch, cw), np.uint8)
    cv2.ellipse(mask, (cw // 2, int(ch * 0.48)), (int(cw * 0.36), int(ch * 0.46)), 0, 0, 360, 255, -1)
    image = cv2.cvtColor(grey.astype(np.uint8), cv2.COLOR_GRAY2BGR).astype(np.float32)
    return Sprite(image, mask.astype(np.float32) / 255.0, (0.0, 0.0), scale)
