"""Two campaign runs side by side (firmware A/B, or any two runs).

Rates: the difference B - A with Newcombe's hybrid score interval (from Wilson intervals;
Newcombe 1998, method 10) and Fisher's exact test. Times: Mann-Whitney U with the rank-biserial
correlation as effect size, and the Hodges-Lehmann shift with its matching interval. One line per figure: REGRESSION when B is worse and the interval
excludes no difference (for times, when p < 0.05), IMPROVEMENT when B is better, else no-change.
Every figure here is an error rate or a time: higher is worse. The intervals treat
transactions as independent; the clustered intervals of each run are in its own report.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

ALPHA = 0.05
Z = NormalDist().inv_cdf(1 - ALPHA / 2)


def wilson(k: int, n: int, z: float = Z) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    den = 1 + z * z / n
    return max(0.0, (centre - spread) / den), min(1.0, (centre + spread) / den)


def newcombe(k_a: int, n_a: int, k_b: int, n_b: int) -> tuple[float, float, float]:
    """(difference p_b - p_a, lower, upper) at 95%."""
    pa, pb = k_a / n_a, k_b / n_b
    la, ua = wilson(k_a, n_a)
    lb, ub = wilson(k_b, n_b)
    d = pb - pa
    lower = d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    upper = d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return d, lower, upper


def compare_rate(name: str, a: dict, b: dict) -> dict[str, Any]:
    from scipy.stats import fisher_exact

    line = {"figure": name, "kind": "rate", "a": f"{a['errors']}/{a['trials']}", "b": f"{b['errors']}/{b['trials']}"}
    if not a["trials"] or not b["trials"]:
        return {**line, "diff": "-", "ci": "-", "p": "-", "flag": "no-change", "note": "not measured in both runs"}
    d, lo, hi = newcombe(a["errors"], a["trials"], b["errors"], b["trials"])
    _, p = fisher_exact([[a["errors"], a["trials"] - a["errors"]], [b["errors"], b["trials"] - b["errors"]]])
    flag = "REGRESSION" if lo > 0 else "IMPROVEMENT" if hi < 0 else "no-change"
    return {**line, "diff": f"{100 * d:+.2f} pp", "ci": f"{100 * lo:+.2f} .. {100 * hi:+.2f} pp", "p": f"{p:.3g}",
            "flag": flag, "diff_value": d, "ci_values": [lo, hi], "p_value": float(p)}


def hodges_lehmann(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """The shift B - A (median of all pairwise differences) and its distribution-free 95% interval
    (order statistics of the differences at the Mann-Whitney critical value, normal approximation),
    so the interval agrees with the test."""
    diffs = np.sort(np.subtract.outer(np.asarray(b, float), np.asarray(a, float)).ravel())
    m, n = len(a), len(b)
    c = m * n / 2 - Z * math.sqrt(m * n * (m + n + 1) / 12)
    k = max(0, min(diffs.size - 1, math.ceil(c) - 1))
    return float(np.median(diffs)), float(diffs[k]), float(diffs[diffs.size - 1 - k])


def compare_times(name: str, a: list[float], b: list[float]) -> dict[str, Any]:
    from scipy.stats import mannwhitneyu

    line = {"figure": name, "kind": "time", "a": f"median {np.median(a):.0f} ms" if a else "-",
            "b": f"median {np.median(b):.0f} ms" if b else "-"}
    if len(a) < 2 or len(b) < 2:
        return {**line, "diff": "-", "ci": "-", "p": "-", "flag": "no-change", "note": "too few transactions"}
    res = mannwhitneyu(b, a, alternative="two-sided")
    effect = 2 * res.statistic / (len(a) * len(b)) - 1  # rank-biserial: > 0 when B is slower
    d, lo, hi = hodges_lehmann(a, b)
    flag = "no-change"
    if res.pvalue < ALPHA:
        flag = "REGRESSION" if effect > 0 else "IMPROVEMENT"
    return {**line, "diff": f"{d:+.0f} ms (r={effect:+.2f})", "ci": f"{lo:+.0f} .. {hi:+.0f} ms",
            "p": f"{res.pvalue:.3g}", "flag": flag, "diff_value": d, "ci_values": [float(lo), float(hi)],
            "p_value": float(res.pvalue), "effect_size": float(effect)}


def compare_summaries(a: dict, b: dict) -> list[dict[str, Any]]:
    lines = []
    for name in a["rates"].keys() | b["rates"].keys():
        empty = {"errors": 0, "trials": 0}
        lines.append(compare_rate(name, a["rates"].get(name, empty), b["rates"].get(name, empty)))
    lines.sort(key=lambda x: x["figure"])
    for which in ("genuine", "all"):
        lines.append(compare_times(f"transaction_ms[{which}]", a["times"][which].get("values_ms", []),
                                   b["times"][which].get("values_ms", [])))
    return lines


def compare_runs(store, run_a: int, run_b: int) -> dict[str, Any]:
    from harness.campaign.metrics import summarize_run

    a, b = summarize_run(store, run_a), summarize_run(store, run_b)
    return {"run_a": run_a, "run_b": run_b, "firmware_a": a.get("firmware"), "firmware_b": b.get("firmware"),
            "lines": compare_summaries(a, b)}
