"""Stand-in inputs built from a dataset portrait: a card photo and a live camera frame.

- ``card_photo``: what the card's chip holds: a small greyscale JPEG 2000 (180x225 px).
- ``live_frame``: a colour 640x480 frame with the portrait scaled by ``face_scale`` and
  centred on a neutral background, as a reader's camera sees a patient.
"""

from __future__ import annotations

import cv2
import numpy as np

CARD_SIZE_PX = (180, 225)  # width, height
FRAME_SIZE_PX = (640, 480)


def card_photo(portrait_bgr: np.ndarray, compression_x1000: int = 40) -> bytes:
    h, w = portrait_bgr.shape[:2]
    cw, ch = CARD_SIZE_PX
    # centre crop to the card's aspect ratio, then shrink
    target = cw / ch
    if w / h > target:
        nw = int(h * target)
        crop = portrait_bgr[:, (w - nw) // 2:(w - nw) // 2 + nw]
    else:
        nh = int(w / target)
        crop = portrait_bgr[(h - nh) // 2:(h - nh) // 2 + nh, :]
    grey = cv2.cvtColor(cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    ok, buf = cv2.imencode(".jp2", grey, [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, compression_x1000])
    if not ok:
        raise RuntimeError("OpenCV could not encode JPEG 2000")
    return buf.tobytes()


def live_frame(portrait_bgr: np.ndarray, face_scale: float = 1.6, size=FRAME_SIZE_PX,
               background=(118, 124, 128)) -> np.ndarray:
    fw, fh = size
    frame = np.empty((fh, fw, 3), np.uint8)
    frame[:] = background
    img = cv2.resize(portrait_bgr, None, fx=face_scale, fy=face_scale,
                     interpolation=cv2.INTER_LINEAR if face_scale > 1 else cv2.INTER_AREA)
    h, w = img.shape[:2]
    # paste centred, clipping whatever does not fit
    x0, y0 = (fw - w) // 2, (fh - h) // 2
    sx, sy = max(0, -x0), max(0, -y0)
    dx, dy = max(0, x0), max(0, y0)
    cw, ch = min(w - sx, fw - dx), min(h - sy, fh - dy)
    frame[dy:dy + ch, dx:dx + cw] = img[sy:sy + ch, sx:sx + cw]
    return frame
