"""Rig registry, leases and fleet jobs in the records DB (harness/fleet_db.py), on SQLite and on
the throwaway PostgreSQL 15 cluster: expiry, contention between processes, rig states, and
how `follow` reports a rig that never answers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
from alembic.script import ScriptDirectory

from harness.fleet import Batch, batch_passed, follow
from harness.fleet_db import FleetDB, FleetError, effective_state
from harness.records import alembic_config


def _register(db: FleetDB, name: str, tags=("sim",), interval_s: float = 10.0, worker: str = "w") -> None:
    db.register_rig(name, tags=list(tags), host="h", station_file=f"/{name}.toml", station_hash=None,
                    worker=worker, heartbeat_interval_s=interval_s)


@pytest.fixture
def fleet(db_url):
    db = FleetDB.open(db_url)
    yield db
    db.close()


def test_migrations_have_one_head():
    # the fleet revision sits on the records chain: two heads would stop every store from opening
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, heads


def test_lease_is_exclusive_renewable_and_released_only_by_its_holder(fleet):
    _register(fleet, "rig-a")
    assert fleet.acquire("rig-a", "h:1", "job-1", ttl_s=30)
    assert not fleet.acquire("rig-a", "h:2", "job-2", ttl_s=30)
    assert fleet.acquire("rig-a", "h:1", "job-1", ttl_s=30)  # re-taking our own lease is idempotent
    assert not fleet.renew("rig-a", "h:2", "job-2", ttl_s=30)
    assert fleet.renew("rig-a", "h:1", "job-1", ttl_s=30)
    assert not fleet.release("rig-a", "h:2", "job-2")
    info = fleet.lease("rig-a")
    assert (info.holder, info.job_id, info.live) == ("h:1", "job-1", True)
    assert fleet.release("rig-a", "h:1", "job-1")
    assert not fleet.lease("rig-a").live
    assert fleet.acquire("rig-a", "h:2", "job-2", ttl_s=30)


def test_dead_holders_lease_expires_by_itself(fleet):
    _register(fleet, "rig-a")
    assert fleet.acquire("rig-a", "h:dead", "job-1", ttl_s=0.3)
    deadline = time.monotonic() + 10
    while fleet.lease("rig-a").live:  # nobody releases it: the holder is "dead"
        assert time.monotonic() < deadline, "lease never expired"
        time.sleep(0.1)
    assert fleet.lease("rig-a").holder == "h:dead"  # stale row, but not a lock
    assert fleet.acquire("rig-a", "h:new", "job-2", ttl_s=30)
    assert not fleet.renew("rig-a", "h:dead", "job-1", ttl_s=30)  # the old holder learns it lost the rig
    assert not fleet.release("rig-a", "h:dead", "job-1")
    assert fleet.lease("rig-a").holder == "h:new"


def test_unregistered_rig_has_no_lease(fleet):
    with pytest.raises(FleetError, match="not registered"):
        fleet.acquire("nope", "h:1", "job", ttl_s=5)


_CONTENDER = textwrap.dedent("""
    import json, sys
    from harness.fleet_db import FleetDB
    url, holder, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    db = FleetDB.open(url, mark_stale=False)
    print("ready", flush=True)
    sys.stdin.readline()
    wins = [i for i in range(n) if db.acquire(f"rig-{i}", holder, f"job-{holder}-{i}", ttl_s=60)]
    print(json.dumps(wins), flush=True)
    db.close()
