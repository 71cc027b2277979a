"""harness.recording through real pytest sessions (pytester): the `measure` fixture, measurement
FAIL failing a test, and a run recorded into SQLite or PostgreSQL, also when the session is killed."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from harness.recording import RECORDS_LOST_EXIT, run_info_from_config
from harness.records import RecordStore

pytest_plugins = ["pytester"]

# Inner sessions run in subprocesses: in-process runs unload what they imported (numpy, scipy,
# SQLAlchemy dialects), and C extensions cannot be loaded twice in one process.

SYNTHETIC = """
import pytest
from harness.measure import Limit

@pytest.fixture
def broken_setup():
    raise RuntimeError("rig not answering")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("card stuck in placer")

@pytest.mark.flow("face_auth")
@pytest.mark.parametrize("condition", ["nominal", "mask"])
def test_face_latency(measure, condition):
    latency_ms = {"nominal": 900.0, "mask": 1300.0}[condition]
    measure("face_auth_latency_ms", latency_ms, limit=Limit(high=1500, marginal=1200))
    measure.face_match(0.8 if condition == "nominal" else 0.55, 0.6, condition == "nominal",
                       condition=condition, subject_id="s01", genuine=True)

@pytest.mark.flow("visual_fallback")
def test_switch_too_slow(measure):
    measure("switch_time_ms", 3000.0, high=2000)
    measure("return_to_face_ms", 100.0, high=2000)

@pytest.mark.flow("visual_fallback")
def test_fnmr_unproven(measure):
    measure.rate("fnmr", 0, 30, high=0.05)   # 0 errors, but 30 attempts prove only <= 10%

def test_plain_assert_fails():
    assert 1 + 1 == 3

def test_setup_error(broken_setup):
    pass

def test_teardown_error(broken_teardown):
    pass

def test_skipped():
    pytest.skip("station has no card placer")

@pytest.mark.xfail(reason="known reader bug")
def test_expected_failure():
    assert False

@pytest.mark.xfail(reason="known reader bug")
def test_unexpected_pass():
    pass
"""


def _run(pytester, db_url, *args):
    pytester.makepyfile(test_synthetic=SYNTHETIC)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--db", db_url, "--suite", "nightly", *args)


def test_a_session_is_recorded_with_every_outcome(pytester, db_url):
    result = _run(pytester, db_url)
    result.assert_outcomes(passed=3, failed=3, errors=2, skipped=1, xfailed=1, xpassed=1)
    result.stdout.fnmatch_lines([
        "*measurement(s) out of limits:*",
        "*switch_time_ms = 3000 ms; limit <= 2000 ms: FAIL*",
        "*facehil: run * recorded (10 scenario(s))*",
        "MARGINAL*test_face_latency?mask?*face_auth_latency_ms = 1300 ms*",
    ])
    with RecordStore(db_url) as store:
        data = store.load_run(store.latest_run_id())
    run = data.run
    assert (run.suite, run.status, run.exit_status, run.station_name) == ("nightly", "failed", 1, "simulated")
    assert run.facehil_version and run.ended_at >= run.started_at
    assert "--suite" in run.extra["args"]
    outcomes = {s.nodeid.split("::")[1]: s.outcome for s in data.scenarios}
    assert outcomes == {
        "test_face_latency[nominal]": "passed", "test_face_latency[mask]": "passed",
        "test_switch_too_slow": "failed", "test_fnmr_unproven": "failed", "test_plain_assert_fails": "failed",
        "test_setup_error": "error", "test_teardown_error": "error", "test_skipped": "skipped",
        "test_expected_failure": "xfailed", "test_unexpected_pass": "xpassed",
    }
    by_name = {s.nodeid.split("::")[1]: s for s in data.scenarios}
    mask = by_name["test_face_latency[mask]"]
    assert (mask.flow, mask.params, mask.measurement_outcome) == ("face_auth", {"condition": "mask"}, "MARGINAL")
    assert by_name["test_plain_assert_fails"].flow == "synthetic"  # no marker: from the file name
    assert "assert (1 + 1) == 3" in by_name["test_plain_assert_fails"].longrepr
    assert "rig not answering" in by_name["test_setup_error"].longrepr
    assert "card stuck in placer" in by_name["test_teardown_error"].longrepr
    assert by_name["test_skipped"].longrepr.endswith("station has no card placer")
    assert all(s.started_at and s.ended_at and s.duration_ms is not None for s in data.scenarios)
    meas = sorted((m.name, m.value, m.outcome) for m in data.measurements)
    assert meas == [("face_auth_latency_ms", 900.0, "PASS"), ("face_auth_latency_ms", 1300.0, "MARGINAL"),
                    ("fnmr", 0.0, "FAIL"), ("return_to_face_ms", 100.0, "PASS"), ("switch_time_ms", 3000.0, "FAIL")]
    fnmr = next(m for m in data.measurements if m.name == "fnmr")
    assert fnmr.bound_high > 0.05 and (fnmr.errors, fnmr.trials) == (0, 30)
    assert sorted((f.condition, f.accepted) for f in data.face_matches) == [("mask", False), ("nominal", True)]


def test_a_clean_session_is_recorded_as_passed(pytester, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    pytester.makepyfile("""
        def test_ok(measure):
            measure("presence_detect_ms", 80.0, high=500, marginal=300)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--db", url)
    assert result.ret == 0
    with RecordStore(url) as store:
        data = store.load_run(store.latest_run_id())
    assert (data.run.status, data.run.suite, data.run.exit_status) == ("passed", "adhoc", 0)
    assert [(m.name, m.outcome) for m in data.measurements] == [("presence_detect_ms", "PASS")]


