"""Harness overhead: per measurement and per recorded scenario.
Run: ``.venv/bin/python -m pytest benches/bench_measure.py``.

* measure(): one plain value judged against a Limit with a marginal band (the common case),
  and one judged against a station-file limit;
* measure.rate(): errors/trials judged on the Clopper-Pearson bound (scipy imported already);
* record_scenario(): one scenario with 5 measurements and 1 face-match score committed to a
  SQLite file (WAL) — the per-scenario cost of `--db`;
* a whole pytest session of 200 tiny scenarios with and without `--db` (subprocesses): the
  difference per scenario is what recording adds end to end (hooks + commit).

Goal (issue 6): harness overhead per measurement under 1 ms.
"""

from __future__ import annotations

import subprocess
import sys
import time

from harness.measure import Limit, Measurements, parse_limits
from harness.records import RecordStore, RunInfo, ScenarioResult

MEASUREMENT_GOAL_MS = 1.0


def _report(benchmark, goals, name: str, goal_ms: float | None = None) -> None:
    median_ms = benchmark.stats.stats.median * 1000
    benchmark.extra_info["median_ms"] = median_ms
    if goal_ms is not None:
        goals(name, median_ms, f"< {goal_ms} ms", "ms", median_ms < goal_ms)


def test_measure_value(benchmark, goals):
    m = Measurements()
    limit = Limit(high=1500, marginal=1200)
    benchmark(lambda: m("face_auth_latency_ms", 1234.5, limit=limit))
    _report(benchmark, goals, "measure() per value", MEASUREMENT_GOAL_MS)


def test_measure_value_with_station_limit(benchmark, goals):
    m = Measurements(limits=parse_limits({"face_auth_latency_ms": {"high": 1000, "marginal_high": 800}}))
    benchmark(lambda: m("face_auth_latency_ms", 900.0, high=1500))
    _report(benchmark, goals, "measure() with a station limit", MEASUREMENT_GOAL_MS)


def test_measure_rate(benchmark, goals):
    m = Measurements()
    m.rate("warm_up", 1, 10, high=0.5)  # the first call imports scipy.special once per process
    benchmark(lambda: m.rate("fnmr", 3, 200, high=0.05))
    _report(benchmark, goals, "measure.rate() per rate", MEASUREMENT_GOAL_MS)


def _scenario(i: int) -> ScenarioResult:
    m = Measurements()
    for k in range(4):
        m(f"latency_{k}_ms", 100.0 + k, high=1500, marginal=1200)
    m.rate("fnmr", 1, 100, high=0.05)
    m.face_match(0.71, 0.6, True, condition="nominal", subject_id="s01", genuine=True)
    return ScenarioResult(f"t.py::test_{i}", "passed", flow="bench", params={"i": i}, duration_ms=1.0,
                          measurements=[r.as_record() for r in m.results],
                          face_matches=[f.as_record() for f in m.face_matches])


def test_record_scenario_sqlite(benchmark, goals, tmp_path):
    store = RecordStore(f"sqlite:///{tmp_path / 'bench.sqlite'}")
    run_id = store.start_run(RunInfo(suite="bench"))
    results = [_scenario(i) for i in range(64)]
    counter = iter(range(10**9))
    try:
        benchmark(lambda: store.record_scenario(run_id, results[next(counter) % 64]))
    finally:
        store.close()
    _report(benchmark, goals, "record_scenario() (5 measurements + 1 score, SQLite)")


SESSION = """
import pytest
from harness.measure import Limit

@pytest.mark.parametrize("i", range({n}))
def test_scenario(measure, i):
    measure("a_ms", 10.0 + i, limit=Limit(high=1500, marginal=1200))
    measure("b_ms", 20.0, high=100)
    measure.rate("fnmr", 0, 100, high=0.05)
"""


def test_recorded_scenario_end_to_end(benchmark, goals, tmp_path):
    """Recording overhead = a + b*n over sessions of n scenarios: b per scenario, a per session
    (imports, opening and checking the database, the run row)."""
    sizes = (40, 240)
    for n in sizes:
        (tmp_path / f"test_bench_{n}.py").write_text(SESSION.format(n=n))
    db = tmp_path / "records.sqlite"
    RecordStore(str(db)).close()  # migrated once up front

    def session(n: int, *extra: str) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark",
                               f"test_bench_{n}.py", *extra], cwd=tmp_path, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"bench session failed ({proc.returncode}): {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        return time.perf_counter() - t0

    def overhead(n: int) -> float:
        return min(session(n, "--db", str(db)) for _ in range(2)) - min(session(n) for _ in range(2))

    def fit() -> tuple[float, float]:
        small, large = (overhead(n) for n in sizes)
        per_scenario_s = (large - small) / (sizes[1] - sizes[0])
        return per_scenario_s, small - per_scenario_s * sizes[0]

    per_scenario_s, per_session_s = benchmark.pedantic(fit, rounds=1, iterations=1)
    benchmark.extra_info["recording_per_scenario_ms"] = per_scenario_s * 1000
    benchmark.extra_info["recording_per_session_ms"] = per_session_s * 1000
    goals("recording overhead per scenario (pytest, SQLite)", per_scenario_s * 1000, "report only", "ms", True)
    goals("recording overhead per session (open DB, run row)", per_session_s * 1000, "report only", "ms", True)
