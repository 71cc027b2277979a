"""A small campaign catches each face-matching fault of the reference reader; the correct reader passes.

One simulated station (reader firmware 1.6.0, with presentation-attack detection) runs:
1. the correct reader through `facehil campaign run --station FILE` (the CLI, its records and its
   report): every limit of the station file passes;
2. the same reader with ``loose_threshold`` (hard impostors only), ``strict_threshold`` (holders
   only) and ``pass_screen_replay`` (phone-screen replays only), switched on through the reader's
   supply port as a faulty build would be flashed. Each fault's figure FAILs its limit and
   `campaign compare` against the correct run flags it as a REGRESSION, for that figure.
The ``pass_screen_replay`` campaign is killed after its first transaction and resumed
(`--resume`): no transaction is lost or run twice.

The cards are the deck's ones whose holders the correct reader accepts at nominal capture, and
whose nearest look-alikes it rejects: the scenes are deterministic, so the campaign is too.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.campaign.compare import compare_runs
from harness.campaign.metrics import summarize_run
from harness.campaign.plan import parse_plan
from harness.campaign.session import open_devices, resume_campaign, start_campaign
from harness.config import load_station
from harness.deck import load_deck
from harness.facedata import resolve_faces
from harness.records import RecordStore

CARDS = ["p001", "p003", "p008"]
SEED = 11
LIMITS = """
[campaign.limits]
confidence = 0.75
frr = 0.5
far_hard = 0.5
apcer_screen = 0.5
"""
CORRECT_PLAN = f"""
[campaign]
seed = {SEED}
cards = {CARDS!r}
[genuine]
conditions = ["nominal"]
[impostors]
random_per_card = 0
hard_per_card = 1
hard_pool = 200
[attacks]
species = ["screen"]
"""
ONLY = {
    "loose_threshold": {"genuine": {"repeats": 0}, "attacks": {"per_card": 0}},
    "strict_threshold": {"impostors": {"hard_per_card": 0}, "attacks": {"per_card": 0}},
    "pass_screen_replay": {"genuine": {"repeats": 0}, "impostors": {"hard_per_card": 0}},
}
FIGURE = {"loose_threshold": "far_hard", "strict_threshold": "frr", "pass_screen_replay": "apcer_screen"}


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    faces = resolve_faces(None)
    if faces.low_fidelity:
        pytest.skip("a campaign needs a real face dataset (FACEHIL_FACES); only the packaged samples are here")
    from sim.station import running_station

    state = tmp_path_factory.mktemp("campaign-station")
    with running_station(state, private_pcscd=True, firmware="1.6.0", options={"place_card": False}) as path:
        station_file = state / "station-campaign.toml"
        station_file.write_text(path.read_text() + LIMITS)
        yield load_station(station_file)


def _faults(station, names: str) -> None:
    host, port = station.dut.extra["supply"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(f"FAULTS {names}\n".encode())
        reply = conn.makefile().readline()
    assert reply.startswith("OK"), reply


def _plan(base: dict, only: dict) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in only.items():
        out.setdefault(section, {}).update(values)
    return out


def test_each_fault_is_caught_and_the_correct_reader_passes(station, tmp_path):
    import tomllib

    from harness.cli import app

    db = f"sqlite:///{tmp_path / 'campaign.db'}"
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(CORRECT_PLAN)
    _faults(station, "none")
    result = CliRunner().invoke(app, ["campaign", "run", "--station", str(station.path), "--plan", str(plan_file),
                                      "--db", db, "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    with RecordStore(db) as store:
        correct = summarize_run(store, 1)
    assert {v["name"]: v["verdict"] for v in correct["verdicts"]} == \
        {"frr": "PASS", "far_hard": "PASS", "apcer_screen": "PASS"}, correct["verdicts"]
    assert correct["transactions"] == 9 and correct["errors"] == 0 and correct["seed"] == SEED
    assert (tmp_path / "report" / "campaign-1.html").exists()

    base = tomllib.loads(CORRECT_PLAN)
    deck = load_deck(station)
    for run_id, fault in enumerate(("loose_threshold", "strict_threshold", "pass_screen_replay"), start=2):
        _faults(station, fault)
        try:
            plan_dict = _plan(base, ONLY[fault])
            plan = parse_plan(plan_dict)
            if fault == "pass_screen_replay":
                _killed_then_resumed(station, plan_dict, tmp_path, db, run_id)
            else:
                with RecordStore(db) as store, open_devices(station) as devices:
                    assert start_campaign(store, station, plan, deck, devices) == run_id
        finally:
            _faults(station, "none")
        with RecordStore(db) as store:
            faulty = summarize_run(store, run_id)
            lines = {x["figure"]: x for x in compare_runs(store, 1, run_id)["lines"]}
        figure = FIGURE[fault]
        verdicts = {v["name"]: v["verdict"] for v in faulty["verdicts"]}
        assert verdicts[figure] == "FAIL", (fault, faulty["verdicts"], faulty["rates"][figure])
        assert lines[figure]["flag"] == "REGRESSION", (fault, lines[figure])
        flagged = {f for f, x in lines.items() if x["flag"] == "REGRESSION"}
        assert flagged <= {figure, "far", "fmr", "fnmr", "fta", "transaction_ms[genuine]", "transaction_ms[all]"}, \
            (fault, flagged)


def _killed_then_resumed(station, plan: dict, tmp_path, db, run_id) -> None:
    """The campaign CLI is killed once a transaction is recorded; ``--resume`` finishes it."""
    import tomli_w

    plan_file = tmp_path / "replay.toml"
    plan_file.write_text(tomli_w.dumps(plan))
    facehil = Path(sys.executable).with_name("facehil")
    proc = subprocess.Popen([str(facehil), "campaign", "run", "--station", str(station.path),
                             "--plan", str(plan_file), "--db", db], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = db.removeprefix("sqlite:///")
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with sqlite3.connect(path, timeout=10) as conn:
                try:
                    n = conn.execute("SELECT count(*) FROM campaign_transactions WHERE run_id = ?", (run_id,)).fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0
            if n >= 1:
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with RecordStore(db) as store:  # opening marks the killed run aborted (its process is gone)
        from harness.campaign.records import load_campaign

        run, _, done = load_campaign(store, run_id)
        assert run.status == "aborted" and 1 <= len(done) < 3, (run.status, len(done))
        with open_devices(station) as devices:
            resume_campaign(store, run_id, devices)
        run, camp, done = load_campaign(store, run_id)
    assert run.status in ("passed", "failed") and camp.resumed == 1
    assert sorted(r["seq"] for r in done) == [0, 1, 2]  # each scheduled transaction exactly once

