"""`facehil fleet campaign`: a campaign split into one shard per rig, run on the rigs' queues and
merged into one campaign run.

The unit tests check the split (disjoint, balanced, deterministic by seed; a plan file that reads
back equal) and the merge of shards when one is missing (named; no PASS). The fleet test runs a
small plan over two rigs with the real services (Redis, PostgreSQL 15, two simulated stations
each served by a `facehil worker`) and checks the merged run holds every shard's transactions.
"""

from __future__ import annotations

import shutil
import tomllib
from collections import Counter

import pytest

from harness.campaign import records as crec
from harness.campaign.plan import Plan, parse_plan
from harness.campaign.shard import ShardResult, deal_cards, merge_shards, plan_toml, shard_plan
from harness.records import RecordStore, RunInfo
from redisserver import redis_server  # noqa: F401  (fixture)

CARDS = ["p001", "p003"]  # placer-deck cards with a holder (tests/test_campaign.py uses these too)
SEED = 5
PLAN = f"""
[campaign]
seed = {SEED}
cards = {CARDS!r}
[genuine]
conditions = ["nominal"]
[impostors]
random_per_card = 1
hard_per_card = 0
[attacks]
species = ["print"]
"""
LIMITS = {"frr": {"name": "frr", "max": 0.5, "confidence": 0.6}}


def test_shards_are_disjoint_balanced_and_fixed_by_the_seed():
    cards = [f"c{i:02d}" for i in range(11)]
    hands = deal_cards(cards, 3, seed=7)
    assert sorted(c for h in hands for c in h) == cards  # every card once
    assert sorted(len(h) for h in hands) == [3, 4, 4]
    assert deal_cards(list(reversed(cards)), 3, seed=7) == hands  # the order given does not matter
    assert any(deal_cards(cards, 3, seed=s) != hands for s in range(8, 12))  # the seed does
    assert len(deal_cards(cards[:2], 5, seed=1)) == 2  # no empty shard

    plan = Plan(max_transactions=20, max_minutes=4.0, cards=tuple(cards), max_cards=11)
    shards = shard_plan(plan, cards, ["rig-a", "rig-b", "rig-c"], seed=7)
    assert [s.rig for s in shards] == ["rig-a", "rig-b", "rig-c"] and [list(s.cards) for s in shards] == hands
    assert sum(s.plan.max_transactions for s in shards) == 20  # the count budget is shared out
    assert all(s.plan.seed == 7 and s.plan.max_minutes == 4.0 and s.plan.max_cards is None for s in shards)
    for s in shards:  # what the worker writes is the plan it was given
        assert parse_plan(tomllib.loads(plan_toml(s.plan)), "shard") == s.plan
    with pytest.raises(ValueError, match="named twice"):
        shard_plan(plan, cards, ["rig-a", "rig-a"], seed=1)


def _shard_run(store, rows, firmware="1.6.0", status="passed", stopped_by="done") -> int:
    run_id = store.start_run(RunInfo(suite=crec.SUITE, reader_firmware=firmware))
    crec.create_campaign(store, run_id, seed=SEED, plan=Plan().as_dict(),
                         schedule=[{"seq": r["seq"]} for r in rows], limits=LIMITS)
    for r in rows:
        crec.record_transaction(store, run_id, r)
    crec.set_stopped_by(store, run_id, stopped_by)
    store.finish_run(run_id, status)
    return run_id


def _genuine(holder: str, n: int) -> list[dict]:
    return [{"seq": i, "kind": "genuine", "card": holder, "holder": holder, "subject": holder,
             "condition": "nominal", "species": None, "decision": "accept", "reason": None,
             "attack_detected": False, "attempts": 1, "attempt_events": [{"outcome": "match", "score": 0.7}],
             "score": 0.7, "transaction_ms": 300.0, "total_ms": 900.0, "started_at": None, "error": None}
            for i in range(n)]


