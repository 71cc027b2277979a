"""A frame counter drawn into a corner of each presented frame, readable after JPEG and capture.

Layout (for a 640-pixel-wide frame; scaled with the width): a row of 8x8-pixel cells at the
top-left corner, aligned to JPEG blocks so compression keeps them crisp:
``white, black`` (sync), 24 counter bits (most significant first, white = 1), one even parity
bit. The display-to-capture latency is the capture time minus the time the presenter sent the
frame with that counter (``GET /state``).
"""

from __future__ import annotations

import numpy as np

BITS = 24
CELL_PX = 8  # at REFERENCE_WIDTH_PX
REFERENCE_WIDTH_PX = 640
CELLS = 2 + BITS + 1


def cell_px(width_px: int) -> int:
    return max(4, round(CELL_PX * width_px / REFERENCE_WIDTH_PX))


def stamp(frame_bgr: np.ndarray, counter: int) -> None:
    """Draw the marker for ``counter`` (mod 2**24) in place."""
    cell = cell_px(frame_bgr.shape[1])
    value = counter % (1 << BITS)
    bits = [1, 0] + [(value >> (BITS - 1 - i)) & 1 for i in range(BITS)]
    bits.append(sum(bits[2:]) % 2)
    for i, bit in enumerate(bits):
        frame_bgr[0:cell, i * cell:(i + 1) * cell] = 255 if bit else 0


def read(frame_bgr: np.ndarray) -> int | None:
    """The counter in a captured frame, or None if the marker is missing or damaged."""
    if frame_bgr is None or frame_bgr.ndim < 2:
        return None
    h, w = frame_bgr.shape[:2]
    cell = cell_px(w)
    if CELLS * cell > w or cell > h:
        return None
    grey = frame_bgr if frame_bgr.ndim == 2 else frame_bgr.mean(axis=2)
    y0, y1 = int(cell * 0.25), max(int(cell * 0.75), int(cell * 0.25) + 1)
    levels = []
    for i in range(CELLS):
        x0, x1 = int(i * cell + cell * 0.25), max(int(i * cell + cell * 0.75), int(i * cell + cell * 0.25) + 1)
        levels.append(float(grey[y0:y1, x0:x1].mean()))
    if levels[0] < 160 or levels[1] > 96:
        return None
    bits = [1 if v >= 128 else 0 for v in levels]
    if any(96 < v < 160 for v in levels[2:]):  # an ambiguous cell: damaged, not a guess
        return None
    if sum(bits[2:2 + BITS]) % 2 != bits[-1]:
        return None
    value = 0
    for b in bits[2:2 + BITS]:
        value = (value << 1) | b
    return value