""")


def test_two_processes_contending_never_share_a_rig(fleet, db_url):
    n = 40
    for i in range(n):
        _register(fleet, f"rig-{i}")
    procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, db_url, holder, str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for holder in ("p1", "p2")]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # release both at once
            p.stdin.write("go\n")
            p.stdin.flush()
        wins = {holder: set(json.loads(p.stdout.readline())) for holder, p in zip(("p1", "p2"), procs)}
    finally:
        for p in procs:
            p.wait(timeout=60)
    assert not wins["p1"] & wins["p2"], "a rig was granted to both processes"
    assert wins["p1"] | wins["p2"] == set(range(n)), "a free rig was granted to nobody"
    for i in range(n):
        holder = fleet.lease(f"rig-{i}").holder
        assert holder == ("p1" if i in wins["p1"] else "p2")


def test_rig_states_follow_heartbeat_lease_and_quarantine(fleet):
    _register(fleet, "rig-a", interval_s=0.1)
    [st] = fleet.status()
    assert st.state == "online"
    fleet.acquire("rig-a", "h:1", "job-1", ttl_s=30)
    assert fleet.status()[0].state == "busy"
    time.sleep(0.5)  # more than 3 missed heartbeats of 0.1 s
    assert fleet.status()[0].state == "offline"
    assert fleet.heartbeat("rig-a", "w")
    assert not fleet.heartbeat("rig-a", "someone-else")
    fleet.quarantine("rig-a", "health check failed")
    fleet.set_rig_state("rig-a", "online")  # does not lift a quarantine
    st = fleet.status()[0]
    assert (st.state, st.quarantine_reason) == ("quarantined", "health check failed")
    _register(fleet, "rig-a")  # a worker restarting keeps the quarantine
    assert fleet.status()[0].state == "quarantined"
    assert fleet.clear_quarantine("rig-a")
    assert fleet.status()[0].state in ("online", "busy")


def test_effective_state_of_a_never_seen_rig_is_offline(fleet):
    _register(fleet, "rig-a")
    [rig] = fleet.rigs()
    rig.heartbeat_at = None
    assert effective_state(rig, lease_live=False, heartbeat_age_s=None) == "offline"


def test_select_rigs_by_name_and_tag(fleet):
    _register(fleet, "rig-a", tags=("lab1", "fw14"))
    _register(fleet, "rig-b", tags=("lab1",))
    _register(fleet, "rig-c", tags=("lab2",))
    assert [r.name for r in fleet.select_rigs(None)] == ["rig-a", "rig-b", "rig-c"]
    assert [r.name for r in fleet.select_rigs(["lab1"])] == ["rig-a", "rig-b"]
    assert [r.name for r in fleet.select_rigs(["rig-c", "fw14"])] == ["rig-a", "rig-c"]
    with pytest.raises(FleetError, match="no rig is named or tagged 'lab3'"):
        fleet.select_rigs(["lab3"])


def test_job_lifecycle_is_idempotent(fleet):
    _register(fleet, "rig-a")
    fleet.add_job("j1", "b1", "rig-a", "nightly", {"keyword": "health"}, deadline_s=60)
    job = fleet.start_attempt("j1", "h:1")
    assert (job.state, job.attempts) == ("running", 1)
    assert fleet.start_attempt("j1", "h:2").attempts == 2  # a re-delivery is a second attempt
    assert fleet.finish_job("j1", "passed")
    assert not fleet.finish_job("j1", "lost")  # a finished job keeps its outcome
    assert fleet.start_attempt("j1", "h:3") is None  # and is never run again
    assert fleet.job("j1").state == "passed"


def test_follow_reports_a_rig_that_never_answers(fleet):
    _register(fleet, "rig-a")
    _register(fleet, "rig-b")
    fleet.add_job("ja", "b1", "rig-a", "nightly", None, deadline_s=3600)
    fleet.add_job("jb", "b1", "rig-b", "nightly", None, deadline_s=0.2)
    fleet.start_attempt("ja", "h:1")
    fleet.finish_job("ja", "passed")
    snaps = list(follow(fleet, Batch("b1", "nightly", [("rig-a", "ja"), ("rig-b", "jb")], 0.2), poll_s=0.1))
    assert snaps[-1].done
    states = {j.rig: (j.state, j.detail) for j in snaps[-1].jobs}
    assert states["rig-a"] == ("passed", None)
    assert states["rig-b"][0] == "lost" and "never started" in states["rig-b"][1]
    assert not batch_passed(snaps[-1].jobs)


def test_lease_times_come_from_one_clock(fleet):
    _register(fleet, "rig-a")
    before = fleet.now()
    fleet.acquire("rig-a", "h:1", "job-1", ttl_s=60)
    info = fleet.lease("rig-a")
    assert before + timedelta(seconds=59) <= info.expires_at <= fleet.now() + timedelta(seconds=60)
