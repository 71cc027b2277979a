"""Self-contained HTML pages from the records: the run report and the trend page.

One file each, figures inlined as PNG data URIs, no scripts, no external URLs, no face images
(the records hold none).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any

import jinja2

from harness.clauses import matrix_from_records, uncovered_reader_clauses
from harness.measure import Limit, MeasurementError, RateLimit
from harness.records import RecordsError, RecordStore, RunData
from harness.report import figures
from harness.report.trend import TrendRule, analyse, build_series

OUTCOME_ORDER = ["passed", "failed", "error", "skipped", "xfailed", "xpassed"]
_SEVERITY = {"FAIL": 0, "MARGINAL": 1, "PASS": 2}
MAX_LATENCY_PANELS = 12


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_num
    env.filters["dt"] = fmt_dt
    env.filters["dur"] = fmt_duration_ms
    env.filters["pct"] = lambda v, digits=1: "–" if v is None else f"{v * 100:.{digits}f}%"
    return env


def fmt_num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def fmt_dt(v: datetime | None) -> str:
    if v is None:
        return "–"
    return v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 172800:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def _limit_text(kind: str, unit: str, low, high, mlow, mhigh, confidence) -> str:
    try:
        if kind == "rate":
            return RateLimit(low, high, mlow, mhigh, confidence or 0.95).describe()
        return Limit(low, high, mlow, mhigh).describe(unit)
    except MeasurementError:
        return "inconsistent limit"


def _worst(outcomes) -> str:
    return min(outcomes, key=lambda o: _SEVERITY.get(o, 3), default="PASS")


def _generator() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"facehil {version('facehil')}"
    except PackageNotFoundError:
        return "facehil"


# ---------------------------------------------------------------------------------------------
# Run report


def run_context(data: RunData) -> dict[str, Any]:
    run = data.run
    nodeids = {s.id: s.nodeid for s in data.scenarios}
    counts = Counter(s.outcome for s in data.scenarios)
    mcounts = Counter(m.outcome for m in data.measurements)

    flows: dict[str, list] = defaultdict(list)
    for s in data.scenarios:
        flows[s.flow or "(none)"].append(s)
    flow_rows = []
    for name in sorted(flows):
        sc = flows[name]
        c = Counter(s.outcome for s in sc)
        flow_rows.append({
            "name": name, "counts": dict(c), "total": len(sc),
            "duration_ms": sum(s.duration_ms or 0 for s in sc),
            "ok": not (c.get("failed") or c.get("error")),
            "measurement": _worst([s.measurement_outcome for s in sc if s.measurement_outcome]),
        })

    groups: dict[str, list] = defaultdict(list)
    for m in data.measurements:
        groups[m.name].append(m)
    measurement_groups = []
    for name, rows in groups.items():
        last = rows[-1]
        lim = figures.Limits(last.low, last.high, last.marginal_low, last.marginal_high)
        outcomes = [r.outcome for r in rows]
        g = {"name": name, "kind": last.kind, "unit": last.unit or "", "n": len(rows),
             "limit": _limit_text(last.kind, last.unit or "", last.low, last.high, last.marginal_low,
                                  last.marginal_high, last.confidence),
             "counts": Counter(outcomes), "worst": _worst(outcomes),
             "rows": [{"nodeid": nodeids.get(r.scenario_id, "?"), "value": r.value, "outcome": r.outcome,
                       "errors": r.errors, "trials": r.trials, "bound_low": r.bound_low,
                       "bound_high": r.bound_high} for r in rows]}
        vals = [r.value for r in rows if r.value is not None]
        if last.kind == "rate":
            g["figure"] = figures.rate_gauge([nodeids.get(r.scenario_id, "?").split("::")[-1] for r in rows],
                                             [r.value for r in rows], [r.bound_low or 0.0 for r in rows],
                                             [r.bound_high or 1.0 for r in rows], outcomes, lim,
                                             last.confidence or 0.95)
            g["summary"] = f"{sum(r.errors or 0 for r in rows)}/{sum(r.trials or 0 for r in rows)} errors"
        else:
            g["figure"] = figures.value_gauge([r.value for r in rows], outcomes, lim, last.unit or "")
            g["summary"] = (f"min {fmt_num(min(vals))} · median {fmt_num(float(median(vals)))} · "
                            f"max {fmt_num(max(vals))}") if vals else "no values"
        measurement_groups.append(g)
    measurement_groups.sort(key=lambda g: (_SEVERITY.get(g["worst"], 3), g["name"]))

    latency = {g["name"]: ([r["value"] for r in g["rows"] if r["value"] is not None],
                           figures.Limits(groups[g["name"]][-1].low, groups[g["name"]][-1].high,
                                          groups[g["name"]][-1].marginal_low, groups[g["name"]][-1].marginal_high),
                           g["unit"])
               for g in sorted(measurement_groups, key=lambda g: g["name"])
               if g["kind"] == "value" and g["unit"] in ("ms", "s", "us") and g["n"] >= 3}
    latency = dict(list(latency.items())[:MAX_LATENCY_PANELS])
    latency_fig = figures.latency_histograms(latency) if latency else None

    scores = None
    if data.face_matches:
        fm = data.face_matches
        groups_ = ["genuine" if f.genuine else "impostor" if f.genuine is False else "unlabelled" for f in fm]
        thresholds = Counter(f.threshold for f in fm)
        threshold = thresholds.most_common(1)[0][0]
        by_cond: dict[str, list] = defaultdict(list)
        for f in fm:
            by_cond[f.condition or "(none)"].append(f)
        genuine = [f for f in fm if f.genuine]
        impostor = [f for f in fm if f.genuine is False]
        scores = {
            "figure": figures.score_distribution([f.score for f in fm], threshold, groups_,
                                                 [f.condition or "(none)" for f in fm], [f.accepted for f in fm]),
            "n": len(fm), "threshold": threshold, "several_thresholds": len(thresholds) > 1,
            "false_rejects": sum(1 for f in genuine if not f.accepted), "genuine": len(genuine),
            "false_accepts": sum(1 for f in impostor if f.accepted), "impostor": len(impostor),
            "conditions": [{"name": c, "n": len(v), "accepted": sum(1 for f in v if f.accepted),
                            "median": float(median(f.score for f in v))} for c, v in sorted(by_cond.items())],
        }

    duration_ms = (run.ended_at - run.started_at).total_seconds() * 1000 if run.ended_at else None
    failed = [s for s in data.scenarios if s.outcome in ("failed", "error")]
    clause_rows = clause_matrix(data)
    return {
        "run": run, "duration_ms": duration_ms, "counts": counts, "total": len(data.scenarios),
        "mcounts": mcounts, "n_measurements": len(data.measurements), "flows": flow_rows,
        "measurements": measurement_groups, "latency_figure": latency_fig,
        "latency_names": list(latency), "scores": scores, "failed": failed, "scenarios": data.scenarios,
        "outcome_order": OUTCOME_ORDER, "generator": _generator(), "generated_at": datetime.now(timezone.utc),
        "clauses": clause_rows, "clause_counts": Counter(r.status for r in clause_rows),
        "uncovered_reader_clauses": uncovered_reader_clauses(clause_rows),
    }


def clause_matrix(data: RunData) -> list:
    """The conformance matrix of a run: one row per notice clause (harness.clauses)."""
    return matrix_from_records(data.scenarios)


def render_run_report(store: RecordStore, run_id: int | None = None) -> str:
    """The HTML report of one run (the newest when run_id is None)."""
    if run_id is None:
        run_id = store.latest_run_id()
        if run_id is None:
            raise RecordsError("the records database holds no runs yet")
    return _env().get_template("run.html.j2").render(**run_context(store.load_run(run_id)))


def write_run_report(store: RecordStore, out: Path, run_id: int | None = None) -> Path:
    out = Path(out)
    html = render_run_report(store, run_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------
# Trend page


def trend_context(store: RecordStore, last: int = 30, suite: str | None = None, recent: int = 1,
                  rule: TrendRule = TrendRule()) -> dict[str, Any]:
    if suite is None:  # the suite of the newest finished run: trends never mix smoke and nightly
        newest = store.list_runs(last=1, statuses=("passed", "failed"))
        suite = newest[0].suite if newest else None
    runs = store.list_runs(last=last, suite=suite, statuses=("passed", "failed"))
    run_ids = [r.id for r in runs]
    recent = max(1, min(recent, len(runs) - 1)) if len(runs) > 1 else 1
    labels = [f"#{r.id}" for r in runs]
    verdicts = analyse(build_series(store.measurements_for_runs(run_ids), run_ids), recent, rule)
    counts = store.scenario_counts(run_ids)
    for v in verdicts:
        s = v.series
        lim = figures.Limits(s.low, s.high, s.marginal_low, s.marginal_high)
        if s.kind == "rate":
            from harness.measure import rate_bounds

            pts, lows, highs = [], [], []
            for e, t in zip(s.errors, s.trials):
                if t:
                    lo, hi = rate_bounds(e, t, s.confidence)
                    pts.append(e / t), lows.append(lo), highs.append(hi)
                else:
                    pts.append(None), lows.append(None), highs.append(None)
            v.figure = figures.trend_rates(labels, pts, lows, highs, lim, recent, v.flagged)
        else:
            v.figure = figures.trend_series(labels, s.values, lim, s.unit, recent, v.flagged, v.baseline_stat)
        v.limit = _limit_text(s.kind, s.unit, s.low, s.high, s.marginal_low, s.marginal_high, s.confidence)
    order = {"regression": 0, "changed": 1, "improvement": 2, "stable": 3, "insufficient data": 4}
    verdicts.sort(key=lambda v: (order.get(v.status, 9), v.name))
    return {
        "suite": suite, "runs": runs, "recent": recent, "last": last, "rule": rule,
        "verdicts": verdicts, "regressions": [v for v in verdicts if v.flagged],
        "counts": counts, "outcome_order": OUTCOME_ORDER,
        "runs_figure": figures.outcome_bars(labels, [counts.get(r, {}) for r in run_ids]) if runs else None,
        "generator": _generator(), "generated_at": datetime.now(timezone.utc),
    }


def render_trend_report(store: RecordStore, last: int = 30, suite: str | None = None, recent: int = 1,
                        rule: TrendRule = TrendRule()) -> str:
    return _env().get_template("trend.html.j2").render(**trend_context(store, last, suite, recent, rule))


def write_trend_report(store: RecordStore, out: Path, last: int = 30, suite: str | None = None,
                       recent: int = 1, rule: TrendRule = TrendRule()) -> tuple[Path, list]:
    """Write the trend page; returns its path and the flagged regressions (Verdicts)."""
    out = Path(out)
    ctx = trend_context(store, last, suite, recent, rule)
    html = _env().get_template("trend.html.j2").render(**ctx)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out, ctx["regressions"]
