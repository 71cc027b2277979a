"""harness.records on SQLite and on a real PostgreSQL 15 cluster: schema, round trips, crash
safety (a killed writer), stale-run detection, concurrent writers."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text, update

from harness.measure import Limit, Measurements
from harness.records import (Heartbeat, RecordsError, RecordStore, Run, RunInfo, ScenarioResult,
                             alembic_config, default_db_url, host_identity, normalize_url)

WAIT_S = 60.0


def _scenario(nodeid: str, outcome: str = "passed", n: int = 3) -> ScenarioResult:
    m = Measurements()
    for i in range(n):
        m("face_auth_latency_ms", 900 + 200 * i, limit=Limit(high=1500, marginal=1200))
    m.rate("fnmr", 1, 100, high=0.05)
    m.face_match(0.72, 0.6, True, condition="mask", subject_id="s01", genuine=True)
    now = datetime.now(timezone.utc)
    return ScenarioResult(nodeid=nodeid, outcome=outcome, flow="face_auth", params={"card": "c1", "n": 2},
                          duration_ms=12.5, started_at=now, ended_at=now + timedelta(milliseconds=12.5),
                          longrepr=None if outcome == "passed" else "E   assert False",
                          measurements=[r.as_record() for r in m.results],
                          face_matches=[f.as_record() for f in m.face_matches])


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"writer exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("writer never got ready")
        time.sleep(0.02)


def test_open_migrates_to_head_and_matches_the_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from harness.records import Base

    with RecordStore(db_url) as store:
        head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
        with store.engine.connect() as conn:
            # compare the tables the loaded models declare (other modules add theirs to Base)
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": True,
                "include_name": lambda name, kind, _parent: kind != "table" or name in Base.metadata.tables})
            assert ctx.get_current_revision() == head
            assert compare_metadata(ctx, Base.metadata) == []
            if store.dialect == "sqlite":
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    with RecordStore(db_url) as again:  # a second open is a no-op
        assert again.latest_run_id() is None


def test_migrations_go_down_and_up_again(db_url):
    from alembic import command

    with RecordStore(db_url) as store:
        store.start_run(RunInfo(suite="smoke"))
    command.downgrade(alembic_config(db_url), "base")
    with RecordStore(db_url) as store:  # re-created from scratch
        assert store.latest_run_id() is None
        assert store.start_run(RunInfo(suite="smoke")) == 1


def test_a_run_round_trips(db_url):
    with RecordStore(db_url) as store:
        run_id = store.start_run(RunInfo(suite="nightly", station_name="lab-3", station_file_hash="ab" * 32,
                                         facehil_version="0.1.0", git_sha="deadbeef", card_deck=["std-1", "face-1"]))
        store.annotate_run(run_id, reader_firmware="1.4.0", reader_features=["face", "visual_fallback"],
                           dataset_hash="cd" * 32)
        first = store.record_scenario(run_id, _scenario("t.py::test_a"))
        store.record_scenario(run_id, _scenario("t.py::test_b", "failed", n=1))
        store.finish_run(run_id, "failed", exit_status=1)
        data = store.load_run(run_id)

    run = data.run
    assert (run.suite, run.status, run.exit_status, run.station_name) == ("nightly", "failed", 1, "lab-3")
    assert run.reader_firmware == "1.4.0" and run.reader_features == ["face", "visual_fallback"]
    assert run.card_deck == ["std-1", "face-1"] and run.dataset_hash == "cd" * 32
    assert run.host == host_identity().host and run.pid == os.getpid()
    assert run.started_at.tzinfo is not None and run.ended_at >= run.started_at
    assert [s.nodeid for s in data.scenarios] == ["t.py::test_a", "t.py::test_b"]
    a = data.scenarios[0]
    assert a.id == first and a.params == {"card": "c1", "n": 2} and a.flow == "face_auth"
    assert a.measurement_outcome == "MARGINAL" and a.duration_ms == 12.5
    assert data.scenarios[1].longrepr == "E   assert False"
    values = [(m.name, m.value, m.outcome) for m in data.measurements if m.scenario_id == first]
    assert values == [("face_auth_latency_ms", 900.0, "PASS"), ("face_auth_latency_ms", 1100.0, "PASS"),
                      ("face_auth_latency_ms", 1300.0, "MARGINAL"), ("fnmr", 0.01, "PASS")]
    rate = [m for m in data.measurements if m.kind == "rate"][0]
    assert (rate.errors, rate.trials, rate.high, rate.confidence) == (1, 100, 0.05, 0.95)
    assert 0.01 < rate.bound_high < 0.05
    fm = data.face_matches[0]
    assert (fm.score, fm.threshold, fm.accepted, fm.genuine, fm.condition, fm.subject_id) == \
        (0.72, 0.6, True, True, "mask", "s01")


def test_nan_values_and_long_tracebacks_are_stored_safely(db_url):
    m = Measurements()
    m.rate("fmr", 0, 0, high=0.01)  # no trials: NaN estimate
    with RecordStore(db_url) as store:
        run_id = store.start_run()
        store.record_scenario(run_id, ScenarioResult("t::x", "failed", longrepr="x" * 50_000,
                                                     measurements=[r.as_record() for r in m.results]))
        data = store.load_run(run_id)
    assert data.measurements[0].value is None and data.measurements[0].outcome == "FAIL"
    assert len(data.scenarios[0].longrepr) <= 4000 and data.scenarios[0].longrepr.endswith("(truncated)")


def test_bad_input_gets_a_clear_error(db_url):
    with RecordStore(db_url) as store:
        run_id = store.start_run()
        with pytest.raises(RecordsError, match="cannot annotate run with firmware"):
            store.annotate_run(run_id, firmware="1.0")
        with pytest.raises(RecordsError, match="unknown scenario outcome"):
            store.record_scenario(run_id, ScenarioResult("t::x", "exploded"))
        with pytest.raises(RecordsError, match="not 'running'"):
            store.finish_run(run_id, "running")
        with pytest.raises(RecordsError, match="no run 999"):
            store.load_run(999)


def test_unreachable_or_malformed_databases_raise_records_error(tmp_path):
    with pytest.raises(RecordsError, match="cannot open records database"):
        RecordStore("postgresql+psycopg2://nobody@127.0.0.1:1/none")
    with pytest.raises(RecordsError, match="not a database URL"):
        RecordStore("postgresql://[::1")


def test_default_url_and_plain_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEHIL_DB", str(tmp_path / "x" / "r.sqlite"))
    assert default_db_url() == f"sqlite:///{tmp_path / 'x' / 'r.sqlite'}"
    monkeypatch.delenv("FACEHIL_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_url() == f"sqlite:///{tmp_path / 'xdg' / 'facehil' / 'records.sqlite'}"
    assert normalize_url("postgresql://u@h/db") == "postgresql://u@h/db"
    with RecordStore(str(tmp_path / "sub" / "plain.sqlite")) as store:  # a path, parent created
        assert store.start_run() == 1
    assert (tmp_path / "sub" / "plain.sqlite").exists()


# -- crash safety -----------------------------------------------------------------------------

KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.records import RecordStore, RunInfo, ScenarioResult
    store = RecordStore(sys.argv[1])
    run_id = store.start_run(RunInfo(suite="nightly"))
    for i in range(3):
        store.record_scenario(run_id, ScenarioResult(f"t.py::test_{i}", "passed", flow="f",
            measurements=[{"name": "x_ms", "value": float(i), "unit": "ms", "outcome": "PASS"}]))
    Path(sys.argv[2]).write_text(str(run_id))
    time.sleep(600)  # killed here, mid-run
""")


