"""harness.report: the run report, the trend page and its regression rule, the `facehil report` CLI,
and the report as headless Chromium renders it."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from harness.measure import Limit, Measurements
from harness.records import RecordStore, RunInfo, ScenarioResult
from harness.report import render_run_report, render_trend_report, write_run_report
from harness.report.trend import Series, analyse, cliffs_delta, holm

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
FLOWS = ["face_auth_card", "standard_card", "visual_fallback", "card_io"]
# the clauses each flow's scenarios cite (params["@clauses"], as harness.recording stores them)
FLOW_CLAUSES = {"face_auth_card": ["N1", "N10"], "visual_fallback": ["N12"], "card_io": ["N16"]}


def _record_run(store: RecordStore, rng: np.random.Generator, *, suite="nightly", latency_ms=(900.0, 120.0),
                fnmr_errors=1, fnmr_trials=200, n_per_flow=6, fail_one=True, started=None) -> int:
    run_id = store.start_run(RunInfo(suite=suite, station_name="sim-station", facehil_version="0.1.0",
                                     git_sha="0123abcd", card_deck=["std-01", "face-01"], dataset_hash="f" * 64),
                             started_at=started)
    store.annotate_run(run_id, reader_firmware="1.4.0", reader_features=["face", "pin", "visual_fallback"])
    t0 = started or datetime.now(timezone.utc)
    for flow in FLOWS:
        for i in range(n_per_flow):
            m = Measurements()
            outcome, longrepr = "passed", None
            if flow in ("face_auth_card", "standard_card"):
                m("face_auth_latency_ms", float(rng.normal(*latency_ms)), limit=Limit(high=1500, marginal=1200))
                cond = ["nominal", "low_light", "mask"][i % 3]
                genuine = i % 4 != 3
                score = float(rng.normal(0.75 if genuine else 0.3, 0.08)) - (0.15 if cond == "mask" else 0)
                m.face_match(score, 0.6, score >= 0.6, condition=cond, subject_id=f"s{i:02d}", genuine=genuine)
            elif flow == "visual_fallback":
                m("visual_switch_ms", float(rng.normal(700, 90)), high=2000, marginal=1500)
                if i == 0:
                    m.rate("fnmr", fnmr_errors, fnmr_trials, high=0.05)
            else:
                m("apdu_roundtrip_ms", float(rng.gamma(4, 6)), high=100, marginal=60)
                m("presence_detect_ms", float(rng.normal(180, 25)), high=500)
            if fail_one and flow == "visual_fallback" and i == n_per_flow - 1:
                m("return_to_face_ms", 5200.0, high=3000)
                outcome, longrepr = "failed", "measurement(s) out of limits:\n  return_to_face_ms = 5200 ms"
            if flow == "card_io" and i == n_per_flow - 1:
                outcome, longrepr = "skipped", "station has no card placer"
            store.record_scenario(run_id, ScenarioResult(
                nodeid=f"scenarios/test_{flow}.py::test_case[{i}]", outcome=outcome, flow=flow,
                params={"i": i, **({"@clauses": FLOW_CLAUSES[flow]} if flow in FLOW_CLAUSES else {})}, duration_ms=float(rng.uniform(200, 2500)), started_at=t0, ended_at=t0,
                longrepr=longrepr, measurements=[r.as_record() for r in m.results],
                face_matches=[f.as_record() for f in m.face_matches]))
    store.finish_run(run_id, "failed" if fail_one else "passed", 1 if fail_one else 0)
    return run_id


@pytest.fixture
def populated(tmp_path):
    url = f"sqlite:///{tmp_path / 'records.sqlite'}"
    with RecordStore(url) as store:
        rng = np.random.default_rng(7)
        start = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
        ids = [_record_run(store, rng, fail_one=(k == 9), started=start + timedelta(days=k),
                           latency_ms=(1150.0, 110.0) if k == 9 else (900.0, 110.0),
                           fnmr_errors=2 if k < 9 else 3)
               for k in range(10)]
    return url, ids


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def _assert_self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "external reference"
    assert "http://" not in html and "https://" not in html
    for src in re.findall(r'src="([^"]+)"', html):
        assert src.startswith("data:image/png;base64,")


# -- run report ----------------------------------------------------------------------------------

def test_run_report_is_self_contained_and_complete(populated):
    url, ids = populated
    with RecordStore(url) as store:
        html = render_run_report(store, ids[-1])
    _assert_self_contained(html)
    assert f"Run #{ids[-1]}" in html and 'id="run-status">FAILED' in html
    for flow in FLOWS:
        assert f'data-flow="{flow}"' in html
    for name in ("face_auth_latency_ms", "visual_switch_ms", "fnmr", "apdu_roundtrip_ms", "return_to_face_ms"):
        assert f'data-measurement="{name}"' in html
    assert "return_to_face_ms = 5200 ms" in html  # the failure's summary
    assert "station has no card placer" not in html.split('id="failures"')[1].split("</section>")[0]
    assert "1.4.0" in html and "sim-station" in html and "std-01" in html
    images = _images(html)
    # 6 measurement gauges + latency panels + score distribution; nothing else
    assert len(images) == 6 + 1 + 1
    for png in images:
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG" and img.width > 300 and img.height > 80
        assert "Software" not in img.info  # no tool URL hidden in the metadata


def test_conformance_matrix_in_the_run_report(populated):
    url, ids = populated
    with RecordStore(url) as store:
        html = render_run_report(store, ids[-1])
    section = html.split('id="clauses"')[1].split("</section>")[0]
    rows = dict(re.findall(r'data-clause="(N\d+)" data-status="([^"]+)"', section))
    assert len(rows) == 20
    # N12: one visual-fallback scenario failed; N16: five passed and one skipped; N2: nobody cites it
    assert rows["N12"] == "fail" and rows["N16"] == "pass" and rows["N10"] == "pass" and rows["N2"] == "untested"
    assert "「本人確認の方法を選んでください。」" in section  # the notice's own wording
    n13 = section.split('id="clause-N13"')[1].split("</tr>")[0]
    assert "Outside a reader&#39;s reach" in n13
    assert "Reader clauses no scenario of this run cites: N2, N3, N4, N5" in section
    n12 = section.split('id="clause-N12"')[1].split("</tr>")[0]
    assert n12.count("scenarios/test_visual_fallback.py::test_case[") == 6


def test_the_failed_measurement_sorts_first_and_limits_are_shown(populated):
    url, ids = populated
    with RecordStore(url) as store:
        html = render_run_report(store, ids[-1])
    names = re.findall(r'class="meas" data-measurement="([^"]+)"', html)
    assert names[0] == "return_to_face_ms"
    assert "limit: &lt;= 1500 ms, marginal above 1200" in html
    assert "limit: &lt;= 0.05 at 95%" in html


def test_an_empty_run_and_a_run_on_postgresql_render(db_url):
    with RecordStore(db_url) as store:
        empty = store.start_run(RunInfo(suite="smoke"))
        html = render_run_report(store, empty)
        assert 'id="run-status">RUNNING' in html and "No scenarios were recorded" in html
        full = _record_run(store, np.random.default_rng(1), n_per_flow=3)
        html = render_run_report(store)  # the newest
    _assert_self_contained(html)
    assert f"Run #{full}" in html and len(_images(html)) >= 5


def test_markup_in_recorded_text_is_escaped(tmp_path):
    with RecordStore(f"sqlite:///{tmp_path / 'r.sqlite'}") as store:
        run_id = store.start_run(RunInfo(station_name="<script>alert(1)</script>"))
        store.record_scenario(run_id, ScenarioResult("t::<b>x</b>", "failed", flow="<i>f</i>",
                                                     longrepr="<img src=http://evil/x.png>"))
        html = render_run_report(store, run_id)
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "<img src=http://evil" not in html


# -- trend rule ----------------------------------------------------------------------------------

def _series(name, per_run, unit="ms", high=None, low=None, kind="value", errors=None, trials=None):
    n = len(per_run) if per_run else len(errors)
    return Series(name, kind, unit, list(range(1, n + 1)), per_run or [[] for _ in range(n)],
                  errors or [0] * n, trials or [0] * n, low=low, high=high)


def test_holm_and_cliffs_delta():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []
    assert cliffs_delta([3, 4], [1, 2]) == 1.0 and cliffs_delta([1, 2], [1, 2]) == 0.0


def test_a_real_shift_is_flagged_and_noise_is_not():
    rng = np.random.default_rng(3)
    base = [list(rng.normal(900, 100, 12)) for _ in range(9)]
    slower = _series("face_auth_latency_ms", base + [list(rng.normal(1150, 100, 12))], high=1500)
    same = _series("visual_switch_ms", base + [list(rng.normal(900, 100, 12))], high=2000)
    faster = _series("apdu_ms", base + [list(rng.normal(600, 100, 12))], high=1500)
    verdicts = {v.name: v for v in analyse([slower, same, faster])}
    assert verdicts["face_auth_latency_ms"].status == "regression" and verdicts["face_auth_latency_ms"].flagged
    assert verdicts["face_auth_latency_ms"].effect > 0.33 and verdicts["face_auth_latency_ms"].p_adjusted < 0.01
    assert verdicts["visual_switch_ms"].status == "stable"
    assert verdicts["apdu_ms"].status == "improvement" and not verdicts["apdu_ms"].flagged


def test_noise_alone_raises_no_flag_over_many_nights():
    rng = np.random.default_rng(11)
    flagged = 0
    for _ in range(40):
        series = [_series(f"m{k}_ms", [list(rng.lognormal(6.8, 0.15, 8)) for _ in range(15)], high=5000)
                  for k in range(5)]
        flagged += sum(v.flagged for v in analyse(series))
    assert flagged == 0


def test_a_significant_but_tiny_shift_is_not_flagged():
    rng = np.random.default_rng(5)
    base = [list(rng.normal(1000, 5, 200)) for _ in range(5)]
    tiny = _series("x_ms", base + [list(rng.normal(1015, 5, 200))], high=1500)  # 1.5% slower, p ~ 0
    v = analyse([tiny])[0]
    assert v.p_adjusted < 1e-6 and v.effect > 0.33 and v.status == "stable"


def test_direction_follows_the_limit_and_two_sided_values_only_change():
    rng = np.random.default_rng(9)
    base = [list(rng.normal(100, 5, 10)) for _ in range(6)]
    lower = base + [list(rng.normal(70, 5, 10))]
    verdicts = {v.name: v for v in analyse([
        _series("success_margin", lower, unit="", low=50),  # a low limit: lower is worse
        _series("headroom_ms", lower, high=500),  # a high limit: lower is better
        _series("brightness", lower, unit="lux"),  # no limit, not a time: two-sided
    ])}
    assert verdicts["success_margin"].status == "regression"
    assert verdicts["headroom_ms"].status == "improvement"
    assert verdicts["brightness"].status == "changed" and not verdicts["brightness"].flagged


def test_rates_use_fisher_and_a_minimum_rise():
    n = 8
    worse = _series("fnmr", None, kind="rate", unit="rate", high=0.05,
                    errors=[2] * (n - 1) + [30], trials=[200] * n)
    same = _series("fmr", None, kind="rate", unit="rate", high=0.01, errors=[1] * (n - 1) + [2], trials=[200] * n)
    verdicts = {v.name: v for v in analyse([worse, same])}
    assert verdicts["fnmr"].flagged and verdicts["fnmr"].effect == pytest.approx(0.15 - 0.01)
    assert verdicts["fmr"].status == "stable"


def test_too_little_data_is_said_not_guessed():
    v = analyse([_series("x_ms", [[1.0, 2.0], [1.0], [50.0, 60.0, 70.0]], high=100)])[0]
    assert v.status == "insufficient data" and "needs" in v.note


def test_trend_page_flags_the_slow_night(populated):
    url, ids = populated
    with RecordStore(url) as store:
        html = render_trend_report(store, last=30)
    _assert_self_contained(html)
    assert 'id="trend-status">1 REGRESSION' in html
    assert re.search(r'class="regression-row"><td><a href="#m-face_auth_latency_ms">', html)
    assert 'data-measurement="visual_switch_ms" data-status="stable"' in html
    assert f"#{ids[0]}" in html and f"#{ids[-1]}" in html
    assert len(_images(html)) == 1 + 6  # runs + one per measurement


def test_trend_leaves_out_aborted_runs_and_other_suites(populated):
    url, ids = populated
    with RecordStore(url) as store:
        aborted = store.start_run(RunInfo(suite="nightly"))
        store.finish_run(aborted, "aborted")
        smoke = _record_run(store, np.random.default_rng(2), suite="smoke", n_per_flow=2)
        html = render_trend_report(store, last=30, suite="nightly")
        smoke_html = render_trend_report(store, last=30)  # default: the newest finished run's suite
    assert f"#{aborted}<" not in html and f"#{smoke}<" not in html
    assert "Trend · smoke" in smoke_html and "insufficient data" in smoke_html


# -- CLI -----------------------------------------------------------------------------------------

def test_cli_writes_reports_and_lists_runs(populated, tmp_path):
    from harness.cli import app

    url, ids = populated
    runner = CliRunner()
    out = tmp_path / "out" / "run.html"
    res = runner.invoke(app, ["report", "html", "--db", url, "--run", str(ids[0]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"Run #{ids[0]}" in out.read_text() and str(out.resolve()) in res.output
    res = runner.invoke(app, ["report", "html", "--db", url, "--last", "--out", str(out)])
    assert res.exit_code == 0 and f"Run #{ids[-1]}" in out.read_text()
    res = runner.invoke(app, ["report", "html", "--db", url, "--run", "999", "--out", str(out)])
    assert res.exit_code == 1 and "no run 999" in res.output
    trend = tmp_path / "trend.html"
    res = runner.invoke(app, ["report", "trend", "--db", url, "--last", "30", "--out", str(trend),
                              "--fail-on-regression"])
    assert res.exit_code == 1 and "regression face_auth_latency_ms" in res.output and trend.exists()
    res = runner.invoke(app, ["report", "runs", "--db", url, "--last", "3"])
    assert res.exit_code == 0 and str(ids[-1]) in res.output
    res = runner.invoke(app, ["report", "mark-stale", "--db", url])
    assert res.exit_code == 0 and "marked 0 run(s) aborted" in res.output
    res = runner.invoke(app, ["report", "html", "--db", "postgresql+psycopg2://x@127.0.0.1:1/none"])
    assert res.exit_code == 2 and "cannot open records database" in res.output


# -- in a real browser ---------------------------------------------------------------------------

def _chromium_page_check(html_path: Path, screenshot: Path) -> dict:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Debian chromium ({CHROMIUM}) is not installed")
    problems, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_path.resolve().as_uri(), wait_until="load")
            facts = page.evaluate("""() => ({
                title: document.title,
                images: document.images.length,
                broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length,
                sections: [...document.querySelectorAll('section h2')].map(h => h.textContent.trim()),
                status: (document.querySelector('#run-status, #trend-status') || {}).textContent,
                flows: document.querySelectorAll('.flow-row').length,
                measurements: document.querySelectorAll('.meas').length,
                clauses: [...document.querySelectorAll('.clause-row')].map(r => [r.dataset.clause, r.dataset.status]),
                cjk_font: document.fonts.check('16px "Noto Sans CJK JP"', '本人確認'),
                width: document.documentElement.scrollWidth,
            })""")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    facts["problems"] = problems
    facts["external"] = [u for u in requests if not u.startswith(("file:", "data:"))]
    return facts


def _keep(screenshot: Path) -> None:
    """Also keep the screenshot where CI can collect it, if asked (FACEHIL_ARTIFACTS)."""
    dest = os.environ.get("FACEHIL_ARTIFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(dest) / screenshot.name)


def test_run_report_in_headless_chromium(populated, tmp_path):
    url, ids = populated
    out = tmp_path / "report.html"
    with RecordStore(url) as store:
        write_run_report(store, out, run_id=ids[-1])
    shot = tmp_path / "report.png"
    facts = _chromium_page_check(out, shot)
    assert facts["problems"] == [] and facts["external"] == []
    assert facts["title"].startswith(f"facehil run #{ids[-1]}")
    assert facts["status"] == "FAILED"
    assert facts["images"] == 8 and facts["broken"] == 0
    assert facts["flows"] == len(FLOWS) and facts["measurements"] == 6
    assert facts["sections"][:4] == ["Run", "Conformance to the notice, clause by clause", "Results per flow",
                                     "Measurements against limits"]
    assert {"Latency distributions", "Face-match scores", "Failures", "All scenarios"} <= set(facts["sections"])
    assert facts["width"] <= 1280  # nothing overflows sideways
    clauses = dict(facts["clauses"])
    assert list(clauses) == [f"N{i}" for i in range(1, 21)]
    assert clauses["N1"] == clauses["N10"] == clauses["N16"] == "pass" and clauses["N12"] == "fail"
    assert clauses["N3"] == clauses["N13"] == "untested"
    assert facts["cjk_font"], "no Japanese font for the clause texts (Debian fonts-noto-cjk)"
    img = Image.open(shot)
    assert img.width == 1280 and img.height > 2000
    _keep(shot)


def test_trend_page_in_headless_chromium(populated, tmp_path):
    url, _ids = populated
    out = tmp_path / "trend.html"
    with RecordStore(url) as store:
        out.write_text(render_trend_report(store, last=30))
    shot = tmp_path / "trend.png"
    facts = _chromium_page_check(out, shot)
    assert facts["problems"] == [] and facts["external"] == []
    assert facts["status"].strip() == "1 REGRESSION" and facts["broken"] == 0 and facts["images"] == 7
    assert facts["width"] <= 1280
    _keep(shot)
