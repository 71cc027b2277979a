"""harness/config.py: station files -> typed Station; every error names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from harness.config import DeviceUrl, StationConfigError, load_station, parse_device_url

FULL = """
[station]
name = "lab-1"
state_dir = "state"

[pcsc]
reader = "pcsc:ACS ACR1252 1S CL Reader PICC 00 00"
reference_reader = "Virtual PCD 00 01"

[faces]
dataset = "../faces"

[[cards]]
id = "std-01"
persona = "deck/p1.toml"
placer_slot = 1

[[cards]]
id = "face-01"
persona = "/abs/p2.toml"
profile = "face-auth"
placer_slot = 2
control = "127.0.0.1:4000"

[rig]
url = "serial:/dev/ttyUSB0"
baudrate = 57600

[camera]
url = "frames/%04d.png"
width = 1280
fps = 30

[dut]
adapter = "reference"
url = "socket://127.0.0.1:7100"
firmware_slot = "b"

[eligibility]
url = "http://127.0.0.1:8900"

[[subjects]]
id = "Ellen_Martin"
card = "face-01"

[[subjects]]
id = "El_Hadji_Diouf"

[limits.face_auth_latency_ms]
high = 3000
marginal_high = 2500
"""


def write(tmp_path: Path, text: str, name: str = "station.toml") -> Path:
    folder = tmp_path / "rig"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_full_station_loads_typed_with_paths_resolved(tmp_path):
    path = write(tmp_path, FULL)
    st = load_station(path)
    assert st.station.name == "lab-1" and not st.station.simulated
    assert st.station.state_dir == path.parent / "state"
    assert st.pcsc.reader == "ACS ACR1252 1S CL Reader PICC 00 00"
    assert st.pcsc.reference_reader == "Virtual PCD 00 01"
    assert st.faces.dataset == (tmp_path / "faces").resolve()
    assert [c.id for c in st.cards] == ["std-01", "face-01"]
    assert st.cards[0].persona == path.parent / "deck" / "p1.toml" and st.cards[0].profile == "standard"
    assert st.cards[1].persona == Path("/abs/p2.toml") and st.cards[1].control == "127.0.0.1:4000"
    assert st.rig.url == DeviceUrl("serial", "/dev/ttyUSB0", "serial:/dev/ttyUSB0")
    assert st.rig.url.serial_url == "/dev/ttyUSB0" and st.rig.baudrate == 57600 and st.rig.timeout_s == 2.0
    assert st.camera.url.scheme == "sequence" and st.camera.source == str(path.parent / "frames" / "%04d.png")
    assert (st.camera.width, st.camera.height, st.camera.fps) == (1280, None, 30.0)
    assert st.dut.adapter == "reference" and st.dut.extra == {"firmware_slot": "b"}
    assert st.eligibility.url == "http://127.0.0.1:8900"
    assert [(s.id, s.card, s.role) for s in st.subjects] == [("Ellen_Martin", "face-01", "holder"),
                                                             ("El_Hadji_Diouf", None, "impostor")]
    assert st.limits == {"face_auth_latency_ms": {"high": 3000.0, "marginal_high": 2500.0}}
    assert st.card("face-01").placer_slot == 2
    assert st.devices() == {"pcsc", "rig", "camera", "dut", "eligibility", "cards"}


def test_the_simulated_stations_own_file_loads(tmp_path):
    """The shape sim/station.py and its components write (see `facehil sim up`)."""
    data = {
        "station": {"name": "sim-host", "simulated": True, "state_dir": str(tmp_path)},
        "pcsc": {"reader": "Virtual PCD 00 00", "reference_reader": "Virtual PCD 00 01",
                 "socket": "/proc/1/root/run/pcscd/pcscd.comm"},
        "faces": {"dataset": str(tmp_path), "low_fidelity": True},
        "cards": [{"id": "p001", "persona": str(tmp_path / "p001.toml"), "profile": "standard",
                   "control": "127.0.0.1:43937", "slot": 0, "placer_slot": 0}],
        "pki": {"dir": str(tmp_path / "pki")},
        "camera": {"url": "http://127.0.0.1:43223/stream.mjpg", "control": "http://127.0.0.1:43223"},
        "rig": {"url": "serial:/dev/pts/7"},
    }
    st = load_station(write(tmp_path, tomli_w.dumps(data)))
    assert st.station.simulated and st.faces.low_fidelity
    assert st.cards[0].placer_slot == 0 and st.cards[0].extra == {"slot": 0}
    assert st.camera.source == "http://127.0.0.1:43223/stream.mjpg" and st.camera.control.endswith("43223")
    assert st.rig.url.serial_url == "/dev/pts/7"
    assert st.extra == {"pki": {"dir": str(tmp_path / "pki")}}


@pytest.mark.parametrize("text,key,fragment", [
    ("[station\nname = 'x'", "", "not valid TOML"),
    ("[pcsc]\nreader = 'x'", "station", "missing"),
    ("[station]\nsimulated = true", "station.name", "missing; expected a string"),
    ("[station]\nname = 5", "station.name", "expected a string, got an integer"),
    ("[station]\nname = ''", "station.name", "non-empty"),
    ("[station]\nname = 'x'\nsimulated = 'yes'", "station.simulated", "expected a boolean"),
    ("station = 3", "station", "a [station] table"),
    ("[station]\nname = 'x'\n[pcsc]\nreference_reader = 'y'", "pcsc.reader", "missing"),
    ("[station]\nname = 'x'\n[pcsc]\nreader = 'pcsc:'", "pcsc.reader", "reader name"),
    ("[station]\nname = 'x'\n[rig]\nurl = 'ftp://rig'", "rig.url", "socket://HOST:PORT"),
    ("[station]\nname = 'x'\n[rig]\nurl = 'socket://nohost'", "rig.url", "socket://HOST:PORT"),
    ("[station]\nname = 'x'\n[rig]\nurl = 7", "rig.url", "device URL string"),
    ("[station]\nname = 'x'\n[rig]\nurl = '/dev/ttyUSB0'\nbaudrate = 0", "rig.baudrate", "positive"),
    ("[station]\nname = 'x'\n[rig]\nurl = '/dev/ttyUSB0'\ntimeout_s = 'long'", "rig.timeout_s", "expected a number"),
    ("[station]\nname = 'x'\n[camera]\nurl = 'camera:front'", "camera.url", "camera:<index>"),
    ("[station]\nname = 'x'\n[camera]\nurl = 'gopher://cam'", "camera.url", "camera URL"),
    ("[station]\nname = 'x'\n[camera]\nurl = 0\nwidth = 1.5", "camera.width", "expected an integer"),
    ("cards = 'all'\n[station]\nname = 'x'", "cards", "array of tables"),
    ("[station]\nname = 'x'\n[[cards]]\nid = 'a'", "cards[0].persona", "missing"),
    ("[station]\nname = 'x'\n[[cards]]\nid = 'a'\npersona = 'p'\n[[cards]]\nid = 'a'\npersona = 'q'",
     "cards[1].id", "used twice"),
    ("[station]\nname = 'x'\n[[cards]]\nid = 'a'\npersona = 'p'\nplacer_slot = 1\n"
     "[[cards]]\nid = 'b'\npersona = 'q'\nplacer_slot = 1", "cards[1].placer_slot", "holds 'a'"),
    ("[station]\nname = 'x'\n[[cards]]\nid = 'a'\npersona = 'p'\nplacer_slot = -2", "cards[0].placer_slot", ">= 0"),
    ("[station]\nname = 'x'\n[[subjects]]\nid = 'a b'", "subjects[0].id", "without spaces"),
    ("[station]\nname = 'x'\n[[subjects]]\nid = 'a'\ncard = 'zz'", "subjects[0].card", "[[cards]]"),
    ("[station]\nname = 'x'\n[[subjects]]\nid = 'a'\nrole = 'boss'", "subjects[0].role", "holder, carer, impostor"),
    ("[station]\nname = 'x'\n[eligibility]\nport = 1", "eligibility.url", "missing"),
    ("[station]\nname = 'x'\n[limits.face_auth_latency_ms]\nhigh = 'fast'", "limits.face_auth_latency_ms.high",
     "number"),
    ("[station]\nname = 'x'\n[limits.x_ms]\nlow = 5\nhigh = 1", "limits.x_ms", "above high"),
    ("[station]\nname = 'x'\n[limits.x_ms]\nhgih = 5", "limits.x_ms", "unknown key"),
    ("[station]\nname = 'x'\n[limits]\nx_ms = 3", "limits.x_ms", "must be a table"),
])
def test_each_error_names_file_key_and_expectation(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(StationConfigError) as info:
        load_station(path)
    err = info.value
    assert err.key == key and err.path == path
    assert str(err).startswith(f"{path}: ") and fragment in str(err)
    if key:
        assert f": {key}: " in str(err)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(StationConfigError, match="cannot read"):
        load_station(tmp_path / "nope.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"[station]\nname = '\xe9'\n")
    with pytest.raises(StationConfigError, match="UTF-8"):
        load_station(bad)


@pytest.mark.parametrize("text,kind,expected", [
    ("pcsc:Virtual PCD 00 00", "pcsc", ("pcsc", "Virtual PCD 00 00")),
    ("Virtual PCD 00 01", "pcsc", ("pcsc", "Virtual PCD 00 01")),
    ("serial:/dev/ttyUSB0", "serial", ("serial", "/dev/ttyUSB0")),
    ("/dev/pts/3", "serial", ("serial", "/dev/pts/3")),
    ("socket://127.0.0.1:7001", "serial", ("socket", "127.0.0.1:7001")),
    ("rfc2217://lab-rig.local:2217", "serial", ("rfc2217", "lab-rig.local:2217")),
    ("0", "camera", ("camera", "0")),
    ("camera:2", "camera", ("camera", "2")),
    ("http://127.0.0.1:8000/stream.mjpg", "camera", ("http", "http://127.0.0.1:8000/stream.mjpg")),
    ("rtsp://cam/live", "camera", ("rtsp", "rtsp://cam/live")),
    ("clips/a.mp4", "camera", ("file", "clips/a.mp4")),
    ("file:///data/a.mp4", "camera", ("file", "/data/a.mp4")),
    ("frames/*.jpg", "camera", ("sequence", "frames/*.jpg")),
])
def test_device_urls(text, kind, expected):
    url = parse_device_url(text, kind)
    assert (url.scheme, url.target) == expected and url.text == text


def test_serial_urls_feed_pyserial():
    assert parse_device_url("socket://127.0.0.1:7001", "serial").serial_url == "socket://127.0.0.1:7001"
    assert parse_device_url("serial:/dev/ttyACM0", "serial").serial_url == "/dev/ttyACM0"


def test_dut_expect_features_is_a_typed_list(tmp_path):
    """[dut] expect_features (issue 11): the lab's declaration that the reader has these features."""
    base = '[station]\nname = "lab"\n[dut]\nurl = "socket://127.0.0.1:7002"\n'
    st = load_station(write(tmp_path, base + 'expect_features = ["visual_check_registration"]\npin_button = "refuse"\n'))
    assert st.dut.expect_features == ("visual_check_registration",)
    assert st.dut.extra == {"pin_button": "refuse"}  # claims on the notice's open choices stay as extra keys
    assert load_station(write(tmp_path, base)).dut.expect_features == ()
    for bad in ('expect_features = "visual_check_registration"', 'expect_features = [1]', 'expect_features = [""]'):
        with pytest.raises(StationConfigError, match="dut.expect_features"):
            load_station(write(tmp_path, base + bad + "\n"))
