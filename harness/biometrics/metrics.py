"""Biometric performance metrics after ISO/IEC 19795-1, on plain score arrays.

This module knows nothing about models or images: it takes comparison scores where a
*higher score means more alike* and a comparison is accepted when ``score >= threshold``.

Definitions used (ISO/IEC 19795-1:2021, clause 4 and 8):
- FMR(t): the share of impostor comparisons accepted at threshold t.
- FNMR(t): the share of genuine comparisons rejected at threshold t.
- FTA: the share of attempts (images or comparisons) for which no usable sample was acquired.
  Scores of FTA comparisons are excluded from FMR/FNMR; ``generalized_rates`` counts them as
  errors (an FTA genuine attempt is a false non-match; an FTA impostor attempt cannot match).
- FNMR at FMR = x: the threshold is the lowest one whose FMR is at most x (so at most
  floor(x * n_impostor) impostors are accepted), and FNMR is measured there.
- EER: where the FMR and FNMR curves cross; between two operating points it is interpolated
  linearly along the segment joining them (the ROC convex-hull reading).
- Rule of 3: with zero errors in n independent trials the 95% upper bound is 3/n.
- Confidence intervals: percentile bootstrap resampling *subjects* with replacement
  (comparisons of one subject are correlated, so resampling comparisons would be too narrow).
  A genuine comparison of subject s is weighted by how often s was drawn; an impostor
  comparison of subjects (a, b) by the product of both counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Sequence

import numpy as np

TARGET_FMRS = (1e-2, 1e-3)


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    fmr: float
    fnmr: float
    false_matches: float
    false_non_matches: float


@dataclass(frozen=True)
class EER:
    eer: float
    threshold: float


@dataclass
class Interval:
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


@dataclass
class ScoreSet:
    """Genuine and impostor scores plus, for bootstrap, who each comparison involves.

    ``genuine_subjects[i]`` is the subject index of genuine comparison i; ``impostor_subjects``
    has two columns (the two subjects of each impostor comparison).
    """

    genuine: np.ndarray
    impostor: np.ndarray
    genuine_subjects: np.ndarray | None = None
    impostor_subjects: np.ndarray | None = None
    genuine_weights: np.ndarray | None = field(default=None, repr=False)
    impostor_weights: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.genuine = np.asarray(self.genuine, dtype=np.float64)
        self.impostor = np.asarray(self.impostor, dtype=np.float64)


def _weights(scores: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    return np.ones_like(scores) if weights is None else np.asarray(weights, dtype=np.float64)


def fmr_at(impostor: Sequence[float], threshold: float, weights=None) -> float:
    imp = np.asarray(impostor, dtype=np.float64)
    w = _weights(imp, weights)
    total = w.sum()
    return float(w[imp >= threshold].sum() / total) if total > 0 else math.nan


def fnmr_at(genuine: Sequence[float], threshold: float, weights=None) -> float:
    gen = np.asarray(genuine, dtype=np.float64)
    w = _weights(gen, weights)
    total = w.sum()
    return float(w[gen < threshold].sum() / total) if total > 0 else math.nan


def threshold_at_fmr(impostor: Sequence[float], target_fmr: float, weights=None) -> float:
    """The lowest threshold whose FMR does not exceed ``target_fmr``.

    Accepting means ``score >= threshold``; the returned threshold sits just above the
    highest impostor score that may not be accepted, so ties never push FMR over the target.
    """
    imp = np.asarray(impostor, dtype=np.float64)
    w = _weights(imp, weights)
    if imp.size == 0 or w.sum() <= 0:
        return -math.inf
    order = np.argsort(-imp, kind="stable")
    imp_desc, w_desc = imp[order], w[order]
    allowed = target_fmr * w.sum()
    # Walk distinct scores from the top; accepting all scores >= s costs cum weight up to s.
    distinct, first = np.unique(-imp_desc, return_index=True)
    cum = np.cumsum(w_desc)
    # weight accepted if threshold = distinct score v (all scores >= v): cum at last index of v
    last_idx = np.append(first[1:], imp_desc.size) - 1
    accepted_weight = cum[last_idx]
    ok = accepted_weight <= allowed + 1e-12
    if not ok[0]:
        return float(np.nextafter(imp_desc[0], math.inf))
    # distinct is ascending in -score, i.e. descending in score; ok is True for a prefix.
    k = int(np.argmin(ok)) if not ok.all() else ok.size
    if k == ok.size:
        return -math.inf
    return float(np.nextafter(-distinct[k], math.inf))


def operating_point(scores: ScoreSet, threshold: float) -> OperatingPoint:
    gw = _weights(scores.genuine, scores.genuine_weights)
    iw = _weights(scores.impostor, scores.impostor_weights)
    fm = float(iw[scores.impostor >= threshold].sum())
    fnm = float(gw[scores.genuine < threshold].sum())
    return OperatingPoint(threshold=threshold,
                          fmr=fm / iw.sum() if iw.sum() else math.nan,
                          fnmr=fnm / gw.sum() if gw.sum() else math.nan,
                          false_matches=fm, false_non_matches=fnm)


def fnmr_at_fmr(scores: ScoreSet, target_fmr: float) -> OperatingPoint:
    t = threshold_at_fmr(scores.impostor, target_fmr, scores.impostor_weights)
    return operating_point(scores, t)


def det_curve(scores: ScoreSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds ascending, FMR, FNMR) at every distinct score, plus +inf (accept nothing)."""
    gen, imp = scores.genuine, scores.impostor
    gw, iw = _weights(gen, scores.genuine_weights), _weights(imp, scores.impostor_weights)
    thresholds = np.append(np.unique(np.concatenate([gen, imp])), math.inf)
    g_order, i_order = np.argsort(gen), np.argsort(imp)
    g_sorted, i_sorted = gen[g_order], imp[i_order]
    g_cum = np.concatenate([[0.0], np.cumsum(gw[g_order])])
    i_cum = np.concatenate([[0.0], np.cumsum(iw[i_order])])
    # rejected genuine = weight of scores < t; accepted impostor = total - weight of scores < t
    fnmr = g_cum[np.searchsorted(g_sorted, thresholds, side="left")] / max(g_cum[-1], 1e-300)
    fmr = (i_cum[-1] - i_cum[np.searchsorted(i_sorted, thresholds, side="left")]) / max(i_cum[-1], 1e-300)
    return thresholds, fmr, fnmr


