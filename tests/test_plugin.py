"""The facehil pytest plugin: station file errors, requires() skips, the health gate, teardown.

Scenario sessions run through pytester. The rig tests use the real simulated rig controller
(`python -m sim.rig` on a socket), so the teardown is checked against a real device.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import cv2  # noqa: F401  # loaded before pytester's in-process runs, which unload what they import
import pytest

from sim.pcscd import pid_alive

pytest_plugins = ["pytester"]

PERSONA = """\
id = "c1"
profile = "standard"
birth_date = 1990-04-01
pin = "1234"
registered_for_insurance = true
face_identity = "Someone_Else"
"""


def _station(tmp: Path, body: str) -> Path:
    (tmp / "c1.toml").write_text(PERSONA)
    path = tmp / "station.toml"
    path.write_text('[station]\nname = "unit"\n\n' + body)
    return path


@pytest.fixture(scope="module")
def sim_rig(tmp_path_factory):
    """The simulated rig controller on a loopback socket, with two deck slots and no card processes."""
    logdir = tmp_path_factory.mktemp("rig")
    log = open(logdir / "rig.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sim.rig", "--socket", "127.0.0.1:0", "--card", "0", "--card", "1"],
                            stdout=subprocess.PIPE, stderr=log)
    try:
        line = proc.stdout.readline().decode()
        m = re.match(r"READY socket=(\S+)", line)
        if not m:
            pytest.fail(f"sim.rig did not start: {line!r}; see {logdir / 'rig.log'}")
        yield f"socket://{m.group(1)}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# -- station file errors ------------------------------------------------------------------------

def test_missing_station_file_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x(station):\n    pass\n")
    result = pytester.runpytest("--station", str(pytester.path / "nope.toml"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--station:*nope.toml*cannot read the station file*"])


def test_bad_station_key_names_file_and_key(pytester):
    path = _station(pytester.path, '[rig]\nurl = "ftp://nowhere"\n')
    pytester.makepyfile("def test_x(station):\n    pass\n")
    result = pytester.runpytest("--station", str(path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{path}: rig.url: expected*"])


def test_faults_need_the_simulated_station(pytester):
    path = _station(pytester.path, "")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--station", str(path), "--faults", "match_carer")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--faults only apply to the simulated station*"])


def test_unknown_fault_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--faults", "forget_face_mode,teleport")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--faults: unknown reader fault(s) teleport; known: forget_face_mode*"])


def test_station_pcsc_socket_is_set_before_any_pcsc_call(pytester):
    path = _station(pytester.path, '[pcsc]\nreader = "pcsc:Some Reader 00"\nsocket = "/run/x/pcscd.comm"\n')
    pytester.makepyfile("""
        import os

        def test_env():
            assert os.environ["PCSCLITE_CSOCK_NAME"] == "/run/x/pcscd.comm"
    """)
    result = pytester.runpytest_subprocess("--station", str(path))  # its own process: libpcsclite reads it once
    result.assert_outcomes(passed=1)


def test_no_device_fixture_no_station(pytester):
    """Without --station and without a device fixture, nothing is started (and nothing fails)."""
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["facehil station: simulated (started on first use)"])


# -- requires() and the deck ----------------------------------------------------------------------

def test_requires_skips_naming_the_missing_device(pytester):
    path = _station(pytester.path, '[[cards]]\nid = "c1"\npersona = "c1.toml"\nplacer_slot = 0\n')
    pytester.makepyfile("""
        import pytest

        @pytest.mark.requires("card_placer", "power_relay")
        def test_needs_rig():
            pass

        @pytest.mark.requires("cards")
        def test_needs_cards(cards):
            assert [c.id for c in cards] == ["c1"]
            c = cards.pick("standard", over40=False)
            assert c.pin == "1234" and c.registered and c.holder == "Someone_Else"

        def test_missing_card_kind_is_named(cards):
            from harness.deck import NoSuchCard
            with pytest.raises(NoSuchCard, match="face-auth"):
                cards.pick("face-auth")

        @pytest.mark.requires("teleporter")
        def test_typo():
            pass
    """)
    result = pytester.runpytest("--station", str(path), "-rs")
    result.assert_outcomes(passed=2, skipped=1, errors=1)
    result.stdout.fnmatch_lines([
        "*requires() names unknown device(s) teleporter*",
        "*station lacks card_placer (a card placer on the rig*); power_relay (a power relay on the rig*",
    ])


def test_requires_skips_what_the_readers_adapter_cannot_tell(pytester):
    """A reader capability (drivers.reader.READER_CAPABILITIES) is judged by the [dut] adapter's
    declaration, without opening the reader: the screen adapter has none, a control port all."""
    for adapter, outcome in (("screen", dict(passed=1, skipped=2)), ("reference", dict(passed=3))):
        sub = pytester.path / adapter
        sub.mkdir()
        path = _station(sub, f'[dut]\nadapter = "{adapter}"\nurl = "socket://127.0.0.1:9"\n')
        pytester.makepyfile(**{f"{adapter}/test_caps": """
            import pytest

            @pytest.mark.requires("dut", "reader_events")
            def test_needs_events():
                pass

            @pytest.mark.requires("firmware_update", "raw_pin")
            def test_needs_firmware():
                pass

            @pytest.mark.requires("dut")
            def test_screens_only():
                pass
        """})
        result = pytester.runpytest(str(sub), "--station", str(path), "-rs")
        result.assert_outcomes(**outcome)
        if adapter == "screen":
            result.stdout.fnmatch_lines([
                "*the reader's 'screen' adapter cannot tell reader_events (the reader's internal events*",
                "*the reader's 'screen' adapter cannot tell firmware_update (*); raw_pin (*",
            ])


def test_device_fixture_without_section_skips(pytester):
    path = _station(pytester.path, "")
    pytester.makepyfile("def test_x(dut):\n    pass\n\ndef test_y(camera):\n    pass\n")
    result = pytester.runpytest("--station", str(path), "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*lacks dut (the reader under test's control port*", "*lacks camera (a reference camera*"])


def test_station_limits_reach_measure(pytester):
    path = _station(pytester.path, "[limits.latency_ms]\nhigh = 10.0\n")
    pytester.makepyfile("""
        def test_latency(measure):
            measure("latency_ms", 25.0)
    """)
    result = pytester.runpytest("--station", str(path))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*latency_ms*"])


# -- the health gate ------------------------------------------------------------------------------

def test_failed_health_check_skips_the_rest(pytester):
    pytester.makepyfile(test_a_health="""
        import pytest
        pytestmark = pytest.mark.health

        def test_device_answers():
            assert False, "camera gave no frame"

        def test_other_health_still_runs():
            pass
    """, test_b_flow="""
        def test_flow():
            pass
    """)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(failed=1, passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*station health check failed (test_a_health.py::test_device_answers)*"])


# -- teardown against the real simulated rig ------------------------------------------------------

def test_teardown_returns_the_card_after_a_failure(pytester, sim_rig):
    path = _station(pytester.path, f'[rig]\nurl = "{sim_rig}"\n\n'
                                   '[[cards]]\nid = "c1"\npersona = "c1.toml"\nplacer_slot = 0\n')
    pytester.makepyfile("""
        import pytest

        def test_a_fails_with_card_placed(rig):
            rig.place_card(0)
            rig.show_no_face()
            assert rig.status().card_slot == 0
            raise AssertionError("scenario failed mid-flow")

        def test_b_station_is_safe(rig):
            st = rig.status()
            assert st.card_slot is None, st
            assert st.display == "blank", st

        @pytest.mark.requires("card_placer", "power_relay", "subject_display", "lighting")
        def test_c_caps_from_hello(rig):
            pass
    """)
    result = pytester.runpytest("--station", str(path))
    result.assert_outcomes(failed=1, passed=2)
    result.stdout.fnmatch_lines(["*AssertionError: scenario failed mid-flow"])


def test_first_test_finds_the_station_safe(pytester, sim_rig):
    """A station left with a card on the reader (as `facehil sim up` leaves it) is made safe before
    the first test that uses a device."""
    from drivers.rig import RigController

    with RigController(sim_rig) as rig:
        rig.place_card(1)
        rig.show_no_face()
    path = _station(pytester.path, f'[rig]\nurl = "{sim_rig}"\n\n'
                                   '[[cards]]\nid = "c1"\npersona = "c1.toml"\nplacer_slot = 1\n')
    pytester.makepyfile("""
        def test_first(rig):
            st = rig.status()
            assert st.card_slot is None, st
            assert st.display == "blank", st
    """)
    result = pytester.runpytest("--station", str(path))
    result.assert_outcomes(passed=1)


def test_teardown_error_when_the_rig_stops_answering(pytester, tmp_path):
    """A station whose rig is gone cannot be made safe: the test errors, naming the rig."""
    proc = subprocess.Popen([sys.executable, "-m", "sim.rig", "--socket", "127.0.0.1:0", "--card", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        url = "socket://" + re.match(r"READY socket=(\S+)", proc.stdout.readline().decode()).group(1)
        path = _station(pytester.path, f'[rig]\nurl = "{url}"\ntimeout_s = 0.5\n')
        pytester.makepyfile(f"""
            import os, signal

            def test_rig_dies(rig):
                rig.place_card(0)
                os.kill({proc.pid}, signal.SIGKILL)
        """)
        result = pytester.runpytest("--station", str(path))
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(["*station not returned to a safe state*rig*"])
    finally:
        proc.kill()
        proc.wait()


# -- the simulated station's life cycle -----------------------------------------------------------

def test_sigterm_stops_the_simulated_station(pytester, tmp_path):
    """A session killed with SIGTERM still stops every process of the station it started."""
    import json
    import signal

    state = tmp_path / "station"
    test_file = pytester.makepyfile("""
        import time

        def test_long(dut):
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider",
                             "--sim-state-dir", str(state)], cwd=pytester.path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        pids: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                recs = json.loads((state / "processes.json").read_text())
            except (OSError, ValueError):
                recs = []
            if (state / "station.toml").exists() and any(r["name"] == "reader" for r in recs):
                pids = [r["pid"] for r in recs]
                break
            time.sleep(0.2)
        assert pids, "the simulated station never came up"
        time.sleep(1.0)  # inside the test now
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        left = [p for p in pids if pid_alive(p)]
        assert not left, f"station processes left running after SIGTERM: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
