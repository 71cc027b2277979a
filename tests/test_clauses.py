"""Traceability to the notice (harness/clauses.py): the clause table, the clause() marker checked at
collection, clause ids in JUnit XML and in the records, the conformance matrix in the terminal, and
the suite's coverage of every reader clause, built from the collected scenarios."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

# imported before pytester snapshots sys.modules: a re-import would declare the records tables twice
from harness.cli import app

from harness.clauses import (FAIL, NOT_RUN, PASS, UNTESTED, ClauseError, build_matrix, load_clauses,
                             matrix_from_records, parse_clauses, reader_clause_ids, uncovered_reader_clauses)
from harness.records import RecordStore

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[1]

CITING = """
import pytest

@pytest.mark.clause("N10", "N16")
def test_method_screen():
    pass

@pytest.mark.clause("N18")
def test_lock():
    assert False, "the third wrong PIN did not lock"

@pytest.mark.clause("N17")
def test_slow_registration():
    pytest.skip("station lacks eligibility")

@pytest.mark.clause("N18")
@pytest.mark.parametrize("tries", [1, 2])
def test_reset(tries):
    pass

def test_uncited():
    pass
"""


def test_the_table_is_the_notes_clauses():
    clauses = load_clauses()
    assert list(clauses) == [f"N{i}" for i in range(1, 21)]
    assert "「本人確認の方法を選んでください。」" in clauses["N10"].text  # the notice's wording, kept
    assert reader_clause_ids() == [f"N{i}" for i in (*range(1, 13), *range(14, 19))]
    for cid in ("N13", "N19"):
        assert clauses[cid].scope == "outside" and "reader" in clauses[cid].why
    assert clauses["N20"].scope == "guidance" and clauses["N20"].why


def test_a_table_without_why_for_an_outside_clause_is_refused():
    with pytest.raises(ClauseError, match="N13 is not a reader clause and needs a 'why'"):
        parse_clauses('[[clauses]]\nid = "N13"\ntext = "t"\nlines = "L1"\nscope = "outside"\n', "t.toml")


def test_matrix_statuses():
    rows = {r.clause.id: r for r in build_matrix([
        ("a::ok", ["N10"], "passed"), ("a::bad", ["N10", "N18"], "failed"), ("a::skip", ["N17"], "skipped"),
        ("a::ok2", ["N18"], "passed"), ("a::collected", ["N14"], None), ("a::xf", ["N15"], "xfailed"),
        ("a::xp", ["N5"], "xpassed"), ("a::ok3", ["N1"], "passed"), ("a::plain", [], "passed")])}
    assert rows["N10"].status == FAIL and rows["N18"].status == FAIL and rows["N5"].status == FAIL
    assert rows["N1"].status == PASS
    assert rows["N17"].status == NOT_RUN and rows["N14"].status == NOT_RUN and rows["N15"].status == NOT_RUN
    assert rows["N3"].status == UNTESTED and rows["N13"].status == UNTESTED
    assert "N3" in uncovered_reader_clauses(rows.values()) and "N13" not in uncovered_reader_clauses(rows.values())
    with pytest.raises(ClauseError, match="N99"):
        build_matrix([("a::x", ["N99"], "passed")])


def test_unknown_clause_id_is_a_collection_error_naming_it(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.clause("N10", "N99")
        def test_x():
            pass

        @pytest.mark.clause()
        def test_y():
            pass
    """)
    result = pytester.runpytest_subprocess("-k", "test_x")  # test_y deselected: still checked
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "test_x: clause() names unknown clause id(s) N99" in err
    assert "test_y: clause() takes one or more clause ids" in err
    assert "passed" not in result.stdout.str()


def test_clause_ids_reach_junit_xml_and_the_records(pytester, tmp_path):
    pytester.makepyfile(test_citing=CITING)
    db = tmp_path / "records.sqlite"
    junit = tmp_path / "junit.xml"
    result = pytester.runpytest_subprocess(f"--junitxml={junit}", "--db", str(db))
    result.assert_outcomes(passed=4, failed=1, skipped=1)

    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    props = {name: [p.get("value") for p in case.iter("property") if p.get("name") == "clause"]
             for name, case in cases.items()}
    assert props["test_method_screen"] == ["N10", "N16"]
    assert props["test_reset[1]"] == ["N18"] and props["test_lock"] == ["N18"]
    assert props["test_uncited"] == []

    with RecordStore(str(db)) as store:
        data = store.load_run(store.latest_run_id())
    by_node = {s.nodeid.split("::")[-1]: s for s in data.scenarios}
    assert by_node["test_reset[2]"].params == {"tries": 2, "@clauses": ["N18"]}
    assert by_node["test_method_screen"].params == {"@clauses": ["N10", "N16"]}
    assert by_node["test_uncited"].params is None
    rows = {r.clause.id: r for r in matrix_from_records(data.scenarios)}
    assert rows["N10"].status == PASS and rows["N18"].status == FAIL and rows["N17"].status == NOT_RUN
    assert rows["N3"].status == UNTESTED
    assert [s.nodeid.split("::")[-1] for s in rows["N18"].scenarios] == ["test_lock", "test_reset[1]", "test_reset[2]"]

    out = CliRunner().invoke(app, ["report", "clauses", "--db", str(db), "--width", "220"])
    assert out.exit_code == 1, out.output  # a clause failed
    lines = out.output.splitlines()
    n18 = next(i for i, line in enumerate(lines) if line.startswith("│ N18"))
    assert "fail" in lines[n18] and "test_reset[1]" in out.output  # brackets survive rich markup
    assert "outside a reader's reach" in out.output.lower()
    assert "本人確認の方法を選んでください" in out.output
    missing = CliRunner().invoke(app, ["report", "clauses", "--db", str(db), "--run", "999"])
    assert missing.exit_code == 1 and "no run 999" in missing.output


def test_every_reader_clause_has_a_scenario(tmp_path):
    """Built from the scenarios pytest collects, not from a hand-kept list."""
    cmap_path = tmp_path / "clauses.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           f"--clause-map={cmap_path}", "scenarios/"], cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    cmap = json.loads(cmap_path.read_text(encoding="utf-8"))
    assert len(cmap) > 20, f"only {len(cmap)} scenarios collected"
    matrix = build_matrix((nodeid, ids, None) for nodeid, ids in cmap.items())
    uncovered = uncovered_reader_clauses(matrix)
    assert not uncovered, f"reader clauses no scenario cites: {', '.join(uncovered)}"