def equal_error_rate(scores: ScoreSet) -> EER:
    if scores.genuine.size == 0 or scores.impostor.size == 0:
        return EER(math.nan, math.nan)
    thresholds, fmr, fnmr = det_curve(scores)
    diff = fmr - fnmr  # starts >= 0 (accept all), ends <= 0 (accept none), non-increasing
    i = int(np.nonzero(diff <= 0)[0][0])
    if diff[i] == 0 or i == 0:
        return EER(float(fmr[i]), float(thresholds[i]))
    d0, d1 = diff[i - 1], diff[i]
    alpha = d0 / (d0 - d1)
    eer = fmr[i - 1] + alpha * (fmr[i] - fmr[i - 1])
    return EER(float(eer), float(thresholds[i if abs(d1) < abs(d0) else i - 1]))


def rule_of_three(n_trials: int) -> float:
    """95% upper bound on an error rate when no error was seen in ``n_trials`` trials."""
    return 3.0 / n_trials if n_trials > 0 else math.nan


def rate_upper_bound(errors: float, n_trials: int) -> float:
    """95% one-sided upper bound: rule of 3 at zero errors, else Wilson score bound."""
    if n_trials <= 0:
        return math.nan
    if errors == 0:
        return rule_of_three(n_trials)
    z = NormalDist().inv_cdf(0.95)
    p = errors / n_trials
    centre = p + z * z / (2 * n_trials)
    spread = z * math.sqrt(p * (1 - p) / n_trials + z * z / (4 * n_trials * n_trials))
    return min(1.0, (centre + spread) / (1 + z * z / n_trials))


def generalized_rates(point: OperatingPoint, fta_genuine: float, fta_impostor: float) -> tuple[float, float]:
    """(GFMR, GFNMR) counting FTA comparisons as errors, ISO/IEC 19795-1 8.3.

    fta_* are the shares of genuine / impostor comparisons that failed to acquire.
    """
    gfmr = point.fmr * (1.0 - fta_impostor)
    gfnmr = fta_genuine + (1.0 - fta_genuine) * point.fnmr
    return gfmr, gfnmr


def histograms(scores: ScoreSet, bins: int = 50) -> dict:
    both = np.concatenate([scores.genuine, scores.impostor])
    if both.size == 0:
        return {"edges": [], "genuine": [], "impostor": []}
    edges = np.histogram_bin_edges(both, bins=bins)
    g, _ = np.histogram(scores.genuine, bins=edges)
    i, _ = np.histogram(scores.impostor, bins=edges)
    return {"edges": edges.tolist(), "genuine": g.tolist(), "impostor": i.tolist()}