def test_an_interrupted_session_is_recorded_as_aborted(pytester, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    pytester.makepyfile("""
        def test_ok(measure):
            measure("a_ms", 1)

        def test_operator_hits_ctrl_c():
            raise KeyboardInterrupt
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--db", url)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    with RecordStore(url) as store:
        data = store.load_run(store.latest_run_id())
    assert (data.run.status, data.run.abort_reason, data.run.exit_status) == ("aborted", "interrupted", 2)
    assert [s.outcome for s in data.scenarios] == ["passed"]


def test_measurements_judge_tests_without_a_database(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FACEHIL_DB", raising=False)
    pytester.makepyfile("""
        def test_marginal(measure):
            measure("x_ms", 15, high=20, marginal=10)

        def test_fail(measure):
            measure("x_ms", 25, high=20)
            measure("y_ms", 26, high=20)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*x_ms = 25 ms; limit <= 20 ms: FAIL", "*y_ms = 26 ms; limit <= 20 ms: FAIL",
                                 "3 measurement(s): 0 PASS, 1 MARGINAL, 2 FAIL"])
    assert "recorded" not in result.stdout.str()
    assert not (tmp_path / "xdg").exists()  # nothing written without --db/--record


def test_record_flag_uses_facehil_db(pytester, tmp_path, monkeypatch):
    path = tmp_path / "env.sqlite"
    monkeypatch.setenv("FACEHIL_DB", str(path))
    pytester.makepyfile("def test_ok(measure):\n    measure('a_ms', 1)\n")
    assert pytester.runpytest_subprocess("-p", "no:cacheprovider", "--record").ret == 0
    with RecordStore(str(path)) as store:
        assert store.load_run(store.latest_run_id()).run.status == "passed"