def test_a_missing_shard_is_named_and_no_verdict_passes(tmp_path):
    from harness.campaign.metrics import summarize_run

    shards = shard_plan(Plan(), ["a1", "b1", "c1"], ["rig-a", "rig-b", "rig-c"], seed=1)
    with RecordStore(f"sqlite:///{tmp_path / 'shards.db'}") as store:
        runs = [_shard_run(store, _genuine(sh.cards[0], 8)) for sh in shards[:2]]
        partial = _shard_run(store, _genuine(shards[2].cards[0], 3), status="aborted", stopped_by="interrupted")
        whole = merge_shards(store, [ShardResult(sh, f"j{i}", "passed", None, run)
                                     for i, (sh, run) in enumerate(zip(shards, runs))])
        assert not whole.missing and summarize_run(store, whole.run_id)["transactions"] == 16
        assert {v["verdict"] for v in summarize_run(store, whole.run_id)["verdicts"]} == {"PASS"}
        results = [ShardResult(shards[0], "j0", "passed", None, runs[0]),
                   ShardResult(shards[1], "j1", "quarantined", "health check exited 1", None),
                   ShardResult(shards[2], "j2", "passed", None, partial)]
        merged = merge_shards(store, results)
        s = summarize_run(store, merged.run_id)
        run = store.load_run(merged.run_id).run
    assert [r.job_id for r in merged.missing] == ["j1", "j2"]
    assert merged.reasons["j1"] == "job quarantined: health check exited 1"
    assert "aborted" in merged.reasons["j2"]
    assert s["transactions"] == 8 and s["stopped_by"] == "incomplete"  # the partial shard is not mixed in
    assert [m["rig"] for m in s["missing_shards"]] == ["rig-b", "rig-c"]
    assert {v["verdict"] for v in s["verdicts"]} == {"INCONCLUSIVE"}  # PASS on 8 of 3 cards' data is not claimed
    assert run.status == "failed" and "shard 2/3 (rig-b" in run.abort_reason


# -- the fleet ---------------------------------------------------------------------------------

DB_SECRET = "pw-5be0c1d9"


@pytest.fixture(scope="module")
def fleet(redis_server, pg_cluster, tmp_path_factory):  # noqa: F811
    from fleetenv import Fleet
    from harness.facedata import resolve_faces
    from harness.suites import scenarios_path

    if resolve_faces(None).low_fidelity:
        pytest.skip("a campaign needs a real face dataset (FACEHIL_FACES); only the packaged samples are here")
    if not (scenarios_path() / "test_health.py").exists():
        pytest.skip("scenarios/test_health.py (the workers' health check) is not there")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed for a private pcscd per station")
    url = pg_cluster.create_database().replace("facehil@", f"facehil:{DB_SECRET}@")
    env = Fleet(tmp_path_factory.mktemp("fleet-campaign"), redis_server, url)
    env.start({"rig-a": "sim", "rig-b": "sim"}, health="nightly -k test_health")
    try:
        yield env
    finally:
        env.stop()


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_campaign_split_over_two_rigs_merges_into_one_run(fleet, tmp_path):
    from fleetenv import batch_id
    from harness.campaign.metrics import summarize_run
    from harness.fleet_worker import file_sha256

    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    res = fleet.cli("campaign", "--plan", str(plan), "--rigs", "sim", "--broker", fleet.redis.url,
                    "--deadline", "240", "--poll", "0.5", timeout_s=280)
    out = f"{res.stdout[-4000:]}\n{res.stderr[-2000:]}\n{fleet.diagnose()}"
    assert "MISSING" not in res.stdout and res.returncode in (0, 1), out  # 1 only for a FAILed verdict
    db = fleet.db()
    jobs = db.jobs(batch_id(res.stdout))
    assert [(j.rig, j.suite, j.state) for j in jobs] == [("rig-a", "campaign", "passed"),
                                                         ("rig-b", "campaign", "passed")], out
    shard_runs = [crec.load_campaign(db.store, j.run_ids[-1]) for j in jobs]
    cards = [{t["card"] for t in camp.schedule} for _, camp, _ in shard_runs]
    assert sorted(c for cs in cards for c in cs) == CARDS  # one card per rig, each once
    for job, (run, camp, rows) in zip(jobs, shard_runs):
        assert run.station_file_hash == file_sha256(fleet.stations[job.rig])  # run on its own rig
        assert camp.seed == SEED and camp.stopped_by == "done" and len(rows) == len(camp.schedule) == 3
        assert set(job.args["cards"]) == {t["card"] for t in camp.schedule}
    merged_id = int(res.stdout.split("into campaign run ")[1].split()[0])
    s = summarize_run(db.store, merged_id)
    assert s["transactions"] == sum(len(rows) for _, _, rows in shard_runs) == 6
    assert s["plan"]["merged_from"] == [j.run_ids[-1] for j in jobs] and s["missing_shards"] == []
    assert Counter(r["card"] for r in crec.load_campaign(db.store, merged_id)[2]) == {c: 3 for c in CARDS}
    assert DB_SECRET not in res.stdout + res.stderr  # the password went through the environment only
