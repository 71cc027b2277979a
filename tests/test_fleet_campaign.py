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

CARDS = ["p001", "p002", "p003"]  # the first three usable cards of the stations' small placer deck
SEED = 5
PLAN = f"""
[campaign]
seed = {SEED}
max_cards = 3
[genuine]
conditions = ["nominal"]
[impostors]
random_per_card = 0
hard_per_card = 0
[attacks]
species = ["print"]
"""
LIMITS = {"frr": {"name": "frr", "max": 0.5, "confidence": 0.6}}
STATION_LIMITS = """
[campaign.limits]
confidence = 0.6
frr = 0.9
"""


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


def test_the_worker_runs_a_shard_with_its_own_facehil():
    from harness.fleet_worker import campaign_command

    assert campaign_command(["py", "-m", "harness.cli", "run"]) == ["py", "-m", "harness.cli", "campaign", "run"]
    assert campaign_command(["nice", "-n", "5", "facehil", "run"]) == ["nice", "-n", "5", "facehil", "campaign", "run"]


@pytest.mark.parametrize("plan, message", [
    ('[genuine]\nconditions = ["nominal"]\n', "the plan lists no [campaign] cards: list them, or give --station FILE"),
    ("[campaign]\nseeds = 3\n", "campaign.seeds: unknown key"),
    ('[campaign]\ncards = ["p001"]\n', "no rigs to run on"),
])
def test_bad_campaign_is_refused_before_anything_is_queued(tmp_path, plan, message):
    from typer.testing import CliRunner

    from harness.cli import app

    path = tmp_path / "plan.toml"
    path.write_text(plan)
    res = CliRunner().invoke(app, ["fleet", "campaign", "--plan", str(path), "--broker", "redis://127.0.0.1:1/0",
                                   "--db", f"sqlite:///{tmp_path / 'fleet.db'}"], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and message in res.output, res.output


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
    from harness.campaign.report import write_report

    html = write_report(tmp_path / "report", s).read_text()
    assert 'id="missing-shards"' in html and "shard 2/3 on rig-b" in html and "job quarantined" in html
    assert [r.job_id for r in merged.missing] == ["j1", "j2"]
    assert merged.reasons["j1"] == "job quarantined: health check exited 1"
    assert "aborted" in merged.reasons["j2"]
    assert s["transactions"] == 8 and s["stopped_by"] == "incomplete"  # the partial shard is not mixed in
    assert [m["rig"] for m in s["missing_shards"]] == ["rig-b", "rig-c"]
    assert {v["verdict"] for v in s["verdicts"]} == {"INCONCLUSIVE"}  # PASS on 8 of 3 cards' data is not claimed
    assert run.status == "failed" and "shard 2/3 (rig-b" in run.abort_reason


# -- the fleet ---------------------------------------------------------------------------------

DB_SECRET = "pw-5be0c1d9"
# a real health check, kept to the reader answering idle in face mode (the rig's round-trip limit of
# 200 ms is what a loaded test machine misses): the campaign is what is tested here
HEALTH = "nightly -k test_reader_answers"


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
    # rig controllers on TCP (a lab's Ethernet rig): a pty number another process still holds
    # open from an earlier station would garble the rig's replies. A small deck starts faster.
    env.start({"rig-a": "sim", "rig-b": "sim"}, health=HEALTH, options={"rig_transport": "socket", "deck_size": 4})
    for station in env.stations.values():  # what the lab's station files say; read by each job
        station.write_text(station.read_text() + STATION_LIMITS)
    try:
        yield env
    finally:
        for w in env.workers.values():  # warm shutdowns side by side, then wait for each
            if w.alive():
                w.proc.terminate()
        env.stop()


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_campaign_split_over_two_rigs_merges_into_one_run(fleet, tmp_path):
    """rig-a and rig-b run their shards; a third rig, registered but never served (its host is
    down), is selected too: its shard is reported missing, never dropped."""
    import subprocess

    from sqlalchemy import select

    from fleetenv import CLI, batch_id, cli_env, wait_until
    from harness.campaign.metrics import summarize_run
    from harness.fleet_db import Job
    from harness.fleet_worker import file_sha256

    db = fleet.db()
    db.register_rig("rig-down", tags=["sim"], host="nowhere", station_file="/nonexistent", station_hash=None,
                    worker="nowhere:1", heartbeat_interval_s=1.0)
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    # the plan names no cards: they are the deck's, from a rig's station file
    argv = [*CLI, "fleet", "campaign", "--plan", str(plan), "--station", str(fleet.stations["rig-a"]),
            "--rigs", "sim", "--broker", fleet.redis.url,
            "--deadline", "240", "--poll", "0.5"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(fleet.db_url))
    try:
        def down_job():
            with db.session() as s:
                return s.scalars(select(Job).where(Job.rig == "rig-down", Job.suite == "campaign")).first()
        job = wait_until(down_job, 60, "the down rig's shard to be enqueued")
        # what `fleet campaign` does itself when the deadline passes, without waiting for it
        db.finish_job(job.id, "lost", detail="never started before the deadline (240 s)")
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = f"{stdout[-4000:]}\n{stderr[-2000:]}\n{fleet.diagnose()}"
    assert proc.returncode == 1, out  # a shard is missing
    jobs = db.jobs(batch_id(stdout))
    assert [(j.rig, j.suite, j.state) for j in jobs] == [("rig-a", "campaign", "passed"),
                                                         ("rig-b", "campaign", "passed"),
                                                         ("rig-down", "campaign", "lost")], out
    missing_cards = jobs[2].args["cards"]
    assert f"rig-down (cards {', '.join(missing_cards)}) MISSING: job lost: never started" in stdout, out
    assert "INCOMPLETE" in stdout
    ran = jobs[:2]
    shard_runs = [crec.load_campaign(db.store, j.run_ids[-1]) for j in ran]
    cards = [{t["card"] for t in camp.schedule} for _, camp, _ in shard_runs]
    assert sorted([*(c for cs in cards for c in cs), *missing_cards]) == CARDS  # each card in one shard
    for job, (run, camp, rows) in zip(ran, shard_runs):
        assert run.station_file_hash == file_sha256(fleet.stations[job.rig])  # run on its own rig
        assert camp.seed == SEED and camp.stopped_by == "done" and len(rows) == len(camp.schedule) == 2
        assert set(job.args["cards"]) == {t["card"] for t in camp.schedule}
    merged_id = int(stdout.split("into campaign run ")[1].split()[0])
    s = summarize_run(db.store, merged_id)
    assert s["transactions"] == sum(len(rows) for _, _, rows in shard_runs) == 4
    assert s["plan"]["merged_from"] == [j.run_ids[-1] for j in ran]
    assert [(m["rig"], m["cards"]) for m in s["missing_shards"]] == [("rig-down", missing_cards)]
    assert Counter(r["card"] for r in crec.load_campaign(db.store, merged_id)[2]) == \
        {c: 2 for c in CARDS if c not in missing_cards}
    assert s["verdicts"] and "PASS" not in {v["verdict"] for v in s["verdicts"]}
    assert db.store.load_run(merged_id).run.status == "failed"
    assert DB_SECRET not in stdout + stderr  # the password went through the environment only
