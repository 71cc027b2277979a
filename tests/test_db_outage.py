"""The records database going away, on a PostgreSQL 15 cluster of this module's own (the
session's shared cluster must stay up for the other tests):

- stopped (`pg_ctl stop`) in the middle of a `facehil run` on the simulated station: a scenario
  finished during an outage is written once the database is back, one finished during an
  outage that lasts to the end is named and the run exits 6;
- paused (SIGSTOP, so connections hang instead of failing): a connect gives up after its
  timeout, and a fleet worker whose lease cannot be renewed kills its suite before the lease
  runs out (hardware.md section 8, "Leases, not locks").
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from rich.console import Console
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from fleetenv import FAKE_RUN, wait_until
from harness.commands.run import RunOptions, run_suite
from harness.fleet import BrokerSettings
from harness.fleet_db import FleetDB
from harness.fleet_worker import JobRunner, WorkerConfig, file_sha256
from harness.records import CONNECT_TIMEOUT_ENV, RecordsError, RecordStore
from harness.recording import RECORDS_LOST_EXIT, WRITE_TIMEOUT_ENV
from harness.suites import SUITES, Suite
from pgcluster import PgCluster, find_pg_bin, start_cluster

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]


class OutageCluster:
    """A throwaway cluster a test may stop or pause; `ensure_up` puts it back."""

    def __init__(self, cluster: PgCluster):
        self.cluster = cluster
        self.stopped = False
        self.paused: list[psutil.Process] = []

    def _postmaster(self) -> psutil.Process:
        return psutil.Process(int((self.cluster.data_dir / "postmaster.pid").read_text().split()[0]))

    def pause(self) -> None:
        """SIGSTOP the postmaster first (no new backends), then every backend and helper it has
        then; one that exits meanwhile (a closing connection's backend) needs no pausing."""
        postmaster = self._postmaster()
        postmaster.suspend()
        self.paused.append(postmaster)
        for p in postmaster.children(recursive=True):
            try:
                p.suspend()
            except psutil.NoSuchProcess:
                continue
            self.paused.append(p)

    def resume(self) -> None:
        for p in self.paused:
            try:
                p.resume()
            except psutil.Error:
                pass
        self.paused = []

    def stop(self) -> None:
        self.cluster._run(str(self.cluster.bin_dir / "pg_ctl"), "-D", str(self.cluster.data_dir), "-m", "fast",
                          "-w", "stop")
        self.stopped = True

    def start(self) -> None:
        self.cluster.start()
        self.stopped = False

    def ensure_up(self) -> None:
        self.resume()
        if self.stopped:
            self.start()


@pytest.fixture(scope="module")
def own_cluster():
    if find_pg_bin() is None:
        pytest.skip("PostgreSQL 15 (initdb, pg_ctl) is not installed")
    outage = OutageCluster(start_cluster())
    try:
        yield outage
    finally:
        outage.resume()
        outage.cluster.stop()
        shutil.rmtree(outage.cluster.root, ignore_errors=True)


@pytest.fixture
def outage(own_cluster):
    own_cluster.ensure_up()
    yield own_cluster
    own_cluster.ensure_up()


# ---------------------------------------------------------------------------------------------
# A run that outlives its database

GATED_SUITE = """
import os, pathlib, time

GATES = pathlib.Path(os.environ["OUTAGE_GATES"])

def _wait(name):
    deadline = time.monotonic() + 120
    while not (GATES / name).exists():
        assert time.monotonic() < deadline, f"gate {name} never opened"
        time.sleep(0.05)

def test_a_station(station):  # starts the simulated station: a real run
    assert station is not None

def test_b_during_outage():
    _wait("b")

def test_c_after_restart():
    _wait("c")

def test_d_outage_to_the_end():
    _wait("d")
"""


def _journal(path: Path) -> dict[str, bool | None]:
    if not path.exists():
        return {}
    return {(e := json.loads(line))["nodeid"].rsplit("::", 1)[-1]: e["recorded"]
            for line in path.read_text().splitlines() if line.strip()}


def _run_in_background(suite: str, url: str, tmp_path: Path, journal: Path):
    """`facehil run SUITE` recording into ``url`` on a thread: (thread, {"result": RunResult}, terminal)."""
    out = io.StringIO()
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(result=run_suite(
        RunOptions(suite=suite, db=url, log_path=tmp_path / "pytest.log", results_path=journal),
        out=Console(file=out, width=400))), daemon=True)
    runner.start()
    return runner, box, out