def test_station_limits_and_run_annotations_come_from_the_station_plugin(pytester, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    pytester.makeconftest("""
        import pytest
        from harness.recording import annotate_run, current_run_id, set_station_limits

        @pytest.fixture
        def station(pytestconfig):  # loaded after `measure` was made: the collector must still see it
            set_station_limits(pytestconfig, {"face_auth_latency_ms": {"high": 1000, "marginal_high": 800}})

        @pytest.fixture(scope="session", autouse=True)
        def dut(pytestconfig):
            assert current_run_id(pytestconfig) is not None
            annotate_run(pytestconfig, reader_firmware="2.0.1", reader_features=["face", "visual_check_registration"],
                         card_deck=["std-01", "face-01"], dataset_hash="abc123")
    """)
    pytester.makepyfile("""
        from harness.measure import Limit
        def test_latency(measure, station):
            measure("face_auth_latency_ms", 1100, limit=Limit(high=1500, marginal=1200))
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--db", url)
    result.assert_outcomes(failed=1)  # 1100 ms passes the scenario's 1500 ms but not the station's 1000 ms
    with RecordStore(url) as store:
        run = store.load_run(store.latest_run_id())
    assert run.run.reader_firmware == "2.0.1" and run.run.card_deck == ["std-01", "face-01"]
    assert run.run.reader_features == ["face", "visual_check_registration"] and run.run.dataset_hash == "abc123"
    assert (run.measurements[0].high, run.measurements[0].outcome) == (1000.0, "FAIL")


def test_run_info_names_and_hashes_the_station_file(tmp_path):
    station = tmp_path / "lab.toml"
    station.write_text('[station]\nname = "lab-rig-3"\n')
    opts = {"station": str(station)}
    config = SimpleNamespace(getoption=lambda name, default=None: opts.get(name, default),
                             invocation_params=SimpleNamespace(args=("--station", str(station))))
    info = run_info_from_config(config, "nightly")
    assert (info.suite, info.station_name) == ("nightly", "lab-rig-3")
    assert info.station_file_hash == hashlib.sha256(station.read_bytes()).hexdigest()
    assert info.facehil_version and info.extra["args"] == ["--station", str(station)]
    station.write_text("not toml [[[")
    assert run_info_from_config(config, "x").station_name == "lab"  # unreadable: the file's name
    opts.clear()
    assert run_info_from_config(config, "x").station_name == "simulated"


def test_a_bad_database_url_is_a_usage_error(pytester):
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--db", "postgresql+psycopg2://x@127.0.0.1:1/none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--db: cannot open records database*"])


KILLED_SESSION = """
import time
from pathlib import Path

def test_one(measure):
    measure("a_ms", 1.0)

def test_two(measure):
    measure("a_ms", 2.0)

def test_hangs():
    Path({ready!r}).write_text("x")
    time.sleep(600)
"""


def test_a_killed_session_keeps_what_it_recorded(pytester, db_url, tmp_path):
    ready = tmp_path / "ready"
    pytester.makepyfile(test_killed=KILLED_SESSION.format(ready=str(ready)))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--db", db_url,
                             "--suite", "nightly", "-o", "timeout=0"],
                            cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
            assert time.monotonic() < deadline, "the session never reached its third test"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with RecordStore(db_url) as store:
        data = store.load_run(store.latest_run_id())
    assert data.run.status == "aborted" and "is gone" in data.run.abort_reason
    assert [s.nodeid for s in data.scenarios] == ["test_killed.py::test_one", "test_killed.py::test_two"]
    assert [m.value for m in data.measurements] == [1.0, 2.0]


@pytest.mark.postgres
def test_refused_scenario_is_named_and_a_password_on_the_command_line_is_not_recorded(pytester, pg_cluster):
    secret = "pw-0b7a93d4"
    url = pg_cluster.create_database().replace("facehil@", f"facehil:{secret}@")  # the cluster trusts any
    pytester.makepyfile("""
        def test_ok():
            pass

        def test_refused(measure):
            measure("bad\\x00name", 1.0)  # PostgreSQL refuses a NUL in text: retrying cannot help

        def test_after_the_refused_one():
            pass
    """)
    # both spellings at once (the last one wins): `--db URL` and `--db=URL`
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--db", url, f"--db={url}")
    out = result.stdout.str()
    assert secret not in out
    # the refused scenario is lost and named, and does not hold back the ones after it
    assert result.ret == RECORDS_LOST_EXIT, out
    lost = [ln for ln in out.splitlines() if ln.startswith("NOT RECORDED: ")]
    assert len(lost) == 1 and lost[0].endswith(".py::test_refused"), out
    with RecordStore(url) as store:
        [run] = store.list_runs(10)
        data = store.load_run(run.id)
    assert [s.nodeid.rsplit("::", 1)[-1] for s in data.scenarios] == ["test_ok", "test_after_the_refused_one"]
    assert (run.status, run.exit_status) == ("failed", RECORDS_LOST_EXIT)
    assert "1 scenario(s) not recorded" in run.abort_reason
    args = run.extra["args"]
    assert not any(secret in a for a in args), args
    assert sum("facehil:***@127.0.0.1" in a for a in args) == 2, args
