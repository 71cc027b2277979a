"""The card path of the reader: its PC/SC behaviour (ATR, extended APDUs, a card removed mid-APDU,
presence detection) and the reader noticing a card left behind after the visit."""

from __future__ import annotations

import threading
import time

import pytest

from drivers.apdu import TransportError, build_apdu
from drivers.mynumber import CardStatusError, MyNumberCard
from drivers.pcsc import PcscError
from harness.measure import Limit
from scenarios.steps import PRESENCE, await_event, await_screen, pick, place_and_time_presence, tells

pytestmark = [pytest.mark.flow("card_io"), pytest.mark.requires("card_placer", "pcsc", "dut", "cards")]

CARD_TIMEOUT_S = 10.0
ALARM_TIMEOUT_S = 25.0  # the reader's reminder period (15 s by default) plus margin


@pytest.mark.parametrize("profile", ["standard", "face-auth"])
def test_atr_valid_and_stable(cards, rig, dut, card_reader, measure, profile):
    card = pick(cards, profile)
    first = place_and_time_presence(rig, card_reader, card, measure, dut)
    with card_reader.connect() as conn:
        atr = conn.atr
    assert atr[:1] in (b"\x3b", b"\x3f"), f"ATR {atr.hex()} has no valid TS byte"
    assert len(atr) >= 2 and atr == first.atr, f"ATR on connect {atr.hex()} differs from the event's {first.atr.hex()}"
    rig.remove_card()
    card_reader.wait_for_removal(timeout_s=CARD_TIMEOUT_S)
    await_screen(dut, "idle")
    place_and_time_presence(rig, card_reader, card, measure, dut)
    with card_reader.connect() as conn:
        assert conn.atr == atr, "the ATR changed between two placements of the same card"


def test_extended_apdu(cards, rig, dut, card_reader, measure):
    """An extended-length READ BINARY returns more than 256 bytes in one APDU, and the same bytes as short reads."""
    card = pick(cards)
    place_and_time_presence(rig, card_reader, card, measure, dut)
    with card_reader.connect() as conn:
        short = MyNumberCard(conn).certificate_der("auth")
        mnc = MyNumberCard(conn)
        mnc.select_ap("jpki")
        mnc.select_ef(0x000A)
        resp = conn.transmit(build_apdu(0x00, 0xB0, 0, 0, le=len(short), extended=True))
    assert resp.sw == 0x9000, f"extended READ BINARY answered {resp.sw:04X}"
    assert len(short) > 256, "the certificate is too small to need an extended APDU"
    assert resp.data == short, "the extended read differs from the short reads"
    measure("extended_read_ms", resp.elapsed_ms, limit=Limit(high=500, marginal=200))


def test_card_removed_mid_apdu(cards, rig, dut, card_reader, measure):
    """Taking the card away during a stream of APDUs ends it with a driver error, never a hang; the card
    then reads again when placed."""
    card = pick(cards)
    place_and_time_presence(rig, card_reader, card, measure, dut)
    outcome: dict = {}
    started = threading.Event()

    def stream() -> None:
        try:
            with card_reader.connect() as conn:
                mnc = MyNumberCard(conn)
                while True:
                    mnc.certificate_der("auth")
                    started.set()
        except (TransportError, CardStatusError, PcscError) as exc:
            outcome["error"] = exc
        except Exception as exc:  # anything else is a driver bug the scenario must show
            outcome["unexpected"] = exc
        finally:
            started.set()

    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    assert started.wait(CARD_TIMEOUT_S), "the first read never finished"
    rig.remove_card()
    worker.join(CARD_TIMEOUT_S)
    assert not worker.is_alive(), "the APDU stream hangs after the card was removed"
    assert "unexpected" not in outcome, f"removal raised {outcome.get('unexpected')!r}"
    assert "error" in outcome, "the stream ended without an error"
    card_reader.wait_for_removal(timeout_s=CARD_TIMEOUT_S)
    await_screen(dut, "idle")
    place_and_time_presence(rig, card_reader, card, measure, dut)
    with card_reader.connect() as conn:
        assert MyNumberCard(conn).certificate_der("auth")[:2] == b"\x30\x82"


def test_reader_notices_card_removed_mid_flow(cards, visit):
    """The reader under test sees the card leave while it waits for the patient, and returns to idle."""
    v = visit(pick(cards))
    v.show_nobody()
    v.place()
    removed_s = time.monotonic()
    v.remove()
    ev = await_event(v.dut, "card", state="removed")
    v.measure("removal_detect_ms", max(0.0, (ev.host_monotonic_s - removed_s) * 1000.0), limit=PRESENCE)
    if tells(v.dut, "reader_events"):  # the error code is internal; the screen shows idle
        await_event(v.dut, "error", code="card_removed")
    assert v.dut.wait_for_screen("idle", CARD_TIMEOUT_S).id == "idle"


@pytest.mark.clause("N16")
@pytest.mark.requires("subject_display", "reader_events")  # a panel shows the alarm no differently
def test_card_left_on_reader_raises_alarm(cards, visit):
    """After the visit, a card left on the reader raises the take-your-card alarm."""
    v = visit(pick(cards, registered=True))
    v.show_holder()
    v.place()
    assert v.face_auth().get("result") == "ok"
    v.consents()
    v.finish()
    alarm = await_event(v.dut, "alarm", ALARM_TIMEOUT_S)
    assert alarm.get("kind") == "card_left", f"unexpected alarm {alarm.fields}"
