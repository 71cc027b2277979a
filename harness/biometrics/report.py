"""One self-contained HTML page for an accuracy run: figures, DET curves, score histograms.

Plots are matplotlib PNGs embedded as base64; the page holds no face image and no embedding.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from harness.biometrics.metrics import probit

_TICKS = [1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def det_plot(runs: dict[str, dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, r in runs.items():
        fmr, fnmr = np.array(r["det"]["fmr"]), np.array(r["det"]["fnmr"])
        if fmr.size:
            ax.plot(probit(fmr), probit(fnmr), label=f"{name} (EER {r['eer'] * 100:.2f}%)")
    ticks = probit(np.array(_TICKS))
    labels = [f"{t:g}" for t in _TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    lim = (probit(np.array([5e-5]))[0], probit(np.array([0.6]))[0])
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xlabel("FMR")
    ax.set_ylabel("FNMR")
    ax.set_title("DET")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    out = _png(fig)
    plt.close(fig)
    return out


def histogram_plot(name: str, r: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = r["histograms"]
    fig, ax = plt.subplots(figsize=(5.5, 3))
    if h["edges"]:
        edges = np.array(h["edges"])
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        ax.bar(centres, h["impostor"], width=width, alpha=0.6, label="impostor")
        ax.bar(centres, h["genuine"], width=width, alpha=0.6, label="genuine")
    for key, style in (("0.01", "--"), ("0.001", ":")):
        t = r["threshold_at_fmr"].get(key)
        if t is not None and math.isfinite(t):
            ax.axvline(t, color="k", linestyle=style, label=f"threshold @ FMR {key}")
    ax.set_xlabel("score (higher = more alike)")
    ax.set_ylabel("comparisons")
    ax.set_title(f"scores: {name}")
    ax.legend(fontsize=8)
    out = _png(fig)
    plt.close(fig)
    return out


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 100:.2f}%"


def _ci(c) -> str:
    return "-" if not c else f"[{_pct(c[0])}, {_pct(c[1])}]"


def render(result: dict) -> str:
    runs = result["conditions"]
    rows = []
    for name, r in runs.items():
        ci = r.get("ci95", {})
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            name, r["pairs"], _pct(r["fta_rate"]), _pct(r["eer"]), _ci(ci.get("eer")),
            _pct(r["fnmr_at_fmr"]["0.01"]), _ci(ci.get("fnmr_at_fmr", {}).get("0.01")),
            _pct(r["fnmr_at_fmr"]["0.001"]), _ci(ci.get("fnmr_at_fmr", {}).get("0.001")),
            f"{r['threshold_at_fmr']['0.001']:.4f}")) + "</tr>")
    hists = "".join(f'<img alt="score histogram {html.escape(n)}" src="data:image/png;base64,{histogram_plot(n, r)}">'
                    for n, r in runs.items())
    meta = {k: result.get(k) for k in ("backend", "model_version", "pairs_source", "dataset_hash", "policy", "seed")}
    meta_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>facehil accuracy: {html.escape(result['backend'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:left}}img{{margin:8px;vertical-align:top}}</style></head><body>
<h1>Face match accuracy</h1>
<table>{meta_rows}</table>
<h2>Figures (ISO/IEC 19795-1; FTA pairs excluded from FMR/FNMR; CI: subject bootstrap 95%)</h2>
<table><tr><th>condition</th><th>pairs</th><th>FTA</th><th>EER</th><th>EER CI</th><th>FNMR@FMR 1e-2</th>
<th>CI</th><th>FNMR@FMR 1e-3</th><th>CI</th><th>threshold@1e-3</th></tr>{''.join(rows)}</table>
<h2>DET curves</h2><img alt="DET curve" src="data:image/png;base64,{det_plot(runs)}">
<h2>Score histograms</h2>{hists}
</body></html>
"""


def write(result: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(result))
    return path
