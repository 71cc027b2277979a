"""The screen fixture's geometry (hardware.md 11.1): the bezel around the reader's panel, its
four ArUco markers, and the panel's active area, in fixture millimetres.

Origin: the centre of marker 0 (top-left); x right, y down, in the panel plane. The finger's
``TAP x_mm y_mm`` and the station file's ``[screen]`` table use this frame. The simulated
screen camera draws it; a host's calibration reads it from the station file, never from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sim.reader.display import PANEL_H_PX, PANEL_W_PX

ARUCO_DICT = "DICT_4X4_50"
MARKER_IDS = (0, 1, 2, 3)  # top-left, top-right, bottom-right, bottom-left


@dataclass(frozen=True)
class Fixture:
    marker_side_mm: float = 16.0
    pixel_pitch_mm: float = 0.1926  # a 7-inch 800x480 panel: 154.1 x 92.4 mm active area
    panel_x_mm: float = 18.0  # the active area's top-left corner, from marker 0's centre
    panel_y_mm: float = 18.0

    @property
    def panel_w_mm(self) -> float:
        return PANEL_W_PX * self.pixel_pitch_mm

    @property
    def panel_h_mm(self) -> float:
        return PANEL_H_PX * self.pixel_pitch_mm

    @property
    def width_mm(self) -> float:
        """Marker 0 centre to marker 1 centre."""
        return 2 * self.panel_x_mm + self.panel_w_mm

    @property
    def height_mm(self) -> float:
        return 2 * self.panel_y_mm + self.panel_h_mm

    def marker_centres_mm(self) -> dict[int, tuple[float, float]]:
        w, h = self.width_mm, self.height_mm
        return {0: (0.0, 0.0), 1: (w, 0.0), 2: (w, h), 3: (0.0, h)}

    def mm_to_panel_px(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        return (x_mm - self.panel_x_mm) / self.pixel_pitch_mm, (y_mm - self.panel_y_mm) / self.pixel_pitch_mm

    def panel_px_to_mm(self, x_px: float, y_px: float) -> tuple[float, float]:
        return self.panel_x_mm + x_px * self.pixel_pitch_mm, self.panel_y_mm + y_px * self.pixel_pitch_mm

    def station_table(self) -> dict:
        """The ``[screen]`` keys describing the fixture (hardware.md 7)."""
        d = asdict(self)
        return {"aruco_dict": ARUCO_DICT, "marker_ids": list(MARKER_IDS), **d,
                "panel_w_mm": round(self.panel_w_mm, 3), "panel_h_mm": round(self.panel_h_mm, 3),
                "panel_w_px": PANEL_W_PX, "panel_h_px": PANEL_H_PX,
                "marker_centres_mm": [list(map(lambda v: round(v, 3), self.marker_centres_mm()[i]))
                                      for i in MARKER_IDS]}


FIXTURE = Fixture()
