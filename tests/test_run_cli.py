"""`facehil run` and `facehil demo`: the pytest command line, the exit status, progress output, the
recorded run, the HTML report and JUnit. Uses small suites of plain tests (no station needed)."""

from __future__ import annotations

import io
import sqlite3
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console
from typer.testing import CliRunner

from harness.cli import app
from harness.commands.run import RunOptions, child_env, pytest_command, run_suite
from harness.suites import FLOW_FILES, SUITES, Suite, get_suite, scenarios_path

runner = CliRunner()


def test_suites_point_at_existing_scenario_files():
    root = scenarios_path()
    for suite in SUITES.values():
        for name in suite.files:
            assert (root / name).is_file(), f"suite {suite.name} names missing {name}"
    assert set(SUITES["smoke"].files) < set(FLOW_FILES)
    assert SUITES["nightly"].files[0] == "test_health.py" and SUITES["nightly"].files[-1] == "test_firmware_update.py"


def test_pytest_command_maps_every_option(tmp_path):
    station = tmp_path / "s.toml"
    cmd = pytest_command(RunOptions(suite="smoke", station=station, db="sqlite:///x.db", report_dir=tmp_path,
                                    junit=tmp_path / "j.xml", keyword="face", faults="match_carer"))
    assert cmd[1:3] == ["-m", "pytest"]
    assert cmd[cmd.index("-m", 3) + 1] == "health or smoke"
    for pair in (["--station", str(station)], ["-k", "face"], ["--faults", "match_carer"],
                 ["--suite", "smoke"], ["-p", "harness.commands.run_events"]):
        i = cmd.index(pair[0]) if pair[0] != "-p" else cmd.index("harness.commands.run_events") - 1
        assert cmd[i:i + 2] == pair
    assert f"--junitxml={tmp_path / 'j.xml'}" in cmd
    # the database URL travels in FACEHIL_DB, never on pytest's command line
    assert "--record" in cmd and "--db" not in cmd and not any("x.db" in a for a in cmd)
    assert child_env(RunOptions(suite="smoke", db="sqlite:///x.db"))["FACEHIL_DB"] == "sqlite:///x.db"
    report_only = pytest_command(RunOptions(suite="nightly", report_dir=tmp_path))
    assert "--record" in report_only and "-m" not in report_only[3:]


def test_cli_dry_run_and_errors(tmp_path):
    res = runner.invoke(app, ["run", "smoke", "--dry-run", "-k", "face"])
    assert res.exit_code == 0, res.output
    assert "test_health.py" in res.output and "-k face" in res.output
    res = runner.invoke(app, ["run", "weekly"])
    assert res.exit_code != 0 and "weekly" in res.output
    res = runner.invoke(app, ["run", "smoke", "--station", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "station file not found" in res.output
    with pytest.raises(Exception):
        get_suite("weekly")


@pytest.fixture
def unit_suite(tmp_path, monkeypatch):
    root = tmp_path / "suite"
    root.mkdir()
    (root / "test_one.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.flow('demo_flow')\n"
        "def test_pass(measure):\n    measure('latency_ms', 12.0)\n"
        "def test_fail():\n    assert 1 == 2, 'broken on purpose'\n"
        "def test_skip():\n    pytest.skip('nothing to do')\n")
    (root / "test_two.py").write_text("def test_ok():\n    pass\n")
    monkeypatch.setitem(SUITES, "unit", Suite(name="unit", description="unit", files=("test_one.py", "test_two.py"),
                                              root=root))
    monkeypatch.setitem(SUITES, "unit_ok", Suite(name="unit_ok", description="ok", files=("test_two.py",), root=root))
    return root


def test_run_suite_fails_records_and_reports(unit_suite, tmp_path):
    out = io.StringIO()
    db = tmp_path / "rec.sqlite"
    opts = RunOptions(suite="unit", db=f"sqlite:///{db}", report_dir=tmp_path / "report", junit=tmp_path / "j.xml")
    result = run_suite(opts, out=Console(file=out, width=200))
    text = out.getvalue()
    assert result.exit_code == 1, text
    assert (result.counts["passed"], result.counts["failed"], result.counts["skipped"]) == (2, 1, 1), text
    assert "FAILED" in text and "test_fail" in text and "broken on purpose" in text
    assert "demo_flow" in text  # per-flow summary
    assert result.run_id is not None
    assert result.report_path is not None and result.report_path.is_file()
    assert "<html" in result.report_path.read_text().lower()
    assert str(result.report_path) in text
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert sum(int(s.get("failures", 0)) for s in suite.iter("testsuite")) == 1
    with sqlite3.connect(db) as conn:
        status, suite_name = conn.execute("select status, suite from runs where id=?", (result.run_id,)).fetchone()
    assert (status, suite_name) == ("failed", "unit")
    assert result.log_path.is_file() and "broken on purpose" in result.log_path.read_text()


def test_run_suite_passes_with_exit_zero(unit_suite, tmp_path):
    out = io.StringIO()
    result = run_suite(RunOptions(suite="unit_ok", log_path=tmp_path / "log.txt"), out=Console(file=out, width=200))
    assert result.exit_code == 0, out.getvalue()
    assert result.counts["passed"] == 1 and result.run_id is None and result.report_path is None
    assert "PASS" in out.getvalue()
