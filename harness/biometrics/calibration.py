"""Decision thresholds calibrated at a target FMR, stored as JSON with their provenance.

A calibration is only valid for the backend and model version it was measured with;
``load`` refuses a file made for another model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path


class CalibrationError(ValueError):
    pass


@dataclass(frozen=True)
class Calibration:
    backend: str
    model_version: str
    target_fmr: float
    threshold: float
    fmr_achieved: float
    fnmr: float
    impostors: int
    genuine: int
    dataset: str
    dataset_hash: str
    created: str = ""

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["created"] = data["created"] or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path


def load(path: Path, backend: str | None = None, model_version: str | None = None) -> Calibration:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        cal = Calibration(**{k: data[k] for k in Calibration.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CalibrationError(f"not a usable calibration file {path}: {exc}") from exc
    if backend is not None and cal.backend != backend:
        raise CalibrationError(f"{path} calibrates backend {cal.backend!r}, not {backend!r}")
    if model_version is not None and cal.model_version != model_version:
        raise CalibrationError(f"{path} was calibrated for model {cal.model_version!r}, "
                               f"but the backend runs {model_version!r}: re-calibrate")
    return cal
