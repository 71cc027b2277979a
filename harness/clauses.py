"""Traceability to the notice: the clause table, the ``clause(...)`` marker and the matrix.

The table (N1-N20, copied from the clause-by-clause note on the Dec 2023 notice) lives in
harness/data/notice_clauses.toml. A scenario cites the clauses it checks with
``@pytest.mark.clause("N10", "N16")``; an id the table does not know stops the session at
collection, naming it. Each cited id travels:

- into JUnit XML as a ``<property name="clause" value="N10"/>`` (the item's user_properties);
- into the records database with the scenario (``scenarios.params["@clauses"]``: an ``@``
  key cannot collide with a parametrize argument name, which is an identifier);
- into the conformance matrix (``build_matrix``): one row per clause with its scenarios and
  a status, shown by the run report and ``facehil report clauses``.

``--clause-map FILE`` writes ``{nodeid: [clause ids]}`` of the collected items as JSON (with
``--collect-only`` it gives the suite's coverage without running anything).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

MARKER = "clause"
PROPERTY = "clause"
PARAMS_KEY = "@clauses"
SCOPES = ("reader", "outside", "guidance")
# Status of a clause in one run, worst first
FAIL, PASS, NOT_RUN, UNTESTED = "fail", "pass", "not run", "untested"
STATUSES = (FAIL, PASS, NOT_RUN, UNTESTED)
_FAILED_OUTCOMES = {"failed", "error", "xpassed"}
_PASSED_OUTCOMES = {"passed"}
_ITEM_CLAUSES: Any = pytest.StashKey[tuple]()


class ClauseError(ValueError):
    """A clause id or the clause table is wrong; the message names it."""


@dataclass(frozen=True)
class Clause:
    id: str
    text: str
    lines: str
    scope: str  # reader | outside | guidance
    why: str = ""  # for outside/guidance: why no reader scenario checks it

    @property
    def concerns_reader(self) -> bool:
        return self.scope == "reader"


def _sort_key(clause_id: str) -> tuple[int, str]:
    digits = clause_id.lstrip("N")
    return (int(digits), clause_id) if digits.isdigit() else (10**6, clause_id)


@lru_cache(maxsize=1)
def load_clauses() -> dict[str, Clause]:
    """The packaged clause table, by id, in notice order."""
    text = resources.files("harness").joinpath("data/notice_clauses.toml").read_text(encoding="utf-8")
    return parse_clauses(text, "harness/data/notice_clauses.toml")


def parse_clauses(text: str, where: str) -> dict[str, Clause]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClauseError(f"{where}: not valid TOML: {exc}") from None
    out: dict[str, Clause] = {}
    for i, row in enumerate(doc.get("clauses", [])):
        try:
            clause = Clause(id=str(row["id"]), text=str(row["text"]), lines=str(row["lines"]),
                            scope=str(row["scope"]), why=str(row.get("why", "")))
        except KeyError as exc:
            raise ClauseError(f"{where}: clause #{i + 1} lacks key {exc}") from None
        if clause.scope not in SCOPES:
            raise ClauseError(f"{where}: clause {clause.id}: scope must be one of {SCOPES}, got {clause.scope!r}")
        if clause.scope != "reader" and not clause.why:
            raise ClauseError(f"{where}: clause {clause.id} is not a reader clause and needs a 'why'")
        if clause.id in out:
            raise ClauseError(f"{where}: clause {clause.id} appears twice")
        out[clause.id] = clause
    if not out:
        raise ClauseError(f"{where}: no clauses")
    return dict(sorted(out.items(), key=lambda kv: _sort_key(kv[0])))


def reader_clause_ids() -> list[str]:
    """The clauses that concern the reader or the card: each needs at least one scenario."""
    return [c.id for c in load_clauses().values() if c.concerns_reader]


def item_clauses(item: pytest.Item) -> tuple[str, ...]:
    """The clause ids an item cites (its own, its class's and its module's markers), in notice order."""
    cached = item.stash.get(_ITEM_CLAUSES, None)
    if cached is not None:
        return cached
    ids: set[str] = set()
    for mark in item.iter_markers(MARKER):
        if not mark.args or mark.kwargs:
            raise ClauseError(f"{item.nodeid}: clause() takes one or more clause ids such as clause(\"N10\")")
        for arg in mark.args:
            if not isinstance(arg, str):
                raise ClauseError(f"{item.nodeid}: clause() ids are strings such as \"N10\", got {arg!r}")
            ids.add(arg)
    known = load_clauses()
    unknown = sorted(i for i in ids if i not in known)
    if unknown:
        raise ClauseError(f"{item.nodeid}: clause() names unknown clause id(s) {', '.join(unknown)}; "
                          f"known: {', '.join(known)}")
    result = tuple(sorted(ids, key=_sort_key))
    item.stash[_ITEM_CLAUSES] = result
    return result


def record_params(params: Mapping[str, Any] | None, clauses: Iterable[str]) -> dict[str, Any] | None:
    """A scenario's params column with its clause ids added (None stays None without clauses)."""
    clauses = list(clauses)
    if not clauses:
        return dict(params) if params is not None else None
    return {**(params or {}), PARAMS_KEY: clauses}


