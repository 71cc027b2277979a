"""Soak: many sessions on one simulated station; does any station process keep growing? (issue 10 §5)

One station (private pcscd, reader on a pty, dlib matcher) serves ``FACEHIL_SOAK_SESSIONS``
(default 2,000) face-path sessions in a row: the rig places the standard deck card, the holder
shows their face, the reader authenticates by face, the three consent screens are answered, the
signed eligibility query is made, and the rig takes the card away again.

The memory of every station process (card processes, rig, camera/presenter, reader, eligibility,
pcscd) and of this host process (the drivers' histories) is read with psutil at the start (before
any session), after a warm-up, half way and at the end. The growth from start to end is printed
per process; the goal is judged on the second half: a process whose heap only fills up to its
working size (allocator arenas, the face model's buffers) levels off, a leak keeps growing.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import tomllib
from pathlib import Path

import psutil
import pytest

from drivers.reader import open_reader
from sim.eligibility.service import MAX_CHALLENGES

log = logging.getLogger(__name__)

SESSIONS = int(os.environ.get("FACEHIL_SOAK_SESSIONS", "2000"))
WARMUP_SESSIONS = min(50, max(1, SESSIONS // 10))
HALF_SESSIONS = max(WARMUP_SESSIONS, SESSIONS // 2)
GROWTH_GOAL_MIB = 8.0  # per process, half way -> end: a leak of 8 KiB a session breaks it over 1,000
WAIT_S = 30.0
FAST_MM_S = 2000.0  # the placer's top speed: the soak is about memory, not mechanics
MIB = 1024 * 1024


def _memory(pid: int) -> tuple[float, float] | None:
    """(RSS, USS) in MiB of ``pid`` and all its children, or None when it is gone."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        rss = uss = 0
        for p in procs:
            info = p.memory_full_info()
            rss += info.rss
            uss += info.uss
        return rss / MIB, uss / MIB
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _challenges_kept(state_dir: Path) -> int:
    """Rows in the eligibility service's challenge table (bounded by its TTL and MAX_CHALLENGES)."""
    with sqlite3.connect(state_dir / "eligibility" / "eligibility.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM challenges").fetchone()[0]


def _snapshot(state_dir: Path) -> dict[str, tuple[float, float] | None]:
    procs = json.loads((state_dir / "processes.json").read_text())
    out = {rec["name"]: _memory(rec["pid"]) for rec in procs}
    out["host (bench + drivers)"] = _memory(os.getpid())
    return out


@pytest.fixture(scope="module")
def soak_station(tmp_path_factory):
    from sim.station import StationError, running_station

    state = tmp_path_factory.mktemp("soak-station")
    try:
        with running_station(state, private_pcscd=True, firmware="1.4.0") as path:
            yield state, tomllib.loads(path.read_text())
    except StationError as exc:
        pytest.fail(f"the simulated station did not start: {exc}")


def _session(rig, dut, slot: int) -> None:
    dut.clear_events()  # as the plugin does before each test: waits see only this session's events
    rig.place_card(slot, speed_mm_s=FAST_MM_S)
    dut.wait_for_screen("method_select", WAIT_S)
    dut.press("face")
    ev = dut.wait_for_event("auth", WAIT_S, method="face")
    assert ev.get("result") == "ok", f"face auth of the card holder failed: {ev.fields}"
    dut.wait_for_screen("consent_surgery", WAIT_S)
    dut.press("consent")
    dut.press("consent")
    dut.wait_for_screen("consent_checkup", WAIT_S)
    dut.press("decline_or_under40")
    dut.wait_for_event("screen", WAIT_S, id="done")
    rig.remove_card(speed_mm_s=FAST_MM_S)
    dut.wait_for_screen("idle", WAIT_S)


@pytest.mark.timeout(SESSIONS * 10 + 600)  # the suite's per-test timeout is for tests, not a soak
def test_soak_memory_growth(soak_station, goals):
    from drivers.rig import RigController

    state_dir, station = soak_station
    rig = RigController(station["rig"]["url"], timeout_s=5.0)
    rig.open()
    dut = open_reader(station["dut"]["url"], timeout_s=5.0, connect_timeout_s=20.0)
    try:
        for card in station["cards"]:  # the station starts every card inserted: one on the placer only
            rig.place_card(card["placer_slot"], speed_mm_s=FAST_MM_S)
        rig.remove_card(speed_mm_s=FAST_MM_S)
        dut.wait_for_screen("idle", WAIT_S)
        card = next(c for c in station["cards"] if c["profile"] == "standard")
        identity = tomllib.loads(Path(card["persona"]).read_text())["face_identity"]
        rig.show_subject(identity)  # the holder stands in front of the reader for the whole soak

        start = _snapshot(state_dir)
        t0 = time.monotonic()
        for i in range(SESSIONS):
            _session(rig, dut, card["placer_slot"])
            if i + 1 == WARMUP_SESSIONS:
                warm = _snapshot(state_dir)
            if i + 1 == HALF_SESSIONS:
                half = _snapshot(state_dir)
            if (i + 1) % 100 == 0:
                log.info("soak: %d/%d sessions, %.0f s", i + 1, SESSIONS, time.monotonic() - t0)
        elapsed_s = time.monotonic() - t0
        end = _snapshot(state_dir)
        events_kept = len(dut.history())
        challenges_kept = _challenges_kept(state_dir)
    finally:
        dut.close()
        rig.close()

    lines = [f"soak: {SESSIONS} face-path sessions in {elapsed_s:.0f} s ({elapsed_s / SESSIONS:.2f} s each); "
             f"snapshots after 0, {WARMUP_SESSIONS}, {HALF_SESSIONS} and {SESSIONS}; reader driver keeps "
             f"{events_kept} events; eligibility keeps {challenges_kept} challenges",
             f"{'process':24s} {'RSS start':>9s} {'RSS end':>9s} {'USS start':>9s} {'USS warm':>9s} {'USS half':>9s} "
             f"{'USS end':>9s} {'start->end':>10s} {'half->end':>10s}  (MiB)"]
    worst = 0.0
    for name in start:
        snaps = [start[name], warm.get(name), half.get(name), end.get(name)]
        if any(x is None for x in snaps):
            pytest.fail(f"station process {name} is gone during the soak ({snaps})")
        a, w, h, b = snaps
        growth = b[1] - h[1]
        worst = max(worst, growth)
        lines.append(f"{name:24s} {a[0]:9.1f} {b[0]:9.1f} {a[1]:9.1f} {w[1]:9.1f} {h[1]:9.1f} {b[1]:9.1f} "
                     f"{b[1] - a[1]:10.1f} {growth:10.1f}")
        goals(f"soak USS growth of {name}, sessions {HALF_SESSIONS}->{SESSIONS}", growth,
              f"< {GROWTH_GOAL_MIB:g} MiB", "MiB", growth < GROWTH_GOAL_MIB)
    report = "\n".join(lines)
    print("\n" + report)
    log.info("%s", report)
    goals("soak worst per-process USS growth", worst, f"< {GROWTH_GOAL_MIB:g} MiB", "MiB", worst < GROWTH_GOAL_MIB)
    goals("soak eligibility challenges kept", challenges_kept, f"<= {MAX_CHALLENGES}", "rows",
          challenges_kept <= MAX_CHALLENGES)
