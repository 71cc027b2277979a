"""Measurements with limits and marginal bands (OpenHTF-like, pytest-native).

A scenario records named values through a `Measurements` collector (the `measure` fixture):

    measure("face_auth_latency_ms", 1340.0, limit=Limit(high=1500, marginal=1200))
    measure.rate("fnmr", errors=1, trials=200, high=0.05, confidence=0.95)
    measure.face_match(score=0.71, threshold=0.6, accepted=True, condition="nominal", subject_id="s01")

Each value is judged PASS, MARGINAL or FAIL:
- a plain value against `low`/`high`; the marginal band lies inside the limits
  (`marginal_high <= high`, `marginal_low >= low`): past the band but within the limit is MARGINAL;
- a rate (errors over trials) on its one-sided confidence bound, never the point estimate:
  an upper limit ("FNMR <= 5% at 95%") is met only if the upper Clopper-Pearson bound (the
  beta quantile) is within it; with zero errors the bound is the rule of 3 (-ln(1-confidence)/trials,
  3/n at 95%), as ISO/IEC 19795-1 asks.

A station file's `[limits.<name>]` tables, given here as a plain dict, override the limits the
scenario code passes (the whole limit is replaced, never merged key by key).
Face-match records carry scores and labels only: never images or embeddings.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping
from dataclasses import InitVar, asdict, dataclass, field
from enum import Enum
from typing import Any


class MeasurementError(ValueError):
    """A measurement or limit that cannot be judged (bad type, inconsistent limit, ...)."""


class Outcome(str, Enum):
    PASS = "PASS"
    MARGINAL = "MARGINAL"
    FAIL = "FAIL"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Outcome.PASS: 0, Outcome.MARGINAL: 1, Outcome.FAIL: 2}

# Unit inferred from the name's suffix when none is given (names carry their units).
_UNIT_SUFFIXES = (("_ms", "ms"), ("_us", "us"), ("_s", "s"), ("_mm", "mm"), ("_lux", "lux"),
                  ("_pct", "%"), ("_bytes", "B"), ("_hz", "Hz"), ("_fps", "fps"), ("_count", "count"))


def unit_from_name(name: str) -> str:
    for suffix, unit in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return ""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MeasurementError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _opt_number(value: Any, what: str) -> float | None:
    return None if value is None else _number(value, what)


@dataclass(frozen=True)
class Limit:
    """Limits for a plain value. `marginal=` is shorthand for the band on the one side that has a limit."""

    low: float | None = None
    high: float | None = None
    marginal_low: float | None = None
    marginal_high: float | None = None
    marginal: InitVar[float | None] = None

    def __post_init__(self, marginal: float | None) -> None:
        for key in ("low", "high", "marginal_low", "marginal_high"):
            object.__setattr__(self, key, _opt_number(getattr(self, key), f"limit {key}"))
        if marginal is not None:
            marginal = _number(marginal, "limit marginal")
            if self.high is not None and self.low is None and self.marginal_high is None:
                object.__setattr__(self, "marginal_high", marginal)
            elif self.low is not None and self.high is None and self.marginal_low is None:
                object.__setattr__(self, "marginal_low", marginal)
            else:
                raise MeasurementError("`marginal=` needs exactly one of low/high; "
                                       "use marginal_low/marginal_high with both")
        _check_bands(self.low, self.high, self.marginal_low, self.marginal_high)

    def judge(self, value: float) -> Outcome:
        return _judge(value, self.low, self.high, self.marginal_low, self.marginal_high)

    def describe(self, unit: str = "") -> str:
        return _describe(self.low, self.high, self.marginal_low, self.marginal_high, unit)


@dataclass(frozen=True)
class RateLimit:
    """Limits for a rate, judged on its one-sided bound at `confidence`.

    `high` bounds the upper confidence bound (error rates); `low` bounds the lower one
    (success rates). The marginal band is on the same bound.
    """

    low: float | None = None
    high: float | None = None
    marginal_low: float | None = None
    marginal_high: float | None = None
    confidence: float = 0.95

    def __post_init__(self) -> None:
        for key in ("low", "high", "marginal_low", "marginal_high"):
            v = _opt_number(getattr(self, key), f"rate limit {key}")
            if v is not None and not 0.0 <= v <= 1.0:
                raise MeasurementError(f"rate limit {key}={v} is outside [0, 1]")
            object.__setattr__(self, key, v)
        conf = _number(self.confidence, "confidence")
        if not 0.5 <= conf < 1.0:
            raise MeasurementError(f"confidence={conf} must be in [0.5, 1)")
        object.__setattr__(self, "confidence", conf)
        _check_bands(self.low, self.high, self.marginal_low, self.marginal_high)

    def describe(self, unit: str = "") -> str:
        return f"{_describe(self.low, self.high, self.marginal_low, self.marginal_high, unit)} " \
               f"at {self.confidence:.0%}"


def _check_bands(low, high, marginal_low, marginal_high) -> None:
    if low is not None and high is not None and low > high:
        raise MeasurementError(f"limit low={low} is above high={high}")
    if marginal_high is not None:
        if high is None:
            raise MeasurementError("marginal_high needs a high limit")
        if marginal_high > high:
            raise MeasurementError(f"marginal_high={marginal_high} must not exceed high={high}")
    if marginal_low is not None:
        if low is None:
            raise MeasurementError("marginal_low needs a low limit")
        if marginal_low < low:
            raise MeasurementError(f"marginal_low={marginal_low} must not be below low={low}")


def _judge(value: float, low, high, marginal_low, marginal_high) -> Outcome:
    if math.isnan(value):
        return Outcome.FAIL
    if (high is not None and value > high) or (low is not None and value < low):
        return Outcome.FAIL
    if (marginal_high is not None and value > marginal_high) or \
            (marginal_low is not None and value < marginal_low):
        return Outcome.MARGINAL
    return Outcome.PASS


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _describe(low, high, marginal_low, marginal_high, unit: str) -> str:
    u = f" {unit}" if unit else ""
    parts = []
    if low is not None:
        parts.append(f">= {_fmt(low)}{u}")
    if high is not None:
        parts.append(f"<= {_fmt(high)}{u}")
    if marginal_low is not None:
        parts.append(f"marginal below {_fmt(marginal_low)}")
    if marginal_high is not None:
        parts.append(f"marginal above {_fmt(marginal_high)}")
    return ", ".join(parts) or "no limit"


# ---------------------------------------------------------------------------------------------
# Confidence bounds for rates


def rate_bounds(errors: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided (lower, upper) bounds on a binomial rate at `confidence`, each on its own side.

    Exact Clopper-Pearson from the beta distribution; with zero errors the upper bound is the
    rule of 3 (-ln(1-confidence)/n). With no trials nothing is known: (0, 1).
    """
    if trials == 0:
        return 0.0, 1.0
    # the beta quantile, as scipy.stats.beta.ppf computes it, from scipy.special: imported on
    # first use, and a third of the import time of scipy.stats
    from scipy.special import betaincinv

    alpha = 1.0 - confidence
    lower = 0.0 if errors == 0 else float(betaincinv(errors, trials - errors + 1, alpha))
    if errors == 0:
        upper = min(1.0, -math.log(alpha) / trials)
    elif errors == trials:
        upper = 1.0
    else:
        upper = float(betaincinv(errors + 1, trials - errors, confidence))
    return lower, upper


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Measurement:
    """One judged measurement. For rates `value` is the point estimate and the judged bound is
    `bound_high` (upper limit) or `bound_low` (lower limit)."""

    name: str
    value: float
    unit: str
    outcome: Outcome
    kind: str = "value"  # "value" | "rate"
    low: float | None = None
    high: float | None = None
    marginal_low: float | None = None
    marginal_high: float | None = None
    confidence: float | None = None
    errors: int | None = None
    trials: int | None = None
    bound_low: float | None = None
    bound_high: float | None = None
    measured_at: float = 0.0  # wall-clock seconds since the epoch

    @property
    def message(self) -> str:
        u = f" {self.unit}" if self.unit else ""
        if self.kind == "rate":
            limit = RateLimit(self.low, self.high, self.marginal_low, self.marginal_high,
                              self.confidence or 0.95)
            return (f"{self.name} = {self.errors}/{self.trials} = {_fmt(self.value)} "
                    f"(bounds {_fmt(self.bound_low)}..{_fmt(self.bound_high)} at {self.confidence:.0%}); "
                    f"limit {limit.describe()}: {self.outcome.value}")
        limit = _describe(self.low, self.high, self.marginal_low, self.marginal_high, self.unit)
        return f"{self.name} = {_fmt(self.value)}{u}; limit {limit}: {self.outcome.value}"

    def as_record(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d


@dataclass(frozen=True)
class FaceMatchScore:
    """A face-match result as the report needs it: numbers and labels, no biometric data."""

    score: float
    threshold: float
    accepted: bool
    condition: str = "nominal"
    subject_id: str = ""
    genuine: bool | None = None  # was the presented subject the card holder (None: unknown)

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


_LIMIT_KEYS = {"low", "high", "marginal_low", "marginal_high", "marginal", "unit"}
_RATE_KEYS = {"low", "high", "marginal_low", "marginal_high", "confidence"}


def parse_limits(table: Mapping[str, Any] | None, source: str = "station file") -> dict[str, dict[str, Any]]:
    """Validate a station file's `[limits]` table ({name: {high: ..., ...}}).

    Returns the same shape with numbers checked; errors name the key and the source.
    Whether an entry is a plain limit or a rate limit is decided by the measurement that uses it.
    """
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise MeasurementError(f"{source}: [limits] must be a table, got {type(table).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for name, entry in table.items():
        where = f"{source}: limits.{name}"
        if not isinstance(entry, Mapping):
            raise MeasurementError(f"{where} must be a table, got {type(entry).__name__}")
        unknown = set(entry) - _LIMIT_KEYS - _RATE_KEYS
        if unknown:
            raise MeasurementError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                                   f"allowed: {', '.join(sorted(_LIMIT_KEYS | _RATE_KEYS))}")
        clean: dict[str, Any] = {}
        for key, v in entry.items():
            if key == "unit":
                if not isinstance(v, str):
                    raise MeasurementError(f"{where}.unit must be a string")
                clean[key] = v
                continue
            try:
                clean[key] = _number(v, f"{where}.{key}")
            except MeasurementError as exc:
                raise MeasurementError(str(exc)) from None
        try:  # check consistency now, so a bad station file fails at load time, not mid-run
            if "confidence" in clean:
                RateLimit(**{k: v for k, v in clean.items() if k in _RATE_KEYS})
            else:
                Limit(**{k: v for k, v in clean.items() if k in _LIMIT_KEYS - {"unit"}})
        except MeasurementError as exc:
            raise MeasurementError(f"{where}: {exc}") from None
        out[str(name)] = clean
    return out


@dataclass
class Measurements:
    """The per-scenario collector the `measure` fixture returns. Cheap: no I/O, no locks."""

    limits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    results: list[Measurement] = field(default_factory=list)
    face_matches: list[FaceMatchScore] = field(default_factory=list)

    def __call__(self, name: str, value: float, unit: str | None = None, *, limit: Limit | None = None,
                 low: float | None = None, high: float | None = None, marginal: float | None = None,
                 marginal_low: float | None = None, marginal_high: float | None = None) -> Measurement:
        """Record `value` under `name`, judged against the station's limit for `name` if it has
        one, else `limit` (or the keyword limits)."""
        if not isinstance(name, str) or not name:
            raise MeasurementError(f"measurement name must be a non-empty string, got {name!r}")
        v = _number(value, f"measurement {name!r}")
        station = self.limits.get(name)
        if station is not None:
            limit = Limit(**{k: station[k] for k in station if k in _LIMIT_KEYS - {"unit"}})
            unit = station.get("unit", unit)
        elif any(x is not None for x in (low, high, marginal, marginal_low, marginal_high)):
            if limit is not None:
                raise MeasurementError(f"{name}: give either limit= or low/high/marginal keywords, not both")
            limit = Limit(low, high, marginal_low, marginal_high, marginal)
        elif limit is not None and not isinstance(limit, Limit):
            raise MeasurementError(f"limit for {name!r} must be a Limit, got {type(limit).__name__}")
        if unit is None:
            unit = unit_from_name(name)
        lim = limit or _NO_LIMIT
        m = Measurement(name=name, value=v, unit=unit, outcome=lim.judge(v), low=lim.low, high=lim.high,
                        marginal_low=lim.marginal_low, marginal_high=lim.marginal_high,
                        measured_at=time.time())
        self.results.append(m)
        return m

    def rate(self, name: str, errors: int, trials: int, *, low: float | None = None,
             high: float | None = None, marginal_low: float | None = None,
             marginal_high: float | None = None, confidence: float = 0.95,
             limit: RateLimit | None = None) -> Measurement:
        """Record errors/trials under `name`, judged on its confidence bound."""
        if not isinstance(name, str) or not name:
            raise MeasurementError(f"measurement name must be a non-empty string, got {name!r}")
        for what, n in (("errors", errors), ("trials", trials)):
            if isinstance(n, bool) or not isinstance(n, numbers.Integral):
                raise MeasurementError(f"{name}: {what} must be an integer, got {n!r}")
        if trials < 0 or errors < 0 or errors > trials:
            raise MeasurementError(f"{name}: need 0 <= errors <= trials, got {errors}/{trials}")
        station = self.limits.get(name)
        if station is not None:
            limit = RateLimit(**{k: station[k] for k in station if k in _RATE_KEYS})
        elif limit is None:
            limit = RateLimit(low, high, marginal_low, marginal_high, confidence)
        elif not isinstance(limit, RateLimit):
            raise MeasurementError(f"limit for rate {name!r} must be a RateLimit, got {type(limit).__name__}")
        bound_low, bound_high = rate_bounds(int(errors), int(trials), limit.confidence)
        outcome = Outcome.PASS
        if limit.high is not None or limit.marginal_high is not None:
            outcome = _worst(outcome, _judge(bound_high, None, limit.high, None, limit.marginal_high))
        if limit.low is not None or limit.marginal_low is not None:
            outcome = _worst(outcome, _judge(bound_low, limit.low, None, limit.marginal_low, None))
        m = Measurement(name=name, value=errors / trials if trials else math.nan, unit="rate",
                        outcome=outcome, kind="rate", low=limit.low, high=limit.high,
                        marginal_low=limit.marginal_low, marginal_high=limit.marginal_high,
                        confidence=limit.confidence, errors=int(errors), trials=int(trials),
                        bound_low=bound_low, bound_high=bound_high, measured_at=time.time())
        self.results.append(m)
        return m

    def face_match(self, score: float, threshold: float, accepted: bool, condition: str = "nominal",
                   subject_id: str = "", genuine: bool | None = None) -> FaceMatchScore:
        """Record one face-match score for the run's score distribution (no images, no embeddings)."""
        if not isinstance(condition, str) or not isinstance(subject_id, str):
            raise MeasurementError("face_match condition and subject_id must be strings")
        fm = FaceMatchScore(score=_number(score, "face-match score"),
                            threshold=_number(threshold, "face-match threshold"),
                            accepted=bool(accepted), condition=condition, subject_id=subject_id,
                            genuine=None if genuine is None else bool(genuine))
        self.face_matches.append(fm)
        return fm

    @property
    def outcome(self) -> Outcome:
        """The worst outcome so far (PASS when nothing was measured)."""
        worst = Outcome.PASS
        for m in self.results:
            worst = _worst(worst, m.outcome)
        return worst

    def failures(self) -> list[Measurement]:
        return [m for m in self.results if m.outcome is Outcome.FAIL]

    def marginals(self) -> list[Measurement]:
        return [m for m in self.results if m.outcome is Outcome.MARGINAL]


_NO_LIMIT = Limit()


def _worst(a: Outcome, b: Outcome) -> Outcome:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b