def test_run_through_a_stopped_database_keeps_what_it_can_and_names_what_it_lost(outage, tmp_path, monkeypatch):
    root = tmp_path / "suite"
    root.mkdir()
    (root / "test_gated.py").write_text(GATED_SUITE)
    monkeypatch.setitem(SUITES, "gated", Suite(name="gated", description="gated", files=("test_gated.py",), root=root))
    gates = tmp_path / "gates"
    gates.mkdir()
    monkeypatch.setenv("OUTAGE_GATES", str(gates))
    url = outage.cluster.create_database()
    journal = tmp_path / "results.jsonl"
    runner, box, out = _run_in_background("gated", url, tmp_path, journal)
    probe = create_engine(url, poolclass=NullPool)

    def recorded() -> list[str]:
        with probe.connect() as c:
            return [n.rsplit("::", 1)[-1] for n in c.execute(text("SELECT nodeid FROM scenarios ORDER BY id")).scalars()]

    try:
        wait_until(lambda: "test_a_station" in _journal(journal), 180, "the first scenario to finish")
        assert recorded() == ["test_a_station"]
        outage.stop()
        (gates / "b").touch()
        wait_until(lambda: "test_b_during_outage" in _journal(journal), 60, "test_b to finish")
        assert _journal(journal)["test_b_during_outage"] is False  # kept, not yet written
        outage.start()
        (gates / "c").touch()
        wait_until(lambda: "test_c_after_restart" in _journal(journal), 60, "test_c to finish")
        # the scenario finished during the outage was written once the database was back
        assert recorded() == ["test_a_station", "test_b_during_outage", "test_c_after_restart"]
        outage.stop()
        (gates / "d").touch()
        runner.join(timeout=120)
        assert not runner.is_alive(), out.getvalue()
    finally:
        for gate in "bcd":
            (gates / gate).touch()
        runner.join(timeout=120)
        probe.dispose()
    result, text_out = box["result"], out.getvalue()
    assert result.exit_code == RECORDS_LOST_EXIT, text_out
    [lost] = result.lost
    assert lost.endswith("test_gated.py::test_d_outage_to_the_end")
    assert f"NOT RECORDED: {lost}" in text_out
    assert f"NOT RECORDED: {lost}" in (tmp_path / "pytest.log").read_text()
    outage.start()
    assert recorded() == ["test_a_station", "test_b_during_outage", "test_c_after_restart"]
    with RecordStore(url) as store:  # the run could not be finished: opening marks it aborted
        run = store.load_run(result.run_id).run
        assert run.status == "aborted", run.abort_reason


# ---------------------------------------------------------------------------------------------
# A paused database


def test_connect_to_a_paused_database_times_out(outage, monkeypatch):
    url = outage.cluster.create_database()
    monkeypatch.setenv(CONNECT_TIMEOUT_ENV, "2")
    outage.pause()
    box: dict = {}

    def open_store() -> None:
        started = time.monotonic()
        try:
            RecordStore(url).close()
        except RecordsError as exc:
            box["error"] = exc
        box["elapsed_s"] = time.monotonic() - started

    opener = threading.Thread(target=open_store, daemon=True)
    opener.start()
    opener.join(timeout=15)
    outage.resume()
    assert not opener.is_alive(), "opening a store on a paused database hung (no connect timeout)"
    assert "error" in box and "timeout" in str(box["error"]).lower(), box
    assert box["elapsed_s"] < 8, box


PAUSED_SUITE = """
import os, pathlib, time

GATES = pathlib.Path(os.environ["OUTAGE_GATES"])

def test_a_before():
    pass

def test_b_paused():
    deadline = time.monotonic() + 120
    while not (GATES / "b").exists():
        assert time.monotonic() < deadline, "gate b never opened"
        time.sleep(0.05)

def test_c_paused():
    pass
"""


