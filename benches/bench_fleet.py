"""Fleet scaling: the same workload on one rig and on two rigs.

The workload is two jobs of a nightly subset (the standard-card flows by default;
FACEHIL_FLEET_SUBSET changes it); each job is a health check, then the subset.
t1: both jobs on rig-a (its queue runs them one after the other); t2: one on rig-a, one on
rig-b. Efficiency = t1 / (2 x t2): 1.0 when two rigs halve the wall time. Both simulated
stations share this machine's cores, so the figure is a lower bound for a lab where each rig
has its own host.

    .venv/bin/python -m pytest benches/bench_fleet.py -s -p no:cacheprovider

Services (Redis with AOF, PostgreSQL 15, two stations with a private pcscd each, two workers)
are started and stopped here; it skips when redis-server or PostgreSQL 15 are missing.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' service fixtures

from fleetenv import Fleet  # noqa: E402
from harness.fleet import BrokerSettings, batch_passed, enqueue, follow, make_app  # noqa: E402
from pgcluster import find_pg_bin, start_cluster  # noqa: E402
from redisserver import start_redis  # noqa: E402

# the standard-card flows, less the PIN-lock ones (a locked card would fail the second job on a rig)
SUBSET = os.environ.get("FACEHIL_FLEET_SUBSET", "test_standard_card and not lock")
# the health check, less the card read that races a previous run's card removal (tests/test_fleet.py)
HEALTH = "nightly -k 'test_health and not test_reference_card_reads'"


def _timed_batch(fleet: Fleet, rigs: list[str]) -> float:
    db = fleet.db()
    app = make_app(BrokerSettings(fleet.redis.url))
    started = time.monotonic()
    batch = enqueue(app, db, "nightly", rigs, keyword=SUBSET, deadline_s=900)
    last = None
    for snap in follow(db, batch, poll_s=0.2):
        last = snap
    wall_s = time.monotonic() - started
    assert last is not None and batch_passed(last.jobs), \
        [(j.rig, j.state, j.detail) for j in (last.jobs if last else [])]
    return wall_s


@pytest.mark.timeout(1200)
def test_fleet_scaling(tmp_path, goals):
    if shutil.which("redis-server") is None or find_pg_bin() is None:
        pytest.skip("needs Debian redis-server and PostgreSQL 15")
    redis = start_redis()
    pg = start_cluster()
    fleet = Fleet(tmp_path, redis, pg.create_database())
    try:
        fleet.start({"rig-a": "sim", "rig-b": "sim"}, health=HEALTH)
        _timed_batch(fleet, ["rig-a", "rig-b"])  # warm-up: caches, first imports, first connections
        t1 = _timed_batch(fleet, ["rig-a", "rig-a"])
        t2 = _timed_batch(fleet, ["rig-a", "rig-b"])
    finally:
        fleet.stop()
        redis.stop()
        pg.stop()
        shutil.rmtree(redis.root, ignore_errors=True)
        shutil.rmtree(pg.root, ignore_errors=True)
    efficiency = t1 / (2 * t2)
    print(f"\nfleet scaling, workload 2 x nightly -k {SUBSET!r}: t1 (one rig) = {t1:.1f} s, "
          f"t2 (two rigs) = {t2:.1f} s, efficiency t1/(2 t2) = {efficiency:.2f}")
    goals("fleet_one_rig_wall_s", t1, "reported", "s", True)
    goals("fleet_two_rigs_wall_s", t2, "reported", "s", True)
    goals("fleet_scaling_efficiency", efficiency, ">= 0.8 (two stations on one 2-core host)", "", efficiency >= 0.8)
