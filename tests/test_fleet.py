"""The fleet end to end, with real services on loopback: a Redis broker (AOF), a PostgreSQL 15
records database, two simulated stations (a private pcscd each) and a `facehil worker` for
each, running suites through the real `facehil run`.

The tests share one fleet and run in file order: the quarantine test breaks rig-b's station on
purpose, the killed-worker test kills rig-a's worker. The database URL carries a password (the
throwaway cluster accepts any): it must show in no command line, log or record.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import psutil

import pytest
import redis

from fleetenv import BATCH_RE, LEASE_TTL_S, Fleet, batch_id, fleet_run_popen, wait_until
from harness.fleet import rig_queue
from harness.fleet_db import FleetDB
from harness.fleet_worker import file_sha256
from harness.suites import scenarios_path
from redisserver import redis_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

# The real health check and subsets, run twice on one station where a job is re-delivered: the
# station re-issues its disposable (PIN-locked) card before each run, and presence is timed from
# an empty reader, so back-to-back runs on one rig must pass.
HEALTH = "nightly -k test_health"  # the workers' health check
SUBSET = "test_health"  # the nightly subset the fleet runs
LONG_SUBSET = "test_health or test_standard_card"  # long enough to kill mid-suite
RIGS = ("rig-a", "rig-b")
DB_SECRET = "pw-8c41f7e2"
# A killed worker's lease expires at most one TTL after its last renewal (which came before the
# kill); the margin covers this test's 0.1 s polling and a loaded machine's scheduling.
LEASE_RELEASE_MARGIN_S = 2.0


def _skip_unless_available() -> None:
    if not (scenarios_path() / "test_health.py").exists():
        pytest.skip("scenarios/test_health.py (the health scenarios) is not there yet")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed for a private pcscd per station")


@pytest.fixture(scope="module")
def fleet(redis_server, pg_cluster, tmp_path_factory):  # noqa: F811
    """Two rigs, each a simulated station served by its own worker."""
    _skip_unless_available()
    url = pg_cluster.create_database().replace("facehil@", f"facehil:{DB_SECRET}@")
    env = Fleet(tmp_path_factory.mktemp("fleet"), redis_server, url)
    env.start({"rig-a": "sim,lab1", "rig-b": "sim"}, health=HEALTH)
    try:
        yield env
    finally:
        env.stop()


def _scenario_counts(db: FleetDB) -> dict[int, tuple[str, int]]:
    runs = db.store.list_runs(1000)
    counts = db.store.scenario_counts([r.id for r in runs])
    return {r.id: (r.status, sum(counts[r.id].values())) for r in runs}


def test_nightly_subset_over_two_rigs(fleet):
    res = fleet.cli("run", "nightly", "-k", SUBSET, "--rigs", "sim", "--deadline", "240", timeout_s=300)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-2000:]}\n{fleet.diagnose()}"
    assert "2/2 rig(s) passed" in res.stdout
    db = fleet.db()
    jobs = db.jobs(batch_id(res.stdout))
    assert [(j.rig, j.state, j.attempts) for j in jobs] == [("rig-a", "passed", 1), ("rig-b", "passed", 1)]
    for job in jobs:
        data = db.store.load_run(job.run_ids[-1])
        assert data.run.status == "passed" and data.run.suite == "nightly"
        # each rig's run was made on that rig's own station
        assert data.run.station_file_hash == file_sha256(fleet.stations[job.rig])
        assert data.scenarios and all(s.flow == "health" for s in data.scenarios)
        assert job.health_run_id is not None and job.health_run_id != job.run_ids[-1]
    assert jobs[0].run_ids[-1] != jobs[1].run_ids[-1]
    assert not any(db.lease(r).live for r in RIGS)
    status = fleet.cli("status")
    assert status.returncode == 0, status.stdout
    for job in jobs:
        line = next(ln for ln in status.stdout.splitlines() if ln.strip().startswith(job.rig))
        assert "online" in line and "free" in line and f"#{job.run_ids[-1]}" in line, status.stdout


def test_firmware_other_than_asked_fails_the_job(fleet):
    db = fleet.db()
    res = fleet.cli("run", "nightly", "-k", SUBSET, "--rigs", "lab1", "--firmware", "0.0.1-never-built",
                    "--deadline", "240", timeout_s=300)
    assert res.returncode == 1, res.stdout
    [job] = db.jobs(batch_id(res.stdout))
    health = db.store.load_run(job.health_run_id).run
    assert health.reader_firmware  # the health run recorded what the reader reports
    assert job.rig == "rig-a" and job.state == "failed"
    assert job.detail == f"rig runs reader firmware {health.reader_firmware}, the job asked for 0.0.1-never-built"
    assert job.run_ids == []  # the suite did not run against the wrong build
    assert next(s for s in db.status() if s.name == "rig-a").state == "online"


def test_unknown_rig_selection_is_refused(fleet):
    res = fleet.cli("run", "nightly", "--rigs", "no-such-rig", timeout_s=60)
    assert res.returncode == 2 and "no rig is named or tagged 'no-such-rig'" in res.stdout


def test_broker_restart_keeps_queued_jobs(fleet):
    db = fleet.db()
    fleet.workers["rig-b"].stop()
    wait_until(lambda: next(s for s in db.status() if s.name == "rig-b").state == "offline", 30,
               "rig-b to show offline")
    res = fleet.cli("run", "nightly", "-k", SUBSET, "--rigs", "rig-b", "--no-follow", "--deadline", "300",
                    timeout_s=60)
    assert res.returncode == 0, res.stdout + res.stderr
    [job] = db.jobs(batch_id(res.stdout))
    assert job.state == "queued"
    broker = redis.Redis.from_url(fleet.redis.url)
    assert broker.llen(rig_queue("rig-b")) == 1
    broker.close()
    fleet.redis.restart_after_kill()  # SIGKILL: only the append-only file keeps the job
    broker = redis.Redis.from_url(fleet.redis.url)
    try:
        assert broker.llen(rig_queue("rig-b")) == 1, "the queued job did not survive the broker restart"
    finally:
        broker.close()
    fleet.workers["rig-b"].start().wait_online(db)
    done = wait_until(lambda: db.job(job.id).state not in ("queued", "running") and db.job(job.id), 240,
                      "rig-b to run the job queued before the broker restart")
    assert done.state == "passed", f"{done.detail}\n{fleet.diagnose()}"
    assert fleet.workers["rig-a"].alive(), "rig-a's worker did not survive the broker restart"


def test_failed_health_check_quarantines_the_rig(fleet):
    """Break rig-b's station (its camera dies): its health check fails, the rig is quarantined,
    its job is reported as such, and rig-a's job still passes."""
    from sim.station import sim_status

    [camera] = [p for p in sim_status(fleet.root / "rig-b") if p["name"] == "camera" and p["alive"]]
    os.killpg(camera["pid"], signal.SIGKILL)
    res = fleet.cli("run", "nightly", "-k", SUBSET, "--deadline", "240", timeout_s=300)
    assert res.returncode == 1, res.stdout
    db = fleet.db()
    jobs = {j.rig: j for j in db.jobs(batch_id(res.stdout))}
    assert jobs["rig-a"].state == "passed", jobs["rig-a"].detail
    assert jobs["rig-b"].state == "quarantined" and "health check" in jobs["rig-b"].detail
    assert jobs["rig-b"].run_ids == []  # the suite never ran on the sick rig
    health = db.store.load_run(jobs["rig-b"].health_run_id)
    assert health.run.status == "failed"
    assert any(s.outcome in ("failed", "error") for s in health.scenarios)
    assert "rig-b: quarantined" in res.stdout
    status = fleet.cli("status")
    line = next(ln for ln in status.stdout.splitlines() if ln.strip().startswith("rig-b"))
    assert "quarantined" in line, status.stdout