def test_a_killed_run_keeps_its_scenarios_and_is_marked_aborted(db_url, tmp_path):
    RecordStore(db_url).close()
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, db_url, str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(ready, proc)
        run_id = int(ready.read_text())
        with RecordStore(db_url, mark_stale=False) as store:
            assert store.load_run(run_id).run.status == "running"  # alive: left alone
            assert store.mark_stale_runs_aborted() == []
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with RecordStore(db_url) as store:  # opening marks it
        data = store.load_run(run_id)
    assert data.run.status == "aborted"
    assert f"process {proc.pid}" in data.run.abort_reason and "is gone" in data.run.abort_reason
    assert [s.nodeid for s in data.scenarios] == ["t.py::test_0", "t.py::test_1", "t.py::test_2"]
    assert [m.value for m in data.measurements] == [0.0, 1.0, 2.0]
    assert data.run.ended_at is not None


def test_runs_of_other_hosts_are_judged_by_their_heartbeat(db_url):
    me = host_identity()
    other = me.__class__("rig-host-7", "some-boot-id", 4242, 1.0)
    with RecordStore(db_url, stale_after_s=600) as store:
        quiet = store.start_run(identity=other)
        busy = store.start_run(identity=other)
        mine = store.start_run()
        old = datetime.now(timezone.utc) - timedelta(hours=2)
        with store.session() as s, s.begin():
            s.execute(update(Run).where(Run.id == quiet).values(heartbeat_at=old))
        assert store.mark_stale_runs_aborted() == [quiet]
        assert store.load_run(busy).run.status == "running"
        assert store.load_run(mine).run.status == "running"
        reason = store.load_run(quiet).run.abort_reason
        assert "no heartbeat from rig-host-7" in reason
        assert store.load_run(quiet).run.ended_at == old
        # a shorter tolerance catches the busy one too; our own live process never
        assert store.mark_stale_runs_aborted(stale_after_s=0,
                                             now=datetime.now(timezone.utc) + timedelta(seconds=5)) == [busy]
        assert store.load_run(mine).run.status == "running"