def clauses_of_params(params: Mapping[str, Any] | None) -> list[str]:
    if not params:
        return []
    value = params.get(PARAMS_KEY) or []
    return [str(v) for v in value] if isinstance(value, list) else []


# ---------------------------------------------------------------------------------------------
# The conformance matrix


@dataclass
class ScenarioCite:
    nodeid: str
    outcome: str | None  # None: collected, not run


@dataclass
class MatrixRow:
    clause: Clause
    scenarios: list[ScenarioCite] = field(default_factory=list)
    status: str = UNTESTED

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.scenarios:
            key = s.outcome or "not run"
            out[key] = out.get(key, 0) + 1
        return out


def _status(outcomes: list[str | None]) -> str:
    if not outcomes:
        return UNTESTED
    if any(o in _FAILED_OUTCOMES for o in outcomes):
        return FAIL
    if any(o in _PASSED_OUTCOMES for o in outcomes):
        return PASS
    return NOT_RUN  # every citing scenario skipped, xfailed, or only collected


def build_matrix(scenarios: Iterable[tuple[str, Iterable[str], str | None]]) -> list[MatrixRow]:
    """One row per clause, from ``(nodeid, clause ids, outcome or None)`` of each scenario.

    A clause is *fail* if a citing scenario failed, *pass* if one passed and none failed,
    *not run* if it is cited but none of its scenarios ran to a verdict, else *untested*.
    Ids not in the table raise ClauseError (a record from an older table would be misread).
    """
    known = load_clauses()
    rows = {cid: MatrixRow(clause) for cid, clause in known.items()}
    for nodeid, ids, outcome in scenarios:
        for cid in ids:
            if cid not in rows:
                raise ClauseError(f"{nodeid} cites clause {cid!r}, which the clause table does not know")
            rows[cid].scenarios.append(ScenarioCite(nodeid, outcome))
    for row in rows.values():
        row.status = _status([s.outcome for s in row.scenarios])
    return list(rows.values())


def uncovered_reader_clauses(matrix: Iterable[MatrixRow]) -> list[str]:
    return [r.clause.id for r in matrix if r.clause.concerns_reader and not r.scenarios]


def matrix_from_records(scenarios: Iterable[Any]) -> list[MatrixRow]:
    """The matrix of one recorded run (harness.records.Scenario rows)."""
    return build_matrix((s.nodeid, clauses_of_params(s.params), s.outcome) for s in scenarios)


# ---------------------------------------------------------------------------------------------
# The pytest side (registered by harness/plugin.py)


class ClausePlugin:
    def __init__(self, map_path: Path | None = None):
        self.map_path = map_path

    @pytest.hookimpl(tryfirst=True)  # before -m/-k deselect: a bad id anywhere in the files stops the run
    def pytest_collection_modifyitems(self, session, config, items):
        problems = []
        for item in items:
            try:
                ids = item_clauses(item)
            except ClauseError as exc:
                problems.append(str(exc))
                continue
            item.user_properties.extend((PROPERTY, cid) for cid in ids)
        if problems:
            raise pytest.UsageError("clause markers:\n  " + "\n  ".join(problems))

    def pytest_collection_finish(self, session):
        if self.map_path is None:
            return
        cmap = {item.nodeid: list(item_clauses(item)) for item in session.items}
        self.map_path.parent.mkdir(parents=True, exist_ok=True)
        self.map_path.write_text(json.dumps(cmap, indent=1, ensure_ascii=False), encoding="utf-8")


def addoption(parser) -> None:
    parser.getgroup("facehil").addoption(
        "--clause-map", dest="facehil_clause_map", default=None,
        help="write {nodeid: [clause ids]} of the collected scenarios to this JSON file")


def register(config: pytest.Config) -> None:
    """Called from harness/plugin.py's pytest_configure."""
    config.addinivalue_line("markers", f"{MARKER}(*ids): the notice clauses (N1-N20) this scenario checks")
    if not config.pluginmanager.has_plugin("facehil-clauses"):
        path = config.getoption("facehil_clause_map", None)
        config.pluginmanager.register(ClausePlugin(Path(path) if path else None), "facehil-clauses")