def test_run_through_a_paused_database_ends_and_names_what_it_lost(outage, tmp_path, monkeypatch):
    """A database that stops answering an open connection (SIGSTOP) cannot hang a stand-alone run:
    each write is bounded (FACEHIL_DB_WRITE_TIMEOUT_S), the run ends, exits RECORDS_LOST_EXIT and
    names the scenarios it could not write; what was written before the pause is kept, once."""
    root = tmp_path / "suite"
    root.mkdir()
    (root / "test_paused.py").write_text(PAUSED_SUITE)
    monkeypatch.setitem(SUITES, "paused", Suite(name="paused", description="paused", files=("test_paused.py",),
                                                root=root))
    gates = tmp_path / "gates"
    gates.mkdir()
    monkeypatch.setenv("OUTAGE_GATES", str(gates))
    monkeypatch.setenv(WRITE_TIMEOUT_ENV, "2")
    url = outage.cluster.create_database()
    journal = tmp_path / "results.jsonl"
    runner, box, out = _run_in_background("paused", url, tmp_path, journal)
    try:
        wait_until(lambda: "test_a_before" in _journal(journal), 60, "the first scenario to finish")
        outage.pause()
        paused_at = time.monotonic()
        (gates / "b").touch()
        runner.join(timeout=60)
        ended_after_s = time.monotonic() - paused_at
        assert not runner.is_alive(), f"the run hung on the paused database:\n{out.getvalue()}"
    finally:
        (gates / "b").touch()
        outage.resume()
        runner.join(timeout=60)
    result, text_out = box["result"], out.getvalue()
    assert result.exit_code == RECORDS_LOST_EXIT, text_out
    assert [n.rsplit("::", 1)[-1] for n in result.lost] == ["test_b_paused", "test_c_paused"], result.lost
    for nodeid in result.lost:
        assert f"NOT RECORDED: {nodeid}" in text_out
    probe = create_engine(url, poolclass=NullPool)
    try:
        with probe.connect() as c:
            names = [n.rsplit("::", 1)[-1] for n in c.execute(text("SELECT nodeid FROM scenarios ORDER BY id")).scalars()]
    finally:
        probe.dispose()
    assert names == ["test_a_before"], names
    # three bounded waits at most (b, the final retry of b, the run's finish): not a hang
    print(f"the run ended {ended_after_s:.1f} s after the database paused")
    assert ended_after_s < 30, ended_after_s


def test_paused_database_kills_the_suite_before_its_lease_runs_out(outage, tmp_path, monkeypatch):
    ttl_s = 3.0
    station = tmp_path / "station.toml"
    station.write_text('[station]\nname = "rig-a"\n')
    fake = tmp_path / "fake_run.py"
    fake.write_text(FAKE_RUN)
    url = outage.cluster.create_database()
    cfg = WorkerConfig(rig="rig-a", station_file=str(station), db_url=url, broker=BrokerSettings("redis://unused"),
                       run_command=[sys.executable, str(fake)], lease_ttl_s=ttl_s, log_dir=str(tmp_path / "logs"))
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_PID_FILE", str(pids))
    monkeypatch.setenv("FAKE_SUITE_SLEEP_S", "120")
    with FleetDB.open(url) as db:
        db.register_rig("rig-a", tags=[], host="h", station_file=str(station), station_hash=file_sha256(station),
                        worker="w", heartbeat_interval_s=10)
        db.add_job("j1", "b1", "rig-a", "nightly", {}, 600)
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(state=JobRunner(cfg).run("j1")), daemon=True)
    runner.start()
    try:
        suite_pid = wait_until(lambda: next((int(line.split()[1]) for line in pids.read_text().splitlines()
                                             if line.startswith("suite")), None) if pids.exists() else None,
                               60, "the suite to start")
        time.sleep(ttl_s / 2)  # at least one renewal while the suite runs
        assert psutil.pid_exists(suite_pid)
        outage.pause()
        paused_at = time.monotonic()
        wait_until(lambda: not psutil.pid_exists(suite_pid) or psutil.Process(suite_pid).status() == "zombie",
                   ttl_s * 3, "the suite to be killed", poll_s=0.02)
        killed_after_s = time.monotonic() - paused_at
    finally:
        outage.resume()
        runner.join(timeout=60)
    # the lease counts from the start of the last renewal, before the pause: the suite is dead
    # within one TTL of the pause (plus the 0.5 s this busy machine may take to schedule it)
    assert killed_after_s <= ttl_s + 0.5, killed_after_s
    assert box.get("state") == "aborted", box
    with FleetDB.open(url) as db:
        job = db.job("j1")
        assert "could not be renewed before it ran out" in job.detail, job.detail
        assert not db.lease("rig-a").live
    print(f"suite killed {killed_after_s:.2f} s after the database paused (lease TTL {ttl_s} s)")