def test_a_reused_pid_or_a_reboot_does_not_keep_a_run_alive(db_url):
    me = host_identity()
    with RecordStore(db_url) as store:
        reused = store.start_run(identity=me.__class__(me.host, me.boot_id, me.pid, me.pid_started_at - 3600))
        rebooted = store.start_run(identity=me.__class__(me.host, "an-earlier-boot", me.pid, me.pid_started_at))
        with store.session() as s, s.begin():
            s.execute(update(Run).where(Run.id == rebooted)
                      .values(heartbeat_at=datetime.now(timezone.utc) - timedelta(hours=1)))
        assert sorted(store.mark_stale_runs_aborted()) == [reused, rebooted]


def test_the_heartbeat_thread_keeps_a_long_scenario_alive(db_url):
    with RecordStore(db_url) as store:
        run_id = store.start_run()
        old = datetime.now(timezone.utc) - timedelta(hours=1)
        with store.session() as s, s.begin():
            s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=old))
        beat = Heartbeat(store, run_id, interval_s=0.05).start()
        try:
            deadline = time.monotonic() + WAIT_S
            while store.load_run(run_id).run.heartbeat_at == old:
                assert time.monotonic() < deadline, "no heartbeat written"
                time.sleep(0.05)
        finally:
            beat.stop()
        assert store.load_run(run_id).run.heartbeat_at > old + timedelta(minutes=59)


def test_a_finished_run_is_never_marked(db_url):
    other = host_identity().__class__("elsewhere", None, 1, None)
    with RecordStore(db_url) as store:
        run_id = store.start_run(identity=other, started_at=datetime.now(timezone.utc) - timedelta(days=1))
        store.finish_run(run_id, "passed", exit_status=0)
        assert store.mark_stale_runs_aborted(stale_after_s=0) == []
        assert store.load_run(run_id).run.status == "passed"


# -- concurrent writers -------------------------------------------------------------------------

CONCURRENT_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.records import RecordStore, RunInfo, ScenarioResult
    url, go, name, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    while not go.exists():
        time.sleep(0.005)
    store = RecordStore(url)  # both processes open (and migrate) a fresh database at once
    run_id = store.start_run(RunInfo(suite=name))
    for i in range(n):
        store.record_scenario(run_id, ScenarioResult(f"{name}::test_{i}", "passed", flow=name,
            measurements=[{"name": f"{name}_ms", "value": float(j), "unit": "ms", "outcome": "PASS"}
                          for j in range(5)]))
    store.finish_run(run_id, "passed", exit_status=0)
    print(run_id)
""")


def test_two_processes_write_at_once(db_url, tmp_path):
    go = tmp_path / "go"
    n = 40
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, db_url, str(go), name, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("alpha", "beta")]
    time.sleep(0.5)  # let both interpreters reach the barrier (correctness does not depend on it)
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
        outs.append(int(out.strip()))
    assert len(set(outs)) == 2
    with RecordStore(db_url) as store:
        for run_id, name in zip(outs, ("alpha", "beta")):
            data = store.load_run(run_id)
            assert data.run.suite == name and data.run.status == "passed"
            assert [s.nodeid for s in data.scenarios] == [f"{name}::test_{i}" for i in range(n)]
            assert len(data.measurements) == 5 * n and {m.name for m in data.measurements} == {f"{name}_ms"}


def test_report_queries(db_url):
    with RecordStore(db_url) as store:
        ids = []
        for suite in ("nightly", "smoke", "nightly"):
            rid = store.start_run(RunInfo(suite=suite))
            store.record_scenario(rid, _scenario("t::a"))
            store.record_scenario(rid, _scenario("t::b", "failed"))
            store.finish_run(rid, "failed", 1)
            ids.append(rid)
        assert store.latest_run_id() == ids[2] and store.latest_run_id("smoke") == ids[1]
        assert [r.id for r in store.list_runs(last=5, suite="nightly")] == [ids[0], ids[2]]
        assert [r.id for r in store.list_runs(last=2)] == ids[1:]
        assert store.scenario_counts(ids)[ids[0]] == {"passed": 1, "failed": 1}
        rows = store.measurements_for_runs(ids[:2])
        assert {r.run_id for r in rows} == set(ids[:2]) and len(rows) == 2 * 2 * 4
        json.dumps([r.params for r in store.load_run(ids[0]).scenarios])
        assert not math.isnan(rows[0].value)


def test_a_new_sqlite_file_locked_by_another_process_still_goes_to_wal(tmp_path):
    """Seen in a fresh-clone run: two processes opening a new records file together, one got
    "database is locked" from PRAGMA journal_mode=WAL (SQLite refuses the conversion at once while
    another connection holds a lock; busy_timeout does not apply). The open now waits it out."""
    import sqlite3
    import threading

    path = tmp_path / "records.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # another process's transaction
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")  # a write under way: no one may convert the file now
    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    with RecordStore(f"sqlite:///{path}") as store:
        assert store.start_run(RunInfo(suite="s")) > 0
    other.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()
