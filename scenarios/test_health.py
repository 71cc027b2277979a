"""Station health check, run before every suite: each device answers, the reference card reads,
the reference subject matches. A failure here skips the rest of the run (harness.plugin).
The device checks (rig, camera, PC/SC) are the station's, and cite no clause of the notice."""

from __future__ import annotations

import pytest

from drivers.mynumber import MyNumberCard
from drivers.pcsc import list_readers
from harness.measure import Limit
from scenarios.steps import pick, place_and_time_presence, tells

pytestmark = [pytest.mark.health, pytest.mark.flow("health")]


@pytest.mark.requires("rig")
def test_rig_answers(rig, measure):
    measure("rig_round_trip_ms", rig.ping(), limit=Limit(high=200, marginal=50))
    health = rig.health()
    assert health.ok, f"rig controller reports faults: {', '.join(health.faults)}"


@pytest.mark.clause("N12", "N20")  # unattended face mode first; visual mode only when staff launch it
@pytest.mark.requires("dut")
def test_reader_answers(dut):
    if tells(dut, "reader_info"):  # a reader seen only through its screen answers by showing one
        assert dut.info().version, "the reader reports no firmware version"
    screen = dut.screen()
    assert screen.id == "idle", f"the reader is not idle at the start: {screen.id} ({screen.message})"
    assert screen.mode == "face", f"the reader starts in {screen.mode} mode, not unattended face mode"


@pytest.mark.requires("camera", "subject_display")
def test_camera_sees_the_display(camera, rig, measure):
    rig.show_no_face()
    first = camera.read(timeout_s=5.0)
    assert first.image is not None and first.image.size, "the camera delivered an empty frame"
    later = camera.read(timeout_s=5.0)
    assert later.monotonic_s > first.monotonic_s, "the camera delivers no new frames"
    measure("camera_frame_interval_ms", (later.monotonic_s - first.monotonic_s) * 1000.0, limit=Limit(high=1000))


@pytest.mark.requires("pcsc")
def test_pcsc_reader_is_listed(station):
    readers = list_readers()
    assert station.pcsc.reader in readers, f"PC/SC does not list {station.pcsc.reader!r}; it lists {readers}"


@pytest.mark.clause("N1")  # the card's profile (a face-auth card has no usable PIN) reads as issued
@pytest.mark.requires("card_placer", "pcsc", "dut", "cards")
def test_reference_card_reads(cards, rig, dut, card_reader, measure):
    """The first card of the deck answers over PC/SC (ATR, JPKI application, profile) and the reader
    under test reads it."""
    card = pick(cards)
    place_and_time_presence(rig, card_reader, card, measure, dut)
    with card_reader.connect() as conn:
        assert conn.atr[:1] in (b"\x3b", b"\x3f"), f"ATR {conn.atr.hex()} has no valid TS byte"
        profile = MyNumberCard(conn).detect_profile()
    assert profile.name == card.profile, f"{card.id} reads as {profile.name} ({'; '.join(profile.reasons)})"


@pytest.mark.clause("N20")  # face authentication, the basic method, works for the holder
@pytest.mark.requires("card_placer", "subject_display", "dut", "cards")
def test_reference_subject_matches(cards, visit):
    """The reference card's holder is matched by the reader under nominal conditions."""
    v = visit(pick(cards))
    v.show_holder("nominal")
    v.place()
    auth = v.face_auth()
    assert auth.get("result") == "ok", f"the reference subject was not matched: {auth.fields}"
