"""Regression detection over nightly runs: only statistically significant, practically large changes.

The rule (per measurement name, over the last N finished runs of a suite):
- recent = the newest `recent` runs (default 1); baseline = the runs before them in the window.
  Runs still running or aborted are left out.
- "worse" direction: a high limit only -> higher is worse; a low limit only -> lower is worse;
  otherwise times (ms, s) -> higher is worse, anything else is two-sided ("changed", not flagged).
- plain values: one-sided Mann-Whitney U test of the recent values against the pooled baseline
  values; needs >= 3 recent values, >= 5 baseline values from >= 3 baseline runs.
  Flagged only if Holm-adjusted p < alpha (family: every measurement tested on the page) AND
  Cliff's delta >= 0.33 (a medium effect) AND the median moved >= 5% of the baseline median.
- rates: one-sided Fisher exact test of recent errors/trials against pooled baseline
  errors/trials (same Holm family); flagged only if the recent rate is also >= 1 percentage
  point worse than the baseline rate.
Improvements are shown (same thresholds, other direction) but never flagged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MIN_RECENT_VALUES = 3
MIN_BASELINE_VALUES = 5
MIN_BASELINE_RUNS = 3


@dataclass(frozen=True)
class TrendRule:
    alpha: float = 0.01
    min_cliffs_delta: float = 0.33
    min_relative_shift: float = 0.05
    min_rate_delta: float = 0.01


@dataclass
class Series:
    """One measurement name across runs (oldest run first)."""

    name: str
    kind: str  # value | rate
    unit: str
    run_ids: list[int]
    values: list[list[float]]  # per run (value kind)
    errors: list[int]  # per run (rate kind)
    trials: list[int]
    low: float | None = None
    high: float | None = None
    marginal_low: float | None = None
    marginal_high: float | None = None
    confidence: float = 0.95


@dataclass
class Verdict:
    name: str
    kind: str
    unit: str
    direction: str  # higher_is_worse | lower_is_worse | two_sided
    status: str  # regression | improvement | changed | stable | insufficient data
    n_recent: int = 0
    n_baseline: int = 0
    recent_stat: float | None = None  # median (values) or rate (rates)
    baseline_stat: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    effect: float | None = None  # Cliff's delta (values, + = worse) or rate difference (rates)
    note: str = ""
    series: Series | None = field(default=None, repr=False)
    limit: str = ""  # filled in by the page that shows it
    figure: str | None = field(default=None, repr=False)

    @property
    def flagged(self) -> bool:
        return self.status == "regression"


def worse_direction(kind: str, unit: str, low, high) -> str:
    if high is not None and low is None:
        return "higher_is_worse"
    if low is not None and high is None:
        return "lower_is_worse"
    if kind == "rate":
        return "higher_is_worse"  # error rates, unless a low limit says it is a success rate
    if unit in ("ms", "s", "us"):
        return "higher_is_worse"
    return "two_sided"


def cliffs_delta(a: Sequence[float], b: Sequence[float]) -> float:
    """P(a > b) - P(a < b), in [-1, 1]."""
    x = np.asarray(a, dtype=float)[:, None]
    y = np.asarray(b, dtype=float)[None, :]
    return float(((x > y).sum() - (x < y).sum()) / (x.size * y.size))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def build_series(rows, run_ids: Sequence[int]) -> list[Series]:
    """Group measurement rows (MeasurementRow-like) by name, per run in `run_ids` order."""
    index = {rid: i for i, rid in enumerate(run_ids)}
    by_name: dict[str, Series] = {}
    for r in rows:
        if r.run_id not in index:
            continue
        s = by_name.get(r.name)
        if s is None:
            n = len(run_ids)
            s = by_name[r.name] = Series(r.name, r.kind, r.unit or "", list(run_ids), [[] for _ in range(n)],
                                         [0] * n, [0] * n)
        i = index[r.run_id]
        # the newest limits win: the chart shows what the suite enforces now
        s.low, s.high, s.marginal_low, s.marginal_high = r.low, r.high, r.marginal_low, r.marginal_high
        if r.kind == "rate":
            s.errors[i] += r.errors or 0
            s.trials[i] += r.trials or 0
            s.confidence = r.confidence or s.confidence
        elif r.value is not None and math.isfinite(r.value):
            s.values[i].append(float(r.value))
    return sorted(by_name.values(), key=lambda s: s.name)


def _value_test(s: Series, recent: int, direction: str):
    from scipy.stats import mannwhitneyu

    rec = [v for vs in s.values[-recent:] for v in vs]
    base_runs = [vs for vs in s.values[:-recent] if vs]
    base = [v for vs in base_runs for v in vs]
    v = Verdict(s.name, s.kind, s.unit, direction, "stable", len(rec), len(base), series=s)
    if rec:
        v.recent_stat = float(np.median(rec))
    if base:
        v.baseline_stat = float(np.median(base))
    if len(rec) < MIN_RECENT_VALUES or len(base) < MIN_BASELINE_VALUES or len(base_runs) < MIN_BASELINE_RUNS:
        v.status = "insufficient data"
        v.note = (f"needs >= {MIN_RECENT_VALUES} recent values and >= {MIN_BASELINE_VALUES} baseline values "
                  f"from >= {MIN_BASELINE_RUNS} runs")
        return v, None, None
    sign = -1.0 if direction == "lower_is_worse" else 1.0
    delta = cliffs_delta(rec, base) * sign
    v.effect = delta
    if direction == "two_sided":
        p = float(mannwhitneyu(rec, base, alternative="two-sided").pvalue)
        return v, p, None
    worse = "greater" if direction == "higher_is_worse" else "less"
    better = "less" if worse == "greater" else "greater"
    p = float(mannwhitneyu(rec, base, alternative=worse).pvalue)
    p_better = float(mannwhitneyu(rec, base, alternative=better).pvalue)
    return v, p, p_better


def _rate_test(s: Series, recent: int, direction: str):
    from scipy.stats import fisher_exact

    re, rt = sum(s.errors[-recent:]), sum(s.trials[-recent:])
    base_idx = [i for i in range(len(s.trials) - recent) if s.trials[i]]
    be, bt = sum(s.errors[i] for i in base_idx), sum(s.trials[i] for i in base_idx)
    v = Verdict(s.name, s.kind, s.unit, direction, "stable", rt, bt, series=s)
    v.recent_stat = re / rt if rt else None
    v.baseline_stat = be / bt if bt else None
    if not rt or not bt or len(base_idx) < MIN_BASELINE_RUNS:
        v.status = "insufficient data"
        v.note = f"needs recent trials and trials in >= {MIN_BASELINE_RUNS} baseline runs"
        return v, None, None
    sign = -1.0 if direction == "lower_is_worse" else 1.0
    v.effect = (v.recent_stat - v.baseline_stat) * sign
    table = [[re, rt - re], [be, bt - be]]
    # "greater": recent has the larger error odds
    worse = "less" if direction == "lower_is_worse" else "greater"
    better = "greater" if worse == "less" else "less"
    return v, float(fisher_exact(table, alternative=worse).pvalue), \
        float(fisher_exact(table, alternative=better).pvalue)


def analyse(series: Sequence[Series], recent: int = 1, rule: TrendRule = TrendRule()) -> list[Verdict]:
    """One verdict per series; regressions need significance (Holm) and a minimum effect."""
    tested: list[tuple[Verdict, float, float | None]] = []
    verdicts: list[Verdict] = []
    for s in series:
        direction = worse_direction(s.kind, s.unit, s.low, s.high)
        v, p, p_better = (_rate_test if s.kind == "rate" else _value_test)(s, recent, direction)
        verdicts.append(v)
        if p is not None:
            tested.append((v, p, p_better))
    adjusted = holm([p for _, p, _ in tested])
    adjusted_better = holm([pb if pb is not None else 1.0 for _, _, pb in tested])
    for (v, p, p_better), p_adj, pb_adj in zip(tested, adjusted, adjusted_better):
        v.p_value, v.p_adjusted = p, p_adj
        big = _large_enough(v, rule)
        if v.direction == "two_sided":
            v.status = "changed" if p_adj < rule.alpha and big else "stable"
        elif p_adj < rule.alpha and big:
            v.status = "regression"
        elif p_better is not None and pb_adj < rule.alpha and _large_enough(v, rule, better=True):
            v.status = "improvement"
    return verdicts


def _large_enough(v: Verdict, rule: TrendRule, better: bool = False) -> bool:
    if v.effect is None or v.recent_stat is None or v.baseline_stat is None:
        return False
    effect = -v.effect if better else v.effect
    if v.direction == "two_sided":
        effect = abs(effect)
    if v.kind == "rate":
        return effect >= rule.min_rate_delta
    base = abs(v.baseline_stat)
    shift = abs(v.recent_stat - v.baseline_stat) / base if base > 0 else math.inf
    return effect >= rule.min_cliffs_delta and shift >= rule.min_relative_shift

