"""The worker's decisions for one job (harness/fleet_worker.JobRunner), without a broker.

The suite runner here is a stand-in for `facehil run` (which test_fleet.py uses for real): a
small script that records a run the way the records plugin does and exits with the code the
test asks for, so each branch (health failure, lost lease, killed suite, duplicate delivery,
firmware mismatch) is reached deterministically and fast.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from fleetenv import FAKE_RUN
from harness.fleet import BrokerSettings
from harness.fleet_db import FleetDB
from harness.fleet_worker import JobRunner, WorkerConfig, file_sha256, prune_logs, worker_log_handler
from harness.records import Run



@pytest.fixture
def rig(tmp_path):
    station = tmp_path / "station.toml"
    station.write_text('[station]\nname = "rig-a"\n')
    fake = tmp_path / "fake_run.py"
    fake.write_text(FAKE_RUN)
    url = f"sqlite:///{tmp_path / 'records.sqlite'}"
    cfg = WorkerConfig(rig="rig-a", station_file=str(station), db_url=url, broker=BrokerSettings("redis://unused"),
                       run_command=[sys.executable, str(fake)], lease_ttl_s=1.5, log_dir=str(tmp_path / "logs"))
    db = FleetDB.open(url)
    db.register_rig("rig-a", tags=["sim"], host="h", station_file=str(station), station_hash=file_sha256(station),
                    worker="w", heartbeat_interval_s=10)
    yield cfg, db
    db.close()


def _job(db: FleetDB, job_id: str = "j1", deadline_s: float = 600, **args) -> str:
    db.add_job(job_id, "b1", "rig-a", "nightly", args, deadline_s)
    return job_id


def _runs(db: FleetDB) -> list[Run]:
    return db.store.list_runs(100)


def test_health_then_suite_passes_and_releases_the_rig(rig):
    cfg, db = rig
    job_id = _job(db, keyword="card_io")
    assert JobRunner(cfg).run(job_id) == "passed"
    job = db.job(job_id)
    runs = _runs(db)
    assert [r.suite for r in runs] == ["nightly", "nightly"]  # the health check, then the suite
    assert job.health_run_id == runs[0].id and job.run_ids == [runs[1].id]
    assert (job.attempts, job.phase, job.detail) == (1, None, None)
    [st] = db.status()
    assert st.state == "online" and not st.lease.live and st.last_run.id == runs[1].id


def test_failed_health_check_quarantines_the_rig_and_reports_the_job(rig, monkeypatch):
    cfg, db = rig
    monkeypatch.setenv("FAKE_HEALTH_RC", "1")
    job_id = _job(db)
    assert JobRunner(cfg).run(job_id) == "quarantined"
    job = db.job(job_id)
    assert job.state == "quarantined" and "health check exited 1" in job.detail
    assert len(_runs(db)) == 1  # the suite never ran on a sick rig
    [st] = db.status()
    assert st.state == "quarantined" and st.quarantine_reason == job.detail and not st.lease.live
    # the next job's health check passes: the quarantine is lifted
    monkeypatch.setenv("FAKE_HEALTH_RC", "0")
    assert JobRunner(cfg).run(_job(db, "j2")) == "passed"
    assert db.status()[0].state == "online"


def test_failing_suite_fails_the_job(rig, monkeypatch):
    cfg, db = rig
    monkeypatch.setenv("FAKE_SUITE_RC", "1")
    job_id = _job(db)
    assert JobRunner(cfg).run(job_id) == "failed"
    assert "suite exited 1" in db.job(job_id).detail
    assert db.status()[0].state == "online"  # a failing reader is not a sick rig


def test_redelivered_finished_job_is_not_run_again(rig):
    cfg, db = rig
    job_id = _job(db)
    assert JobRunner(cfg).run(job_id) == "passed"
    n = len(_runs(db))
    assert JobRunner(cfg).run(job_id) == "duplicate"
    assert len(_runs(db)) == n and db.job(job_id).attempts == 1


def test_job_waits_for_a_held_rig_and_is_reported_at_its_deadline(rig):
    cfg, db = rig
    assert db.acquire("rig-a", "other:1", "other-job", ttl_s=600)
    job_id = _job(db, deadline_s=3.0)
    assert JobRunner(cfg).run(job_id) == "lost"
    job = db.job(job_id)
    assert "rig held by job other-job" in job.detail
    assert not _runs(db)  # never ran on a rig another job holds
    assert db.lease("rig-a").job_id == "other-job"


def test_lost_workers_job_runs_again_once_its_lease_expires(rig):
    cfg, db = rig
    job_id = _job(db)
    # a worker took the job and died: the job row says running, its lease is still live
    assert db.acquire("rig-a", "h:dead", job_id, ttl_s=1.0)
    assert db.start_attempt(job_id, "h:dead").attempts == 1
    assert JobRunner(cfg).run(job_id) == "passed"
    job = db.job(job_id)
    assert (job.state, job.attempts) == ("passed", 2)
    assert not db.lease("rig-a").live


def test_lost_lease_stops_the_suite(rig, monkeypatch):
    cfg, db = rig
    monkeypatch.setenv("FAKE_STEAL", "1")
    job_id = _job(db)
    assert JobRunner(cfg).run(job_id) == "aborted"
    assert "lease lost" in db.job(job_id).detail
    assert db.lease("rig-a").holder == "thief"  # ours was taken; we did not release theirs


def test_suite_killed_by_a_signal_is_aborted(rig, monkeypatch):
    cfg, db = rig
    monkeypatch.setenv("FAKE_SELF_KILL", "1")
    job_id = _job(db)
    assert JobRunner(cfg).run(job_id) == "aborted"
    job = db.job(job_id)
    assert "signal 9" in job.detail and job.run_ids
    with FleetDB.open(cfg.db_url) as again:  # opening a store marks the dead run aborted
        assert again.store.load_run(job.run_ids[-1]).run.status == "aborted"


def test_firmware_mismatch_fails_the_job_before_the_suite(rig, monkeypatch):
    cfg, db = rig
    monkeypatch.setenv("FAKE_FIRMWARE", "1.4.0")
    job_id = _job(db, firmware="1.5.0")
    assert JobRunner(cfg).run(job_id) == "failed"
    assert "firmware 1.4.0, the job asked for 1.5.0" in db.job(job_id).detail
    assert len(_runs(db)) == 1


def test_job_for_another_rig_is_refused(rig):
    cfg, db = rig
    db.register_rig("rig-b", tags=[], host="h", station_file="/b", station_hash=None, worker="w",
                    heartbeat_interval_s=10)
    db.add_job("jb", "b1", "rig-b", "nightly", None, 600)
    assert JobRunner(cfg).run("jb") == "failed"
    assert "meant for rig-b" in db.job("jb").detail
    assert not _runs(db)


def test_worker_config_round_trips_through_celery_conf(rig):
    cfg, _ = rig
    assert WorkerConfig.from_conf(cfg.to_conf()) == cfg
    assert Path(cfg.station_file).exists()


def test_job_delivered_after_its_deadline_is_reported_not_run(rig):
    cfg, db = rig
    job_id = _job(db, deadline_s=0.0)
    assert JobRunner(cfg).run(job_id) == "lost"
    assert db.job(job_id).detail == "delivered after its deadline; not run"
    assert not _runs(db)


def test_lost_records_fail_the_job_naming_them(rig, monkeypatch):
    # a suite that finished but could not write two scenarios to the database exits 6 and names
    # them ("NOT RECORDED: ..."): the job fails and says which
    cfg, db = rig
    monkeypatch.setenv("FAKE_LOST", "scenarios/test_a.py::test_one,scenarios/test_a.py::test_two[mask]")
    job_id = _job(db)
    assert JobRunner(cfg).run(job_id) == "failed"
    detail = db.job(job_id).detail
    assert "suite exited 6: 2 scenario(s) not recorded in the database" in detail
    assert "scenarios/test_a.py::test_one, scenarios/test_a.py::test_two[mask]" in detail


def test_worker_log_folder_stays_within_its_budget(rig):
    cfg, db = rig
    cfg.log_dir_max_bytes = 4096
    log_dir = Path(cfg.log_dir)
    log_dir.mkdir(parents=True)
    old = [log_dir / f"old{i}-1-suite.pytest.log" for i in range(5)]
    for i, path in enumerate(old):  # five earlier jobs' logs, 2 kB each, oldest first
        path.write_bytes(b"x" * 2048)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    assert JobRunner(cfg).run(_job(db, "j1")) == "passed"
    left = sorted(p.name for p in log_dir.iterdir())
    total = sum(p.stat().st_size for p in log_dir.iterdir())
    last_job = sum(p.stat().st_size for p in log_dir.iterdir() if p.name.startswith("j1-"))
    assert total <= cfg.log_dir_max_bytes + last_job, left
    assert not old[0].exists() and not old[1].exists(), left  # the oldest go first
    assert any(p.startswith("j1-1-suite") for p in left), left  # the newest job's logs stay


def test_database_password_stays_out_of_the_worker_log_and_command_lines(rig, pg_cluster, monkeypatch, caplog,
                                                                         tmp_path):
    # the cluster trusts every login, so any password works; it must never be shown
    cfg, _ = rig
    secret = "pw-5d1e0c9a"
    url = pg_cluster.create_database().replace("facehil@", f"facehil:{secret}@")
    cfg.db_url = url
    with FleetDB.open(url) as db:
        station = Path(cfg.station_file)
        db.register_rig("rig-a", tags=["sim"], host="h", station_file=str(station), station_hash=file_sha256(station),
                        worker="w", heartbeat_interval_s=10)
        pids = tmp_path / "pids"
        monkeypatch.setenv("FAKE_PID_FILE", str(pids))
        monkeypatch.setenv("FAKE_SUITE_SLEEP_S", "3")
        job_id = _job(db)
        cmdlines = []

        def sample() -> None:  # the suite's command line as `ps` shows it, while it runs
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(cmdlines) < 2:
                for line in pids.read_text().splitlines() if pids.exists() else []:
                    pid = int(line.split()[1])
                    if all(pid != p for p, _ in cmdlines):
                        try:
                            cmdlines.append((pid, Path(f"/proc/{pid}/cmdline").read_bytes()))
                        except OSError:
                            pass
                time.sleep(0.05)

        watcher = threading.Thread(target=sample)
        watcher.start()
        with caplog.at_level(logging.DEBUG, logger="harness"):
            assert JobRunner(cfg).run(job_id) == "passed"
        watcher.join()
        assert len(cmdlines) == 2, cmdlines  # the health check and the suite were both seen running
        for _, cmdline in cmdlines:
            assert secret.encode() not in cmdline
        assert "--station" in caplog.text and secret not in caplog.text
        for path in Path(cfg.log_dir).iterdir():
            assert secret not in path.read_text(errors="replace"), path
        assert len(db.store.list_runs(10)) == 2  # and the runs were recorded through FACEHIL_DB


def test_worker_own_log_rotates_within_its_cap(tmp_path):
    handler = worker_log_handler(tmp_path, max_bytes=10_000, backups=2)
    logger = logging.getLogger("facehil-test-worker-log")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    try:
        for i in range(2000):  # ~250 kB of log lines
            logger.info("job %d: %s", i, "x" * 100)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(tmp_path.glob("worker.log*"))
    assert [f.name for f in files] == ["worker.log", "worker.log.1", "worker.log.2"]
    assert all(f.stat().st_size <= 10_000 for f in files)
    assert "job 1999: " in (tmp_path / "worker.log").read_text()
    assert not prune_logs(tmp_path, 0)  # the job-log budget leaves the rotating log alone
