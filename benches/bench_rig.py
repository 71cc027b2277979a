"""Rig and camera latencies on the simulated rig.
Run: ``.venv/bin/python -m pytest benches/bench_rig.py``.

* rig command round trip (PING) over a pty and over a loopback socket;
* display-to-capture: a frame's send time at the presenter (``GET /state``) to its capture by
  drivers.camera (same host clock), per frame; and rig ``SHOW`` to the first captured frame
  showing the change (rig line + presenter re-render + stream + capture);
* card placement to pcscd reporting PRESENT: ``PLACE`` through the rig (card lowered at
  2000 mm/s) until ``SCardGetStatusChange`` reports the card, through the real private pcscd.

Goals are reported, not asserted (benches/conftest.py).
"""

from __future__ import annotations

import json
import statistics
import urllib.request

import pytest

from drivers.camera import OpenCVCamera
from drivers.pcsc import PcscReader
from drivers.rig import CardPose, RigController
from harness.facedata import resolve_faces
from sim import camera_marker
from sim.rig_process import SimProcess, rig_url

FAST_MM_S = 2000
ROUND_TRIP_GOAL_MS = 5.0
FRAME_LATENCY_GOAL_MS = 1000.0 / 12  # within one frame period of the presenter
PLACE_TO_PRESENT_GOAL_MS = 1000.0


def _median_ms(benchmark) -> float:
    return benchmark.stats.stats.median * 1000.0


@pytest.fixture(params=["pty", "socket"])
def rig(request):
    where = ["--pty"] if request.param == "pty" else ["--socket", "127.0.0.1:0"]
    with SimProcess("sim.rig", *where) as p, RigController(rig_url(p)) as r:
        yield request.param, r


@pytest.mark.benchmark(group="rig-round-trip")
def test_rig_round_trip(benchmark, rig, goals):
    kind, r = rig
    benchmark(r.ping)
    median = _median_ms(benchmark)
    benchmark.extra_info["median_ms"] = median
    goals(f"rig PING round trip over {kind} (median)", median, f"< {ROUND_TRIP_GOAL_MS} ms", "ms",
          median < ROUND_TRIP_GOAL_MS)


@pytest.fixture(scope="module")
def presenter_and_rig():
    with SimProcess("sim.camera", "--dataset", str(resolve_faces().root), "--fps", "12") as cam, \
            SimProcess("sim.rig", "--pty", "--presenter", cam.ready["control"]) as rp, \
            RigController(rig_url(rp)) as r:
        yield cam, r


def _sent_times(control: str) -> dict[int, float]:
    state = json.loads(urllib.request.urlopen(control + "/state", timeout=5).read())
    return {int(n): float(t) for n, t in state["sent"]}


@pytest.mark.benchmark(group="camera")
def test_display_to_capture_frame_latency(benchmark, presenter_and_rig, goals):
    cam_proc, r = presenter_and_rig
    r.show_no_face()
    latencies_ms: list[float] = []
    with OpenCVCamera(cam_proc.ready["url"]) as cam:
        def capture_batch() -> None:
            captured = [cam.read(timeout_s=5) for _ in range(10)]
            sent = _sent_times(cam_proc.ready["control"])
            for f in captured:
                n = camera_marker.read(f.image)
                if n in sent:
                    latencies_ms.append((f.monotonic_s - sent[n]) * 1000.0)

        benchmark.pedantic(capture_batch, rounds=6, iterations=1, warmup_rounds=1)
    median = statistics.median(latencies_ms)
    p95 = sorted(latencies_ms)[int(0.95 * (len(latencies_ms) - 1))]
    benchmark.extra_info.update(frames=len(latencies_ms), median_ms=median, p95_ms=p95)
    goals("presenter send -> OpenCV capture, per frame (median)", median, f"< {FRAME_LATENCY_GOAL_MS:.0f} ms",
          "ms", median < FRAME_LATENCY_GOAL_MS)
    goals("presenter send -> OpenCV capture, per frame (p95)", p95, "info", "ms", True)


@pytest.mark.benchmark(group="camera")
def test_rig_show_to_captured_frame(benchmark, presenter_and_rig, goals):
    cam_proc, r = presenter_and_rig
    with OpenCVCamera(cam_proc.ready["url"]) as cam:
        state = {"blank": False}

        def toggle_and_wait() -> None:
            state["blank"] = not state["blank"]
            r.blank_display() if state["blank"] else r.show_no_face()
            while True:
                dark = cam.read(timeout_s=5).image[16:].mean() < 3
                if dark == state["blank"]:
                    return

        benchmark.pedantic(toggle_and_wait, rounds=12, iterations=1, warmup_rounds=1)
    median = _median_ms(benchmark)
    benchmark.extra_info["median_ms"] = median
    goals("rig SHOW -> first captured frame showing it (median)", median, "info", "ms", True)


@pytest.fixture(scope="module")
def placer(pcscd, tmp_path_factory):
    from sim.card.deck import generate_deck, load_deck

    folder = tmp_path_factory.mktemp("bench-deck")
    generate_deck(resolve_faces(), folder, count=1, seed=3)
    persona = load_deck(folder)[0]
    reader = PcscReader(pcscd.reader_names[0])
    with SimProcess("sim.card", "serve", "--persona", str(persona.source), "--state", str(folder / "state.json"),
                    *pcscd.card_args(0), "--control-port", "0", "--removed") as card, \
            SimProcess("sim.rig", "--pty", "--card", f"1=127.0.0.1:{card.ready['control']}") as rp, \
            RigController(rig_url(rp)) as r:
        yield r, reader


@pytest.mark.benchmark(group="placement")
def test_card_placement_to_pcscd_present(benchmark, placer, goals):
    r, reader = placer

    def take_back():
        r.remove_card(FAST_MM_S)
        reader.wait_for_removal(10)
        return (), {}

    def place_and_see():
        r.place_card(1, CardPose.nominal(), FAST_MM_S)
        reader.wait_for_insertion(10)

    benchmark.pedantic(place_and_see, setup=take_back, rounds=6, iterations=1)
    median = _median_ms(benchmark)
    benchmark.extra_info["median_ms"] = median
    goals("rig PLACE -> pcscd reports PRESENT (median)", median, f"< {PLACE_TO_PRESENT_GOAL_MS:.0f} ms", "ms",
          median < PLACE_TO_PRESENT_GOAL_MS)
    r.remove_card(FAST_MM_S)