def _session_cmdlines(leader_pid: int) -> dict[int, bytes]:
    """The command line of every process in a worker's session (worker, pool, suite, pytest)."""
    out = {}
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == leader_pid:
                out[proc.pid] = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        except (OSError, psutil.Error):
            continue
    return out


def _journal(path: Path) -> list[str]:
    """The node ids the suite's own `facehil run` reported finished (its --results file)."""
    if not path.exists():
        return []
    return [json.loads(line)["nodeid"] for line in path.read_text().splitlines() if line.strip()]


def test_killed_worker_mid_suite(fleet):
    """hardware.md: a dead worker's lease expires by itself after --lease-ttl; the run it was
    recording is marked aborted and everything recorded before stays."""
    db = fleet.db()
    before = {rid: v for rid, v in _scenario_counts(db).items() if v[0] != "running"}
    log_path = fleet.root / "fleet-run-kill.log"
    runner = fleet_run_popen("nightly", "-k", LONG_SUBSET, "--rigs", "rig-a", "--deadline", "400",
                             broker_url=fleet.redis.url, db_url=fleet.db_url, log_path=log_path)
    try:
        batch = wait_until(lambda: BATCH_RE.search(log_path.read_text(errors="replace")), 60,
                           "`fleet run` to enqueue").group(1)
        journal_dir = fleet.root / "logs" / "rig-a"

        def suite_underway():
            [job] = db.jobs(batch)
            if job.state != "running" or job.phase != "suite" or not job.run_ids:
                return None
            finished = _journal(journal_dir / f"{job.id}-{job.attempts}-suite.results.jsonl")
            return (job, finished) if finished else None

        job, _ = wait_until(suite_underway, 240, "rig-a's suite to finish a scenario", poll_s=0.1)
        killed_run = job.run_ids[-1]
        holder = db.lease("rig-a").holder
        worker = fleet.workers["rig-a"]
        cmdlines = _session_cmdlines(worker.pid)
        assert len(cmdlines) >= 4, cmdlines  # worker, pool process, `facehil run`, pytest
        for pid, cmdline in cmdlines.items():
            assert DB_SECRET.encode() not in cmdline, f"the database password is in `ps` for pid {pid}"
        worker.kill()
        killed_at = time.monotonic()
        killed_db = db.now()
        finished = _journal(journal_dir / f"{job.id}-{job.attempts}-suite.results.jsonl")

        # the lease is not released by anyone: it expires by itself, within its TTL of the kill
        lease = db.lease("rig-a")
        assert lease.live and lease.holder == holder
        assert (lease.expires_at - killed_db).total_seconds() <= LEASE_TTL_S
        wait_until(lambda: not db.lease("rig-a").live, LEASE_TTL_S + LEASE_RELEASE_MARGIN_S,
                   "the dead worker's lease to expire", poll_s=0.1)
        released_after_s = time.monotonic() - killed_at
        print(f"lease released {released_after_s:.2f} s after the worker was killed (TTL {LEASE_TTL_S} s)")
        assert db.job(job.id).state == "running"  # nobody finished it: the job is still owed

        # the killed run is recorded as aborted; every scenario the suite saw finish is in it
        with FleetDB.open(fleet.db_url) as fresh:  # opening a store marks runs of dead processes aborted
            data = fresh.store.load_run(killed_run)
            assert data.run.status == "aborted", data.run.abort_reason
            in_db = [s.nodeid for s in data.scenarios]
            missing = [n for n in finished if n not in in_db]
            assert not missing, f"finished before the kill but not recorded: {missing} (recorded: {in_db})"
            after = _scenario_counts(fresh)
        for rid, v in before.items():
            assert after[rid] == v, f"run {rid} changed after the kill: {v} -> {after[rid]}"

        # the worker comes back (systemd Restart=always): the job is delivered again and runs
        fleet.workers["rig-a"].start().wait_online(db)
        rc = runner.wait(timeout=300)
        out = log_path.read_text(errors="replace")
        assert rc == 0, f"{out[-3000:]}\n{fleet.diagnose()}"
        final = db.job(job.id)
        assert (final.state, final.attempts) == ("passed", 2)
        assert final.run_ids[-1] != killed_run
        assert db.store.load_run(final.run_ids[-1]).run.status == "passed"
        assert not db.lease("rig-a").live
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGINT)
            runner.wait(timeout=30)


def test_database_password_is_in_no_log_or_record(fleet):
    # each worker keeps its own rotating log beside its job logs (hardware.md: job logs)
    for rig in RIGS:
        own = (fleet.root / "logs" / rig / "worker.log").read_text(errors="replace")
        assert f" on {rig}: passed" in own, own[-2000:]
    logs = [p for p in fleet.root.rglob("*") if p.is_file() and p.suffix in (".log", ".jsonl")]
    assert any(p.name.endswith(".pytest.log") for p in logs) and any(p.name.startswith("worker-") for p in logs)
    for path in logs:
        assert DB_SECRET not in path.read_text(errors="replace"), f"the database password is in {path}"
    db = fleet.db()
    runs = db.store.list_runs(1000)
    assert runs
    for run in runs:
        assert DB_SECRET not in json.dumps(run.extra), f"the database password is in run {run.id}'s extra"
        assert DB_SECRET not in (run.abort_reason or "")
    with db.session() as s:
        from harness.fleet_db import Job

        for job in s.query(Job).all():
            assert DB_SECRET not in (job.detail or ""), job.id