def bootstrap_ci(scores: ScoreSet, n_boot: int = 1000, seed: int = 0,
                 targets: Sequence[float] = TARGET_FMRS, level: float = 0.95) -> dict:
    """Subject-resampled percentile bootstrap CIs for EER and FNMR at each target FMR.

    The threshold is re-derived in every replicate, so the interval covers threshold
    uncertainty too. Needs subject labels; without them comparisons are resampled.
    """
    gs, isub = scores.genuine_subjects, scores.impostor_subjects
    if gs is None or isub is None:
        gs = np.arange(scores.genuine.size)
        isub = np.stack([np.arange(scores.impostor.size)] * 2, axis=1) + scores.genuine.size
    gs = np.asarray(gs, dtype=np.int64)
    isub = np.asarray(isub, dtype=np.int64).reshape(-1, 2)
    n_subjects = int(max(gs.max(initial=-1), isub.max(initial=-1)) + 1)
    rng = np.random.default_rng(seed)
    eers, fnmrs = [], {t: [] for t in targets}
    for _ in range(n_boot):
        counts = rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects)).astype(np.float64)
        gw = counts[gs]
        iw = counts[isub[:, 0]] * counts[isub[:, 1]]
        if gw.sum() == 0 or iw.sum() == 0:
            continue
        keep_g, keep_i = gw > 0, iw > 0
        rep = ScoreSet(scores.genuine[keep_g], scores.impostor[keep_i],
                       genuine_weights=gw[keep_g], impostor_weights=iw[keep_i])
        eers.append(equal_error_rate(rep).eer)
        for t in targets:
            fnmrs[t].append(fnmr_at_fmr(rep, t).fnmr)
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100

    def interval(values: list[float]) -> list[float]:
        if not values:
            return [math.nan, math.nan]
        return [float(np.percentile(values, lo_q)), float(np.percentile(values, hi_q))]

    return {"eer": interval(eers), "fnmr_at_fmr": {str(t): interval(v) for t, v in fnmrs.items()},
            "replicates": len(eers), "subjects": n_subjects}


def probit(p: np.ndarray) -> np.ndarray:
    """Normal deviate of rates, for DET axes; 0 and 1 are clipped to a finite range."""
    nd = NormalDist()
    clipped = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.array([nd.inv_cdf(float(x)) for x in clipped.ravel()]).reshape(clipped.shape)


def summarize(scores: ScoreSet, *, fta_genuine: float = 0.0, fta_impostor: float = 0.0,
              targets: Sequence[float] = TARGET_FMRS, n_boot: int = 1000, seed: int = 0,
              det_points: int = 400) -> dict:
    """Every figure a report needs, as plain JSON-ready values."""
    eer = equal_error_rate(scores)
    out: dict = {
        "genuine_scored": int(scores.genuine.size), "impostor_scored": int(scores.impostor.size),
        "eer": eer.eer, "eer_threshold": eer.threshold,
        "fnmr_at_fmr": {}, "threshold_at_fmr": {}, "fmr_achieved": {}, "false_matches_at_fmr": {},
        "generalized_at_fmr": {},
    }
    for t in targets:
        op = fnmr_at_fmr(scores, t)
        key = str(t)
        out["fnmr_at_fmr"][key] = op.fnmr
        out["threshold_at_fmr"][key] = op.threshold
        out["fmr_achieved"][key] = op.fmr
        out["false_matches_at_fmr"][key] = op.false_matches
        gfmr, gfnmr = generalized_rates(op, fta_genuine, fta_impostor)
        out["generalized_at_fmr"][key] = {"gfmr": gfmr, "gfnmr": gfnmr}
    n_imp = int(scores.impostor.size)
    out["rule_of_3"] = {
        "fmr_upper_bound_if_no_false_match": rule_of_three(n_imp),
        "impostors_needed": {str(t): math.ceil(3 / t) for t in targets},
        "fmr_resolution": 1.0 / n_imp if n_imp else math.nan,
        "fnmr_upper_bound_at_fmr": {str(t): rate_upper_bound(fnmr_at_fmr(scores, t).false_non_matches,
                                                             int(scores.genuine.size)) for t in targets},
    }
    out["ci95"] = bootstrap_ci(scores, n_boot=n_boot, seed=seed, targets=targets) if n_boot else {}
    thresholds, fmr, fnmr = det_curve(scores)
    idx = np.unique(np.linspace(0, thresholds.size - 1, min(det_points, thresholds.size)).astype(int))
    out["det"] = {"threshold": [float(x) if math.isfinite(x) else None for x in thresholds[idx]],
                  "fmr": fmr[idx].tolist(), "fnmr": fnmr[idx].tolist()}
    out["histograms"] = histograms(scores)
    return out
