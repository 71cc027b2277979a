"""A power cut during the reference reader's boot: the supply answers at once, no part is left
running twice, and the next boot works (the flaky POWER OFF/ON of test_rig_station)."""

from __future__ import annotations

import threading
import time

from sim.reader.hw import CardWatch, RealHardware


def test_card_watch_can_be_stopped_before_it_started():
    watch = CardWatch(["Virtual PCD 00 00", "Virtual PCD 00 01"], submit=lambda inp: None)
    watch.stop()  # a power cut that came before start(): used to raise "cannot join thread"


def test_hardware_start_first_stops_parts_a_raced_boot_left_running(tmp_path, pcscd):
    hw = RealHardware(pcsc_readers=pcscd.reader_names, camera_url="http://127.0.0.1:9/none",
                      eligibility_url="http://127.0.0.1:9", deck_dirs=[], pki_dir=None)
    hw.matcher = lambda: None  # type: ignore[method-assign]  # no face model needed for card watching
    before = {t.ident for t in threading.enumerate()}
    hw.start(lambda inp: None)
    first = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("card-watch")]
    assert len(first) == 2
    hw.start(lambda inp: None)  # a second start without a stop in between (a boot that raced a cut)
    deadline = time.monotonic() + 3
    while any(t.is_alive() for t in first) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.is_alive() for t in first), "the first boot's card watchers still run"
    t0 = time.monotonic()
    hw.stop()
    assert time.monotonic() - t0 < 2.5, "stopping the card watchers took more than their shared budget"
    assert not [t for t in threading.enumerate() if t.name.startswith("card-watch") and t.ident not in before]
