"""The face backend contract: detect, align, embed, compare.

A backend works on 8-bit BGR images (OpenCV's layout). Scores are similarities: higher
means more alike, and a comparison is accepted when ``score >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the image given
    landmarks: np.ndarray  # (5, 2) float32 pixel coordinates, backend's own point order
    quality: float  # detector confidence; larger is surer (scale is backend-specific)

    @property
    def width_px(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height_px(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area_px(self) -> float:
        return max(0.0, self.width_px) * max(0.0, self.height_px)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


class BackendError(RuntimeError):
    """A backend cannot be loaded (missing model pack, unknown name...)."""


@runtime_checkable
class FaceBackend(Protocol):
    name: str
    model_version: str  # identifies weights + pipeline; part of cache keys and calibrations
    default_threshold: float | None

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Every face found, in no particular order."""

    def align(self, image_bgr: np.ndarray, detection: Detection) -> np.ndarray:
        """The aligned face crop ``embed`` expects."""

    def embed(self, aligned: np.ndarray) -> np.ndarray:
        """One float32 embedding vector of one aligned face."""

    def compare(self, a: np.ndarray, b: np.ndarray) -> float:
        """Similarity of two embeddings (higher is more alike)."""
