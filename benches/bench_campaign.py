"""The default (nightly-size) campaign plan on the simulated station, and firmware 1.5.0 against 1.6.0.

    .venv/bin/python -m pytest benches/bench_campaign.py -s -p no:cacheprovider

Reports the transactions per minute, the wall time of the default plan (goal: at most 10
minutes, the plan's own time budget) and the interval widths it reaches; the reference
reader's FRR, FAR (random and hard impostors), APCER per species and transaction time with
their intervals; and `campaign compare` of firmware 1.5.0 (no presentation-attack detection)
against 1.6.0 on a smaller plan (FACEHIL_CAMPAIGN_COMPARE_CARDS cards, default 4).
Needs a real face dataset (FACEHIL_FACES).
"""

from __future__ import annotations

import os
import time

import pytest

from harness.campaign.compare import compare_runs
from harness.campaign.metrics import summarize_run
from harness.campaign.plan import DEFAULT_PLAN, parse_plan
from harness.campaign.session import open_devices, start_campaign
from harness.config import load_station
from harness.deck import load_deck
from harness.facedata import resolve_faces
from harness.records import RecordStore

WALL_GOAL_S = 600.0


def _campaign(tmp_path, db: str, firmware: str, plan_dict: dict) -> tuple[int, float]:
    from sim.station import running_station

    with running_station(tmp_path / f"station-{firmware}", private_pcscd=True, firmware=firmware,
                         options={"place_card": False}) as path:
        station = load_station(path)
        started = time.monotonic()
        with RecordStore(db) as store, open_devices(station) as devices:
            run_id = start_campaign(store, station, parse_plan(plan_dict), load_deck(station), devices)
        return run_id, time.monotonic() - started


def _pct(r: dict) -> str:
    return f"{100 * r['value']:.2f}% [{100 * r['ci'][0]:.2f}, {100 * r['ci'][1]:.2f}] ({r['errors']}/{r['trials']})"


@pytest.mark.timeout(1800)
def test_default_plan(tmp_path, goals):
    if resolve_faces(None).low_fidelity:
        pytest.skip("needs a real face dataset (FACEHIL_FACES)")
    db = f"sqlite:///{tmp_path / 'bench.db'}"
    run_id, wall_s = _campaign(tmp_path, db, "1.6.0", DEFAULT_PLAN)
    with RecordStore(db) as store:
        s = summarize_run(store, run_id)
    per_min = s["transactions"] / (wall_s / 60.0)
    print(f"\ndefault plan on 1.6.0: {s['transactions']} of {s['scheduled']} transactions in {wall_s:.0f} s "
          f"(stopped by {s['stopped_by']}), {per_min:.1f} per minute, seed {s['seed']}")
    for name, r in s["rates"].items():
        print(f"  {name:14} {_pct(r)}  width {100 * (r['ci'][1] - r['ci'][0]):.1f} pp")
        goals(f"campaign_{name}_ci_width", 100 * (r["ci"][1] - r["ci"][0]), "reported", "pp", True)
    g = s["times"]["genuine"]
    print(f"  genuine transaction time: median {g['median_ms']:.0f} ms {g.get('median_ci_ms')}, "
          f"p90 {g['p90_ms']:.0f} ms, p95 {g['p95_ms']:.0f} ms")
    goals("campaign_transactions_per_minute", per_min, "reported", "/min", True)
    goals("campaign_default_plan_wall_s", wall_s, f"<= {WALL_GOAL_S:.0f}", "s", wall_s <= WALL_GOAL_S)
    goals("campaign_default_plan_completed", s["transactions"] / max(1, s["scheduled"]), "1.0 (within budget)", "",
          s["transactions"] == s["scheduled"])


@pytest.mark.timeout(1800)
def test_firmware_150_against_160(tmp_path, goals):
    if resolve_faces(None).low_fidelity:
        pytest.skip("needs a real face dataset (FACEHIL_FACES)")
    cards = int(os.environ.get("FACEHIL_CAMPAIGN_COMPARE_CARDS", "4"))
    plan = {**DEFAULT_PLAN, "campaign": {"max_cards": cards, "seed": 5},
            "genuine": {"conditions": ["nominal", "glasses"]}}
    db = f"sqlite:///{tmp_path / 'ab.db'}"
    a, _ = _campaign(tmp_path, db, "1.5.0", plan)
    b, _ = _campaign(tmp_path, db, "1.6.0", plan)
    with RecordStore(db) as store:
        result = compare_runs(store, a, b)
    print("\ncampaign compare 1.5.0 (A) -> 1.6.0 (B):")
    for line in result["lines"]:
        print(f"  {line['figure']:24} A {line['a']:>16}  B {line['b']:>16}  B-A {line['diff']:>18}  "
              f"CI {line['ci']:>24}  p {line['p']:>7}  {line['flag']}")
    flags = {x["figure"]: x["flag"] for x in result["lines"]}
    goals("campaign_compare_apcer_print_improves", 1.0 if flags.get("apcer_print") == "IMPROVEMENT" else 0.0,
          "IMPROVEMENT (1.6.0 adds PAD)", "", flags.get("apcer_print") == "IMPROVEMENT")
