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

The cards are measured, not named: the first three of the deck whose holder the correct reader
accepts at nominal capture but ``strict_threshold`` would refuse, and whose nearest look-alike (the
campaign's own hard-impostor pick) it refuses but ``loose_threshold`` would accept. Scores come
from the reader's matcher on the card's JPEG 2000 photo and the presenter's own JPEG frame read
through the camera driver (FFmpeg decodes it, as in the reader; cv2.imdecode would move scores by
up to 0.012), so they are the scores the campaign records; the scenes are deterministic, so the
campaign is too. A face set or pipeline with no such cards skips, naming the scores it found.
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

from drivers.station_auth import TOKEN_ENV
from harness.campaign.compare import compare_runs
from harness.campaign.metrics import summarize_run
from harness.campaign.plan import parse_plan
from harness.campaign.session import open_devices, resume_campaign, start_campaign
from harness.config import load_station
from harness.deck import load_deck
from harness.facedata import resolve_faces
from harness.records import RecordStore

SEED = 11
DECK_SIZE = 16  # the default placer deck (10 + 3) has two fitting cards on lfw-dev; this one has five
N_CARDS = 3  # 3 of 3 refused FAILs a 0.5 limit at 75 % confidence (2 of 2 is INCONCLUSIVE)
LIMITS = """
[campaign.limits]
confidence = 0.75
frr = 0.5
far_hard = 0.5
apcer_screen = 0.5
"""


def correct_plan(cards: list[str]) -> dict:
    return {"campaign": {"seed": SEED, "cards": list(cards)},
            "genuine": {"conditions": ["nominal"]},
            "impostors": {"random_per_card": 0, "hard_per_card": 1, "hard_pool": 200},
            "attacks": {"species": ["screen"]}}


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
    with running_station(state, private_pcscd=True, firmware="1.6.0", options={"place_card": False, "deck_size": DECK_SIZE}) as path:
        station_file = state / "station-campaign.toml"
        station_file.write_text(path.read_text() + LIMITS)
        yield load_station(station_file)


@pytest.fixture(scope="module")
def cards(station, tmp_path_factory) -> list[str]:
    """The first ``N_CARDS`` deck cards on which both threshold faults show (module docstring)."""
    from sim.reader.hw import THRESHOLD_FAULT_SHIFT

    deck = load_deck(station)
    found, seen, t = _fitting_cards(station, deck, THRESHOLD_FAULT_SHIFT, tmp_path_factory.mktemp("frames"))
    if len(found) < N_CARDS:
        pytest.skip(f"the deck has {len(found)} card(s) whose holder scores in [t, t + {THRESHOLD_FAULT_SHIFT}) and "
                    f"whose nearest look-alike in [t - {THRESHOLD_FAULT_SHIFT}, t) (t = the reader's threshold, "
                    f"{t:.3f}); {N_CARDS} needed. Scores, card: (holder, look-alike): {seen}")
    return found


def _fitting_cards(station, deck, shift: float, frames: Path) -> tuple[list[str], dict, float]:
    """Cards whose holder and nearest look-alike score where the threshold faults change the
    decision, with what the reader's matcher scored for each card looked at."""
    from drivers.camera import OpenCVCamera
    from harness.campaign.session import make_schedule
    from harness.facedata import list_identities
    from sim.camera import Presenter
    from sim.camera_scene import SceneRenderer
    from sim.card.persona import Persona
    from sim.reader.hw import RealHardware

    probe = correct_plan([])
    del probe["campaign"]["cards"]  # every usable card: the look-alike pool excludes the whole deck's holders anyway
    probe = _plan(probe, {"genuine": {"repeats": 0}, "attacks": {"per_card": 0}})
    _, trials = make_schedule(parse_plan(probe), station, deck)
    lookalike = {tr.card: tr.subject for tr in trials if tr.kind == "impostor_hard"}
    # the reference reader's own matcher (backend options and threshold), without its other parts
    matcher = RealHardware(pcsc_readers=[], camera_url="", eligibility_url="", deck_dirs=[], pki_dir=None).matcher()
    presenter = Presenter(SceneRenderer(list_identities(station.faces.dataset)))
    t = matcher.threshold

    def score(enrollment, subject: str) -> float | None:
        presenter.set_display({"mode": "subject", "id": subject, "condition": "nominal"})
        presenter.produce()  # the JPEG frame the camera streams, frame counter and all
        stream = frames / f"{subject}.mjpeg"
        stream.write_bytes(presenter.jpeg)
        with OpenCVCamera(str(stream)) as cam:
            frame = cam.read(timeout_s=5.0)
        return matcher.verify(enrollment, frame.image).score

    found, seen = [], {}
    for card in sorted(deck, key=lambda c: c.id):
        if card.id not in lookalike or len(found) == N_CARDS:
            continue
        photo = (Persona.load(card.persona).card_dir / "face.jp2").read_bytes()  # what the reader reads off the card
        enrollment = matcher.enroll(photo)
        g = score(enrollment, card.holder) if enrollment.ok else None
        seen[card.id] = (None if g is None else round(g, 3), None)
        if g is None or not t <= g < t + shift:
            continue  # the look-alike is not worth rendering
        i = score(enrollment, lookalike[card.id])
        seen[card.id] = (round(g, 3), None if i is None else round(i, 3))
        if i is not None and t - shift <= i < t:
            found.append(card.id)
    return found, seen, t


def _faults(station, names: str) -> None:
    """Flash a faulty build: FAULTS on the reader's supply port, with the station's token."""
    from drivers.station_auth import authenticate_socket
    from sim.station import read_station_token

    host, port = station.dut.extra["supply"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        assert authenticate_socket(conn, "supply port", token=read_station_token(station.station.state_dir))
        conn.sendall(f"FAULTS {names}\n".encode())
        reply = conn.makefile().readline()
    assert reply.startswith("OK"), reply


def _plan(base: dict, only: dict) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in only.items():
        out.setdefault(section, {}).update(values)
    return out


def test_each_fault_is_caught_and_the_correct_reader_passes(station, cards, tmp_path):
    import tomli_w

    from harness.cli import app

    db = f"sqlite:///{tmp_path / 'campaign.db'}"
    plan_file = tmp_path / "plan.toml"
    base = correct_plan(cards)
    plan_file.write_text(tomli_w.dumps(base))
    _faults(station, "none")
    result = CliRunner().invoke(app, ["campaign", "run", "--station", str(station.path), "--plan", str(plan_file),
                                      "--db", db, "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    # the station token was in this process's environment only while the devices were open:
    # a later station started by this process must not inherit it (its ports would refuse us)
    assert TOKEN_ENV not in os.environ
    with RecordStore(db) as store:
        correct = summarize_run(store, 1)
    assert {v["name"]: v["verdict"] for v in correct["verdicts"]} == \
        {"frr": "PASS", "far_hard": "PASS", "apcer_screen": "PASS"}, correct["verdicts"]
    assert correct["transactions"] == 9 and correct["errors"] == 0 and correct["seed"] == SEED
    assert (tmp_path / "report" / "campaign-1.html").exists()

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

