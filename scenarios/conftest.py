"""Fixtures shared by the scenario files (the station fixtures themselves come from harness.plugin)."""

from __future__ import annotations

import pytest

from harness.suites import FLOW_FILES
from scenarios.steps import Visit


@pytest.fixture(scope="session")
def match_threshold(station) -> float | None:
    """The reader's face-match threshold: ``[dut] match_threshold``, else (the simulated reference
    reader) the dlib backend's default; None when unknown (scores are then not recorded)."""
    value = station.dut.extra.get("match_threshold") if station.dut else None
    if value is not None:
        return float(value)
    if station.station.simulated and station.dut is not None and station.dut.adapter == "reference":
        from harness.biometrics.dlib_backend import DEFAULT_THRESHOLD

        return DEFAULT_THRESHOLD
    return None


@pytest.fixture
def visit(dut, rig, measure, match_threshold):
    """``visit(card)``: one patient's visit to the reader with that deck card. The reader's face-match
    scores of every visit go to the run records at the end of the scenario."""
    visits: list[Visit] = []

    def make(card) -> Visit:
        if card.slot is None:
            pytest.skip(f"card {card.id} has no placer slot")
        v = Visit(dut=dut, rig=rig, card=card, measure=measure, match_threshold=match_threshold)
        visits.append(v)
        return v

    yield make
    for v in visits:
        v.record_scores()


def pytest_collection_modifyitems(session, config, items):
    """Run the flow files in suite order: the health check first, the firmware update last."""
    order = {name: i for i, name in enumerate(FLOW_FILES)}

    def key(item):
        return order.get(item.path.name, len(order))

    items.sort(key=key)  # stable: the order inside a file is kept
