"""The campaign report: one self-contained HTML page (Jinja2 + matplotlib PNGs, no scripts).

It shows the verdicts, every rate with its clustered interval, FRR per condition and APCER
per species (worst first), the attacks that got through, the transaction-time distributions,
the DET curve when the reader reports scores (else a plain statement that only one operating
point is measurable), the comparison with a baseline run, and the plan and seed. No images of
faces: only labels, counts, times and scores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, select_autoescape

from harness.biometrics.metrics import probit
from harness.report.figures import INK, _new, _style, to_data_uri

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>facehil campaign #{{ s.run_id }} ({{ s.firmware or "unknown firmware" }})</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;color:#33404d;max-width:1100px;margin:24px auto;padding:0 16px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #dde3e8}
table{border-collapse:collapse;margin:8px 0} td,th{padding:3px 10px;border-bottom:1px solid #eef1f4;text-align:left}
th{background:#f5f7f9} .PASS{color:#2e9d5b;font-weight:600} .FAIL,.REGRESSION{color:#d64541;font-weight:600}
.INCONCLUSIVE{color:#b07d00;font-weight:600} .IMPROVEMENT{color:#2e9d5b;font-weight:600} .muted{color:#8795a1}
img{max-width:100%} code{background:#f5f7f9;padding:1px 4px}
</style></head><body>
<h1>Campaign #{{ s.run_id }}: reader firmware {{ s.firmware or "unknown" }}</h1>
<p>Station <b>{{ s.station }}</b>; {{ s.transactions }} of {{ s.scheduled }} scheduled transactions
({{ s.errors }} not finished by the station); stopped by <b>{{ s.stopped_by }}</b>; seed <code id="seed">{{ s.seed }}</code>;
run status <b id="run-status">{{ s.status | upper }}</b>{% if s.resumed %}; resumed {{ s.resumed }} time(s){% endif %}.</p>
{% if s.missing_shards %}<p id="missing-shards" class="FAIL">Incomplete: {{ s.missing_shards | length }} fleet shard(s)
missing, so no verdict passes:{% for m in s.missing_shards %} shard {{ m.shard }}/{{ m.of }} on {{ m.rig }} (cards
{{ m.cards | join(", ") }}): {{ m.missing }}{% if not loop.last %};{% endif %}{% endfor %}.</p>{% endif %}

<section id="verdicts"><h2>Verdicts</h2>
{% if s.verdicts %}<table><tr><th>limit</th><th>figure judged</th><th>bounds at confidence</th><th>verdict</th></tr>
{% for v in s.verdicts %}<tr data-limit="{{ v.name }}"><td>{{ v.name }} &le; {{ pct(v.limit) }} at {{ pct(v.confidence, 0) }}</td>
<td>{{ v.figure }}</td><td>{{ pct(v.bound_low) }} .. {{ pct(v.bound_high) }}</td><td class="{{ v.verdict }}">{{ v.verdict }}</td></tr>
{% endfor %}</table>{% else %}<p class="muted">The station file sets no [campaign.limits].</p>{% endif %}
</section>

<section id="rates"><h2>Rates (95% intervals clustered by subject)</h2>
<table><tr><th>figure</th><th>errors / trials</th><th>subjects</th><th>rate</th><th>95% interval</th><th>design effect</th></tr>
{% for name, r in s.rates.items() %}<tr data-rate="{{ name }}"><td>{{ name }}</td><td>{{ r.errors }} / {{ r.trials }}</td>
<td>{{ r.subjects }}</td><td>{{ pct(r.value) }}</td><td>{{ pct(r.ci[0]) }} .. {{ pct(r.ci[1]) }}</td><td>{{ r.design_effect or "-" }}</td></tr>
{% endfor %}</table>
<p class="muted">FRR, FAR and FTA are per transaction under the reader's retry policy; FNMR and FMR per attempt
(the reader's face events). With no error the upper bound is the rule of 3.</p>
<img alt="rates with intervals" src="{{ fig_rates }}">
</section>

<section id="conditions"><h2>FRR per capture condition</h2>
<table><tr><th>condition</th><th>rejected / genuine</th><th>FRR</th><th>95% interval</th></tr>
{% for c, r in s.per_condition.items() %}<tr data-condition="{{ c }}"><td>{{ c }}</td><td>{{ r.errors }} / {{ r.trials }}</td>
<td>{{ pct(r.value) }}</td><td>{{ pct(r.ci[0]) }} .. {{ pct(r.ci[1]) }}</td></tr>{% endfor %}</table>
</section>

<section id="attacks"><h2>Presentation attacks (APCER per species, worst first)</h2>
<table><tr><th>species</th><th>accepted / presented</th><th>APCER</th><th>95% interval</th></tr>
{% for r in s.apcer_by_species %}<tr data-species="{{ r.name[6:] }}"><td>{{ r.name[6:] }}</td><td>{{ r.errors }} / {{ r.trials }}</td>
<td>{{ pct(r.value) }}</td><td>{{ pct(r.ci[0]) }} .. {{ pct(r.ci[1]) }}</td></tr>{% endfor %}</table>
<p>BPCER (holders refused as attacks): {{ pct(s.rates.bpcer.value) if s.rates.bpcer else "-" }}.
Attacks that got through: <b id="attacks-through">{{ s.attacks_through | length }}</b></p>
{% if s.attacks_through %}<table><tr><th>#</th><th>card</th><th>species</th><th>score</th></tr>
{% for a in s.attacks_through %}<tr><td>{{ a.seq }}</td><td>{{ a.card }}</td><td>{{ a.species }}</td><td>{{ "%.3f" % a.score if a.score is not none else "-" }}</td></tr>{% endfor %}</table>{% endif %}
</section>

<section id="times"><h2>Transaction time (face screen to decision)</h2>
<table><tr><th>transactions</th><th>n</th><th>median</th><th>p90</th><th>p95</th><th>median 95% interval</th></tr>
{% for k, t in s.times.items() %}{% if t.n %}<tr data-times="{{ k }}"><td>{{ k }}</td><td>{{ t.n }}</td><td>{{ "%.0f" % t.median_ms }} ms</td>
<td>{{ "%.0f" % t.p90_ms }} ms</td><td>{{ "%.0f" % t.p95_ms }} ms</td>
<td>{% if t.median_ci_ms %}{{ "%.0f" % t.median_ci_ms[0] }} .. {{ "%.0f" % t.median_ci_ms[1] }} ms{% else %}-{% endif %}</td></tr>{% endif %}{% endfor %}</table>
{% if fig_times %}<img alt="transaction times" src="{{ fig_times }}">{% endif %}
</section>

<section id="det"><h2>DET curve</h2>
{% if fig_det %}<p>{{ s.det.genuine_scores }} genuine and {{ s.det.impostor_scores }} impostor attempt scores reported by the reader
(random and hard impostors together: the plan's mix shapes the curve); EER {{ pct(s.det.eer) }}.</p><img alt="DET curve" src="{{ fig_det }}">
{% else %}<p id="no-det">{{ s.det.note }}</p>{% endif %}
</section>

{% if c %}<section id="comparison"><h2>Comparison with run #{{ c.run_a }} ({{ c.firmware_a }} &rarr; {{ c.firmware_b }})</h2>
<table><tr><th>figure</th><th>A</th><th>B</th><th>B - A</th><th>95% interval</th><th>p</th><th>flag</th></tr>
{% for l in c.lines %}<tr data-compare="{{ l.figure }}"><td>{{ l.figure }}</td><td>{{ l.a }}</td><td>{{ l.b }}</td><td>{{ l.diff }}</td>
<td>{{ l.ci }}</td><td>{{ l.p }}</td><td class="{{ l.flag }}">{{ l.flag }}</td></tr>{% endfor %}</table>
<p class="muted">Rates: Newcombe's hybrid score interval and Fisher's exact test; times: Mann-Whitney U, effect size r (rank-biserial).</p>
</section>{% endif %}

<section id="plan"><h2>Plan and seed</h2>
<p>Seed <code>{{ s.seed }}</code>; transactions by kind: {% for k, n in s.counts.items() %}{{ k }} {{ n }}{{ ", " if not loop.last }}{% endfor %}.</p>
<pre>{{ plan_json }}</pre>
{% if s.error_reasons %}<p>Station errors: {% for e in s.error_reasons %}<br>{{ e }}{% endfor %}</p>{% endif %}
</section>
</body></html>
"""


