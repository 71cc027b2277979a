"""Physical model of the simulated rig: where the card is -> how well it couples to the reader.

The reader's antenna field has a *nominal operating volume* around its card mark. Inside it
the card is reliably present; in an *edge band* around it the card answers with transmission
errors (rate rising towards the outer edge); outside it, the card is absent.
Each dimension (lateral offset, height, tilt) is normalised to 0 at the nominal limit and 1 at
the outer edge; the worst dimension decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TRAVEL_HEIGHT_MM = 40.0  # the placer carries cards this high above the reader surface


@dataclass(frozen=True)
class CardPose:
    x_mm: float = 0.0
    y_mm: float = 0.0
    z_mm: float = 0.0
    tilt_deg: float = 0.0


@dataclass(frozen=True)
class Coupling:
    state: str  # "present", "flaky" or "absent"
    error_rate: float = 0.0  # fraction of APDUs that fail, when flaky


PRESENT = Coupling("present")
ABSENT = Coupling("absent")


@dataclass(frozen=True)
class OperatingVolume:
    nominal_radius_mm: float = 10.0
    nominal_height_mm: float = 15.0
    nominal_tilt_deg: float = 15.0
    edge_radius_mm: float = 20.0
    edge_height_mm: float = 30.0
    edge_tilt_deg: float = 30.0
    min_error_rate: float = 0.1  # just outside the nominal volume
    max_error_rate: float = 0.9  # at the outer edge

    def depth(self, pose: CardPose) -> float:
        """<= 0 inside the nominal volume, 0..1 in the edge band, >= 1 outside."""
        r = math.hypot(pose.x_mm, pose.y_mm)
        return max(_norm(r, self.nominal_radius_mm, self.edge_radius_mm),
                   _norm(max(pose.z_mm, 0.0), self.nominal_height_mm, self.edge_height_mm),
                   _norm(abs(pose.tilt_deg), self.nominal_tilt_deg, self.edge_tilt_deg))

    def coupling(self, pose: CardPose) -> Coupling:
        d = self.depth(pose)
        if d <= 0.0:
            return PRESENT
        if d >= 1.0:
            return ABSENT
        rate = self.min_error_rate + (self.max_error_rate - self.min_error_rate) * d
        return Coupling("flaky", round(rate, 2))


def _norm(value: float, nominal: float, edge: float) -> float:
    return (value - nominal) / (edge - nominal)


@dataclass(frozen=True)
class Waypoint:
    at_ms: float  # since the start of the motion
    coupling: Coupling


def descent(volume: OperatingVolume, target: CardPose, speed_mm_s: float) -> tuple[list[Waypoint], float]:
    """Couplings a card passes through while lowered from travel height onto ``target``.

    The card descends vertically above (x, y) with the target tilt. Returns the waypoints
    (coupling changes, in time order, the last one being the final coupling) and the total
    motion time in ms.
    """
    return _vertical(volume, target, TRAVEL_HEIGHT_MM, target.z_mm, speed_mm_s)


def ascent(volume: OperatingVolume, start: CardPose, speed_mm_s: float) -> tuple[list[Waypoint], float]:
    """Couplings a card passes through while lifted from ``start`` back to travel height."""
    return _vertical(volume, start, start.z_mm, TRAVEL_HEIGHT_MM, speed_mm_s)


def _vertical(volume: OperatingVolume, pose: CardPose, z0: float, z1: float,
              speed_mm_s: float) -> tuple[list[Waypoint], float]:
    total_ms = abs(z1 - z0) / speed_mm_s * 1000.0
    # Sample the path finely (1 mm) and keep only changes: the zones are few and monotonic in z.
    steps = max(1, int(math.ceil(abs(z1 - z0))))
    points: list[Waypoint] = []
    last: Coupling | None = None
    for i in range(steps + 1):
        frac = i / steps
        z = z0 + (z1 - z0) * frac
        c = volume.coupling(CardPose(pose.x_mm, pose.y_mm, z, pose.tilt_deg))
        # Inside the edge band the error rate changes every mm; report it in coarse steps.
        if last is None or c.state != last.state or abs(c.error_rate - last.error_rate) >= 0.2:
            points.append(Waypoint(total_ms * frac, c))
            last = c
    final = volume.coupling(CardPose(pose.x_mm, pose.y_mm, z1, pose.tilt_deg))
    if points[-1].coupling != final:
        points.append(Waypoint(total_ms, final))
    return points, total_ms
