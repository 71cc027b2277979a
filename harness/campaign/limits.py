"""Campaign limits from the station file, judged on confidence bounds.

    [campaign.limits]
    confidence = 0.95          # default for every limit below
    far = 0.01                 # a number: the rate's upper bound must not exceed it
    frr = {max = 0.05, confidence = 0.9}
    apcer = 0.1                # every attack species (apcer_print, apcer_screen, ... for one)

PASS when the one-sided upper bound at the confidence is within the limit, FAIL when the
lower bound is already above it (the data contradict the claim), INCONCLUSIVE otherwise: too
few transactions to support the claim either way. A name that is not a campaign figure is an
error, never a silent no-op.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.campaign.plan import ATTACK_SPECIES
from harness.config import Station, StationConfigError

RATE_NAMES = ("frr", "far", "far_random", "far_hard", "fta", "fnmr", "fmr", "bpcer", "apcer") + \
    tuple(f"apcer_{s}" for s in ATTACK_SPECIES)
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class CampaignLimit:
    name: str
    max: float
    confidence: float = DEFAULT_CONFIDENCE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fraction(station: Station, key: str, value: Any, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise StationConfigError(station.path, key, f"{what}, got {value!r}")
    return float(value)


def parse_limits_table(station: Station, table: Any) -> dict[str, CampaignLimit]:
    if not isinstance(table, dict):
        raise StationConfigError(station.path, "campaign.limits", "a table of limits (name = max rate)")
    conf = _fraction(station, "campaign.limits.confidence", table.get("confidence", DEFAULT_CONFIDENCE), 0.5, 0.9999,
                     "a confidence level in [0.5, 0.9999]")
    out: dict[str, CampaignLimit] = {}
    for name, value in table.items():
        if name == "confidence":
            continue
        key = f"campaign.limits.{name}"
        if name not in RATE_NAMES:
            raise StationConfigError(station.path, key, f"a campaign figure: one of {', '.join(RATE_NAMES)}")
        if isinstance(value, dict):
            extra = set(value) - {"max", "confidence"}
            if extra or "max" not in value:
                raise StationConfigError(station.path, key, "a number or a table with max (and confidence)")
            out[name] = CampaignLimit(name, _fraction(station, f"{key}.max", value["max"], 0.0, 1.0, "a rate in [0, 1]"),
                                      _fraction(station, f"{key}.confidence", value.get("confidence", conf), 0.5,
                                                0.9999, "a confidence level in [0.5, 0.9999]"))
        else:
            out[name] = CampaignLimit(name, _fraction(station, key, value, 0.0, 1.0, "a rate in [0, 1]"), conf)
    return out


def parse_campaign_limits(station: Station) -> dict[str, CampaignLimit]:
    """``[campaign.limits]`` of a station file (empty when it has none)."""
    section = station.extra.get("campaign")
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise StationConfigError(station.path, "campaign", "a [campaign] table")
    unknown = set(section) - {"limits"}
    if unknown:
        raise StationConfigError(station.path, f"campaign.{sorted(unknown)[0]}", "only [campaign.limits] is known")
    return parse_limits_table(station, section.get("limits", {}))


def judge(bound_low: float, bound_high: float, limit: float) -> str:
    if bound_high <= limit:
        return "PASS"
    if bound_low > limit:
        return "FAIL"
    return "INCONCLUSIVE"