def _pct(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.{digits}f}%"


def _fig_rates(rates: dict[str, dict]) -> str:
    names = [n for n, r in rates.items() if r["trials"]]
    fig = _new(7.5, 0.32 * len(names) + 0.8)
    ax = fig.add_subplot()
    _style(ax)
    y = np.arange(len(names))
    vals = np.array([rates[n]["value"] for n in names])
    lo = np.array([rates[n]["ci"][0] for n in names])
    hi = np.array([rates[n]["ci"][1] for n in names])
    ax.errorbar(vals * 100, y, xerr=[(vals - lo) * 100, (hi - vals) * 100], fmt="o", color=INK, capsize=3)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("rate (%) with 95% interval clustered by subject", fontsize=8)
    ax.set_xlim(-2, 102)
    return to_data_uri(fig)


def _fig_times(times: dict[str, dict]) -> str | None:
    series = [(k, t["values_ms"]) for k, t in times.items() if t.get("n")]
    if not series:
        return None
    fig = _new(7.5, 2.2)
    ax = fig.add_subplot()
    _style(ax)
    ax.boxplot([v for _, v in series], orientation="horizontal", whis=(5, 95))
    ax.set_yticks(range(1, len(series) + 1), [k for k, _ in series])
    ax.set_xscale("log")
    ax.set_xlabel("face screen to decision (ms, log scale; whiskers p5-p95)", fontsize=8)
    return to_data_uri(fig)


def _fig_det(det: dict) -> str | None:
    if not det.get("available"):
        return None
    fmr, fnmr = np.array(det["fmr"]), np.array(det["fnmr"])
    fig = _new(5.0, 4.0)
    ax = fig.add_subplot()
    _style(ax)
    ax.plot(probit(fmr), probit(fnmr), color=INK, drawstyle="steps-post")
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5, 0.8]
    lim = probit(np.array([0.0005, 0.95]))  # rates of 0 and 1 sit on the edges, not far beyond
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xticks(probit(np.array(ticks)), [f"{t:g}" for t in ticks])
    ax.set_yticks(probit(np.array(ticks)), [f"{t:g}" for t in ticks])
    ax.set_xlabel("FMR (attempts)", fontsize=8)
    ax.set_ylabel("FNMR (attempts)", fontsize=8)
    return to_data_uri(fig)


def render_report(summary: dict[str, Any], comparison: dict[str, Any] | None = None) -> str:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    env.globals["pct"] = _pct
    return env.from_string(TEMPLATE).render(
        s=summary, c=comparison, plan_json=json.dumps(summary.get("plan"), indent=1),
        fig_rates=_fig_rates(summary["rates"]), fig_times=_fig_times(summary["times"]), fig_det=_fig_det(summary["det"]))


def write_report(folder: Path, summary: dict[str, Any], comparison: dict[str, Any] | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"campaign-{summary['run_id']}.html"
    path.write_text(render_report(summary, comparison), encoding="utf-8")
    return path
