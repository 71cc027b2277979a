"""Shared test fixtures: one private pcscd for the whole session (see docs/interfaces.md), and a
reaper (tests/reaper.py) that kills every service the session started if pytest dies unstopped
(both in tests/session_services.py)."""

from __future__ import annotations

import pytest

# the reaper and the session's private pcscd (shared with benches/conftest.py)
from session_services import pcscd, start_reaper  # noqa: E402,F401

# throwaway PostgreSQL 15 cluster (session) and a fresh SQLite|PostgreSQL records DB per test
from pgcluster import db_url, pg_cluster  # noqa: E402,F401


def pytest_configure(config):
    start_reaper(config)


@pytest.fixture(scope="session")
def card_deck(tmp_path_factory):
    """A small deck of issued cards (sim/card/deck.py), once per session: p001 standard,
    p002 face-auth, p003 standard, p004 face-auth (not registered). Faces: FACEHIL_FACES or samples."""
    from harness.facedata import resolve_faces
    from sim.card.deck import generate_deck

    out = tmp_path_factory.mktemp("card-deck")
    generate_deck(resolve_faces(), out, count=4, seed=0)
    return out


@pytest.fixture(scope="session")
def dlib_backend():
    """The dlib face backend (real weights, ~1 s to load), shared by the whole session."""
    from harness.biometrics import load_backend

    return load_backend("dlib")


@pytest.fixture(scope="session")
def faces_several():
    """A face dataset with several photos per identity, or skip naming FACEHIL_FACES."""
    from harness.facedata import NEEDS_SEVERAL, resolve_faces

    source = resolve_faces()
    if source.low_fidelity:
        pytest.skip(NEEDS_SEVERAL)
    return source


@pytest.fixture(scope="session")
def station_runs():
    """The pool of long station runs (tests/station_runs.py), shared by every module."""
    from station_runs import StationRuns

    runs = StationRuns()
    yield runs
    runs.close()


@pytest.fixture(scope="session")
def deck_template(tmp_path_factory):
    """One generated deck, copied into every station run (each would generate the same one)."""
    from harness.facedata import resolve_faces
    from sim.card.deck import generate_deck
    from sim.card.station import PLACER_DECK_SIZE

    folder = tmp_path_factory.mktemp("deck") / "deck"
    generate_deck(resolve_faces(), folder, count=PLACER_DECK_SIZE)
    return folder


NIGHTLY_CANARY = '''\
"""Canary: fails on purpose with a deck card in the assertion, and logs the card."""
import logging


def test_canary_card_repr_in_a_failure(cards):
    card = cards.pick("standard")
    logging.getLogger("canary").warning("the canary's card: %r", card)
    assert card.profile == "no-such-profile", f"canary: {card!r}"
'''


@pytest.fixture(scope="session")
def nightly_run(station_runs, tmp_path_factory):
    """Submits one whole nightly against the reference reader, with a canary scenario appended that
    fails on purpose with a deck card in its assertion; read it with ``station_runs.result("nightly")``.
    The secret scan reads what it left; the fault proofs take it as the correct reader's run."""
    from station_runs import run_nightly

    workdir = tmp_path_factory.mktemp("nightly")
    canary = workdir / "canary" / "test_zz_canary.py"
    canary.parent.mkdir()
    canary.write_text(NIGHTLY_CANARY)
    station_runs.submit("nightly", run_nightly, workdir, [canary])
    return "nightly"


@pytest.fixture(scope="session", autouse=True)
def _long_station_runs_behind_the_suite(request):
    """At the session's first test, when the session holds tests that judge the long station runs,
    start them (the nightly, and each module's ``submit_station_runs``): they then run behind the
    rest of the suite, which leaves the cores about half idle, instead of after it."""
    items = request.session.items
    if not any({"nightly_run", "fault_runs"} & set(getattr(item, "fixturenames", ())) for item in items):
        return
    request.getfixturevalue("nightly_run")
    runs, factory, deck = (request.getfixturevalue(name) for name in ("station_runs", "tmp_path_factory",
                                                                       "deck_template"))
    for module in dict.fromkeys(getattr(item, "module", None) for item in items):
        submit = getattr(module, "submit_station_runs", None)
        if submit is not None:
            submit(runs, factory, deck)
