"""matplotlib figures for the reports, returned as PNG data URIs (no pyplot, no global state)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLOURS = {
    "PASS": "#2e9d5b", "MARGINAL": "#e0a100", "FAIL": "#d64541",
    "passed": "#2e9d5b", "failed": "#d64541", "error": "#8e2b2b", "skipped": "#9aa5b1",
    "xfailed": "#b8c4ce", "xpassed": "#6c8ebf", "aborted": "#8e2b2b", "running": "#6c8ebf",
}
ZONE_ALPHA = 0.13
INK = "#33404d"
MUTED = "#8795a1"
DPI = 120


def _style(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#c5ced6")
    ax.tick_params(colors=INK, labelsize=8)
    ax.grid(axis="x", color="#e6ebef", linewidth=0.8)
    ax.set_axisbelow(True)


def to_data_uri(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # no Software/URL metadata in the PNG: the report carries no external references at all
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _new(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    fig.patch.set_facecolor("white")
    return fig


def _jitter(n: int, seed: int = 0, spread: float = 0.28) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-spread, spread, n)


@dataclass
class Limits:
    low: float | None = None
    high: float | None = None
    marginal_low: float | None = None
    marginal_high: float | None = None


def _span(values: Sequence[float], lim: Limits) -> tuple[float, float]:
    pts = [v for v in values if v is not None and math.isfinite(v)]
    pts += [v for v in (lim.low, lim.high, lim.marginal_low, lim.marginal_high) if v is not None]
    if not pts:
        return 0.0, 1.0
    lo, hi = min(pts), max(pts)
    pad = (hi - lo) * 0.12 or abs(hi) * 0.1 or 1.0
    return lo - pad, hi + pad


def _zones(ax, lim: Limits, x0: float, x1: float, vertical: bool = False) -> None:
    """Shade fail zones red and marginal bands amber; draw the limits as solid lines."""
    span = ax.axhspan if vertical else ax.axvspan
    line = ax.axhline if vertical else ax.axvline
    if lim.high is not None:
        span(lim.high, max(x1, lim.high), color=COLOURS["FAIL"], alpha=ZONE_ALPHA, lw=0)
        line(lim.high, color=COLOURS["FAIL"], lw=1.3)
    if lim.low is not None:
        span(min(x0, lim.low), lim.low, color=COLOURS["FAIL"], alpha=ZONE_ALPHA, lw=0)
        line(lim.low, color=COLOURS["FAIL"], lw=1.3)
    if lim.marginal_high is not None and lim.high is not None:
        span(lim.marginal_high, lim.high, color=COLOURS["MARGINAL"], alpha=ZONE_ALPHA * 1.8, lw=0)
        line(lim.marginal_high, color=COLOURS["MARGINAL"], lw=1, ls="--")
    if lim.marginal_low is not None and lim.low is not None:
        span(lim.low, lim.marginal_low, color=COLOURS["MARGINAL"], alpha=ZONE_ALPHA * 1.8, lw=0)
        line(lim.marginal_low, color=COLOURS["MARGINAL"], lw=1, ls="--")


def value_gauge(values: Sequence[float], outcomes: Sequence[str], lim: Limits, unit: str) -> str:
    """Each value as a dot on the value axis, over pass / marginal / fail zones."""
    fig = _new(6.4, 1.25)
    ax = fig.add_subplot()
    x0, x1 = _span(values, lim)
    _zones(ax, lim, x0, x1)
    vals = np.asarray([v if v is not None else np.nan for v in values], dtype=float)
    ys = _jitter(len(vals))
    ax.scatter(vals, ys, s=26, c=[COLOURS.get(o, MUTED) for o in outcomes], edgecolors="white",
               linewidths=0.6, zorder=3)
    ax.set_xlim(x0, x1)
    ax.set_ylim(-0.5, 0.5)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.set_xlabel(unit or "value", fontsize=8, color=MUTED)
    _style(ax)
    return to_data_uri(fig)


def rate_gauge(labels: Sequence[str], points: Sequence[float], lows: Sequence[float],
               highs: Sequence[float], outcomes: Sequence[str], lim: Limits, confidence: float) -> str:
    """Each rate as its point estimate with its one-sided confidence bounds, over the zones."""
    n = len(points)
    fig = _new(6.4, 0.55 + 0.32 * n)
    ax = fig.add_subplot()
    marks = [v for v in (lim.low, lim.high, lim.marginal_low, lim.marginal_high) if v is not None]
    lo_all = min([v for v in lows if v is not None] + marks + [1.0])
    hi_all = max([v for v in highs if v is not None] + marks + [0.0])
    pad = max(0.01, (hi_all - lo_all) * 0.15)
    x0 = 0.0 if lo_all - pad < 0.1 else lo_all - pad  # error rates start at 0; success rates zoom in
    x1 = min(1.0, max(hi_all + pad, 0.05))
    _zones(ax, lim, x0, x1)
    ys = np.arange(n)
    for y, p, lo, hi, o in zip(ys, points, lows, highs, outcomes):
        c = COLOURS.get(o, MUTED)
        ax.plot([lo, hi], [y, y], color=c, lw=2.2, solid_capstyle="round", zorder=3)
        if p is not None and math.isfinite(p):
            ax.scatter([p], [y], s=30, color="white", edgecolors=c, linewidths=1.5, zorder=4)
    ax.set_yticks(ys, [lbl if len(lbl) <= 48 else "…" + lbl[-47:] for lbl in labels], fontsize=7)
    ax.set_ylim(-0.6, n - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(x0, x1)
    ax.set_xlabel(f"rate (○ estimate, bar: {confidence:.0%} one-sided bounds)", fontsize=8, color=MUTED)
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}" if x1 - x0 > 0.2 else f"{v:.1%}")
    _style(ax)
    return to_data_uri(fig)


def outcome_bars(labels: Sequence[str], counts: Sequence[dict[str, int]], title: str = "") -> str:
    """Horizontal stacked bars of scenario outcomes, one bar per label (flow or run)."""
    order = ["passed", "xfailed", "skipped", "xpassed", "failed", "error"]
    n = len(labels)
    fig = _new(6.4, 0.5 + 0.34 * max(n, 1))
    ax = fig.add_subplot()
    ys = np.arange(n)
    left = np.zeros(n)
    for o in order:
        w = np.asarray([c.get(o, 0) for c in counts], dtype=float)
        if w.any():
            ax.barh(ys, w, left=left, color=COLOURS[o], label=o, height=0.62, edgecolor="white", linewidth=0.6)
            left += w
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("scenarios", fontsize=8, color=MUTED)
    ax.legend(fontsize=7, frameon=False, ncols=6, loc="lower left", bbox_to_anchor=(0, 1.0))
    if title:
        ax.set_title(title, fontsize=9, color=INK, loc="left")
    _style(ax)
    return to_data_uri(fig)


def latency_histograms(series: dict[str, tuple[Sequence[float], Limits, str]]) -> str:
    """A histogram per latency measurement with its median, p95 and limits."""
    names = list(series)
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    fig = _new(10.0 if cols == 2 else 6.0, 2.1 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        values, lim, unit = series[name]
        vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
        # zoomed on the data: the gauges above already place the values against the limits
        x0, x1 = _span(vals.tolist(), Limits())
        _zones(ax, lim, x0, x1)
        ax.hist(vals, bins=min(30, max(5, int(math.sqrt(len(vals))) * 2)), color="#4a7fb5", alpha=0.85,
                edgecolor="white", linewidth=0.5)
        med, p95 = np.percentile(vals, [50, 95])
        ax.axvline(med, color=INK, lw=1.2)
        ax.axvline(p95, color=INK, lw=1, ls=":")
        ax.set_xlim(x0, x1)
        ax.set_title(f"{name}  (n={len(vals)}, median {med:.4g}, p95 {p95:.4g} {unit})", fontsize=8,
                     color=INK, loc="left")
        ax.set_yticks([])
        ax.spines["left"].set_visible(False)
        _style(ax)
    return to_data_uri(fig)


def score_distribution(scores: Sequence[float], threshold: float, groups: Sequence[str],
                       conditions: Sequence[str], accepted: Sequence[bool]) -> str:
    """Face-match scores: histogram by group (genuine / impostor / unknown) and a strip per condition."""
    fig = _new(10.0, 2.3 + 0.2 * len(set(conditions)))
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.1, 1])
    vals = np.asarray(scores, dtype=float)
    lo, hi = min(vals.min(), threshold), max(vals.max(), threshold)
    pad = (hi - lo) * 0.08 or 0.05
    bins = np.linspace(lo - pad, hi + pad, 26)
    palette = {"genuine": "#2e9d5b", "impostor": "#d64541", "unlabelled": "#4a7fb5"}
    for g in ("genuine", "impostor", "unlabelled"):
        sel = vals[[x == g for x in groups]]
        if len(sel):
            ax1.hist(sel, bins=bins, alpha=0.6, color=palette[g], label=f"{g} (n={len(sel)})", edgecolor="white",
                     linewidth=0.4)
    ax1.axvline(threshold, color=INK, lw=1.4, ls="--", label=f"threshold {threshold:.3g}")
    ax1.legend(fontsize=7, frameon=False)
    ax1.set_xlabel("match score", fontsize=8, color=MUTED)
    ax1.set_yticks([])
    ax1.spines["left"].set_visible(False)
    _style(ax1)
    conds = sorted(set(conditions))
    ypos = {c: i for i, c in enumerate(conds)}
    ys = np.asarray([ypos[c] for c in conditions], dtype=float) + _jitter(len(vals), seed=1, spread=0.22)
    ax2.scatter(vals, ys, s=16, c=[COLOURS["PASS"] if a else COLOURS["FAIL"] for a in accepted],
                edgecolors="white", linewidths=0.4, zorder=3)
    ax2.axvline(threshold, color=INK, lw=1.4, ls="--")
    ax2.set_yticks(range(len(conds)), conds, fontsize=7)
    ax2.set_ylim(-0.6, len(conds) - 0.4)
    ax2.invert_yaxis()
    ax2.set_xlim(bins[0], bins[-1])
    ax2.set_xlabel("score by condition (green accepted, red rejected)", fontsize=8, color=MUTED)
    _style(ax2)
    return to_data_uri(fig)


def trend_series(run_labels: Sequence[str], per_run_values: Sequence[Sequence[float]], lim: Limits,
                 unit: str, recent: int, flagged: bool, baseline_median: float | None) -> str:
    """Values per run (dots), their median (line), limits, and the recent runs highlighted."""
    n = len(run_labels)
    fig = _new(6.4, 1.9)
    ax = fig.add_subplot()
    flat = [v for vs in per_run_values for v in vs if v is not None and math.isfinite(v)]
    y0, y1 = _span(flat, lim)
    _zones(ax, lim, y0, y1, vertical=True)
    if recent and n:
        ax.axvspan(n - recent - 0.5, n - 0.5, color=COLOURS["FAIL"] if flagged else "#6c8ebf",
                   alpha=0.12, lw=0)
    if baseline_median is not None:
        ax.axhline(baseline_median, color=MUTED, lw=1, ls=":")
    meds = []
    for i, vs in enumerate(per_run_values):
        vs = [v for v in vs if v is not None and math.isfinite(v)]
        if vs:
            ax.scatter(i + _jitter(len(vs), seed=i, spread=0.18), vs, s=9, color="#4a7fb5", alpha=0.45,
                       lw=0, zorder=3)
            meds.append((i, float(np.median(vs))))
    if meds:
        xs, ms = zip(*meds)
        ax.plot(xs, ms, color=INK, lw=1.4, marker="o", ms=3.5, zorder=4)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(y0, y1)
    step = max(1, n // 12)
    ax.set_xticks(range(0, n, step), [run_labels[i] for i in range(0, n, step)], fontsize=7)
    ax.set_ylabel(unit, fontsize=8, color=MUTED)
    ax.grid(axis="y", color="#e6ebef", linewidth=0.8)
    _style(ax)
    return to_data_uri(fig)


def trend_rates(run_labels: Sequence[str], points: Sequence[float | None], lows: Sequence[float | None],
                highs: Sequence[float | None], lim: Limits, recent: int, flagged: bool) -> str:
    """A rate per run with its confidence bounds."""
    n = len(run_labels)
    fig = _new(6.4, 1.9)
    ax = fig.add_subplot()
    top = max([h for h in highs if h is not None] + [lim.high or 0.0, 0.05]) * 1.15
    _zones(ax, lim, 0.0, top, vertical=True)
    if recent and n:
        ax.axvspan(n - recent - 0.5, n - 0.5, color=COLOURS["FAIL"] if flagged else "#6c8ebf", alpha=0.12, lw=0)
    for i, (p, lo, hi) in enumerate(zip(points, lows, highs)):
        if p is None:
            continue
        ax.plot([i, i], [lo, hi], color="#4a7fb5", lw=2, solid_capstyle="round")
        ax.scatter([i], [p], s=22, color="white", edgecolors=INK, linewidths=1.2, zorder=4)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, min(1.0, top))
    step = max(1, n // 12)
    ax.set_xticks(range(0, n, step), [run_labels[i] for i in range(0, n, step)], fontsize=7)
    ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.1%}")
    ax.grid(axis="y", color="#e6ebef", linewidth=0.8)
    _style(ax)
    return to_data_uri(fig)
