"""Fuzzing the line ports (issue 10 §3): the reference reader's control port, the reader driver's
parser, and the rig line including its motion commands.

* reader control port: garbage and structured-but-wrong lines over a real TCP connection; every
  line is answered with a well-formed reply (a NAK for garbage), and the port keeps serving;
* reader driver: garbage from the device over a real TCP connection; the driver never dies,
  counts the garbage, resynchronises at the next LF, and its calls raise only ReaderError types;
* rig: requests with random and edge arguments for every verb, motions included, against the
  firmware in process (motions at once, with a no-op sleep), then through the rig driver over a
  real pty. After every command the firmware's model must hold its invariants.

Counts per run: control port 300 garbage lines, 300 structured commands and an endless line;
driver 200 examples of 1-4 garbage lines on each of TCP and a pty, an endless line, a garbage
reply; rig 12,000 seeded requests in process (half of them motions), 50 hypothesis sequences of
1-12 requests, 80 placements through the driver on a pty. Together about 10 s on a quiet machine.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import rig as rigdrv
from drivers.reader import LineProtocolReader, ReaderError, parse_reader_line
from sim.reader.assembly import SimulatedReader
from sim.reader.device import DeviceOptions
from sim.reader.firmware import ensure_firmware_dir
from sim.reader.flow import FlowConfig
from sim.reader.ports import SystemClock
from sim.reader.recorded import RecordedCard, RecordedFace, RecordedHardware, recorded_ports
from sim.reader.transport import SocketTransport
from sim.finger import Finger
from sim.rig_firmware import CONDITIONS, RigFirmware
from sim.rig_model import ABSENT, CardPose
from sim.rig_protocol import checksum
from sim.rig_transport import PtyTransport as RigPty

from scripted_device import ScriptedDevice

WAIT_S = 3.0
_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=_QUIET)


# =============================================================================================
# The reference reader's control port
# =============================================================================================

class RawClient:
    """A plain TCP client: what it sends and reads are exact bytes, no driver in between."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("socket://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
        self.buf = b""

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "the reader closed the connection"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def reply(self) -> bytes:
        """The next line that is not an event."""
        while True:
            line = self.line()
            if not line.startswith(b"EVT "):
                return line

    def exchange(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def reader_port(tmp_path_factory):
    fwdir = tmp_path_factory.mktemp("fw")
    ensure_firmware_dir(fwdir)

    def ports():
        return recorded_ports(card=RecordedCard(), face=RecordedFace(), clock=SystemClock())

    opts = DeviceOptions(state_dir=tmp_path_factory.mktemp("reader"), firmware_dir=fwdir, boot_ms=20, tick_ms=10,
                         flow_config=FlowConfig(face_timeout_ms=3000))
    sim = SimulatedReader(opts, RecordedHardware(ports), SocketTransport()).start()
    client = RawClient(sim.url)
    deadline = time.monotonic() + 10.0
    client.sock.settimeout(0.2)
    while True:  # a booting reader does not answer yet
        try:
            hello = client.exchange(b"1 HELLO 1\n")
            break
        except TimeoutError:
            assert time.monotonic() < deadline, "the simulated reader never answered HELLO"
    client.sock.settimeout(WAIT_S)
    assert hello.startswith(b"ACK 1 proto=1"), hello
    yield sim, client
    client.close()
    sim.stop()


def _still_serving(client: RawClient, seq: int = 777) -> None:
    reply = client.exchange(f"{seq} PING\n".encode())
    assert reply.startswith(f"ACK {seq} t_ms=".encode()), f"PING after the fuzz line got {reply!r}"


_line_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b""))


@fuzz(300)
@given(data=_line_bytes)
def test_control_port_answers_garbage_with_a_nak_and_keeps_serving(reader_port, data):
    """A line that is not even a command (non-ASCII, or no sequence number first) gets
    ``NAK - SYNTAX`` with a message; a blank line gets nothing; the port serves on."""
    sim, client = reader_port
    try:
        tokens = data.decode("ascii").split()
    except UnicodeDecodeError:
        tokens = None
    if tokens == []:
        client.sock.sendall(data + b"\n")  # a blank line is the host's resync: no answer at all
    else:
        reply = client.exchange(data + b"\n")
        msg = parse_reader_line(reply.decode("ascii"))
        assert msg is not None and msg.kind in ("ACK", "NAK"), reply
        if tokens is None or not _is_seq(tokens[0]):
            assert (msg.kind, msg.seq, msg.code) == ("NAK", None, "SYNTAX"), reply
            assert msg.fields.get("msg"), f"the NAK does not say what was wrong: {reply!r}"
        else:
            assert msg.seq == int(tokens[0]), reply  # a command with random words: its own answer
    _still_serving(client)


def _is_seq(token: str) -> bool:
    try:
        return 1 <= int(token) <= 65535
    except ValueError:
        return False


_VERBS = ["HELLO", "PING", "INFO", "SCREEN", "EVENTS", "PRESS", "PIN", "STAFF", "FW", "FROB", "ping", "Staff", ""]
_FW_SUBS = ["BEGIN", "CHUNK", "END", "ABORT", "STATUS", "COMMIT", "begin", "NOPE"]
_ARG = st.one_of(
    st.sampled_from(["", "0", "-1", "65536", "99999999999999999999", "1.5", "nan", "face", "pin", "end", "consent",
                     "VISUAL", "CONFIRM", "REJECT", "FACE", "size=", "size=-1", "size=99999999999",
                     "sha256=zz", "sig=!!", "allow_downgrade=1", "%", "%zz", "%00", "a=b=c", "=", "=x"]),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20),
)


@fuzz(300)
@given(seq=st.one_of(st.integers(1, 65535), st.sampled_from([0, -1, 65536, 10**12])),
       verb=st.sampled_from(_VERBS), sub=st.sampled_from(_FW_SUBS), args=st.lists(_ARG, max_size=4))
def test_control_port_refuses_wrong_commands_precisely(reader_port, seq, verb, sub, args):
    """Commands that look right but are not: every one is answered once, with its own seq when it
    has a valid one, and a NAK names a code and a message."""
    sim, client = reader_port
    words = [str(seq), verb] + ([sub] if verb == "FW" else []) + args
    reply = client.exchange((" ".join(w for w in words if w) + "\n").encode())
    msg = parse_reader_line(reply.decode("ascii"))
    assert msg is not None and msg.kind in ("ACK", "NAK"), reply
    if not 1 <= seq <= 65535:
        assert (msg.kind, msg.seq, msg.code) == ("NAK", None, "SYNTAX"), reply
    else:
        assert msg.seq == seq, f"the reply to seq {seq} carries {msg.seq}: {reply!r}"
    if msg.kind == "NAK":
        assert msg.code.isupper() and msg.fields.get("msg"), reply
        assert msg.code not in ("INTERNAL",), f"the firmware failed inside on {words}: {reply!r}"
    _still_serving(client)


def test_control_port_survives_an_endless_line(reader_port):
    sim, client = reader_port
    reply = client.exchange(b"1 PING " + b"x" * 20_000 + b"\n")
    assert reply.startswith(b"NAK - TOO_LONG"), reply
    _still_serving(client)


# =============================================================================================
# The reader driver's parser, fed by a device over TCP
# =============================================================================================

@pytest.fixture(scope="module", params=["socket", "pty"])
def driver_link(request):
    dev = ScriptedDevice(request.param)
    dut = LineProtocolReader(dev.url, timeout_s=1.0, connect_timeout_s=5.0)
    dut.open()
    yield dev, dut, iter(range(1, 10**9))
    dut.close()
    dev.close()


_device_lines = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from([b"ACK", b"NAK", b"EVT", b"-", b"1", b"0", b"-5", b"99999999999999999999", b"x",
                              b"boot", b"screen", b"id=idle", b"k=%zz", b"=", b"\r", b"\xff", b"msg=%E3%81%82"]),
             max_size=8).map(b" ".join),
)


@fuzz(200)
@given(garbage=st.lists(_device_lines, min_size=1, max_size=4))
def test_driver_survives_garbage_and_resynchronises(driver_link, garbage):
    """Whatever the device sends, the driver's reader thread lives on; after the next LF it takes
    the device's events again, and a command still gets its answer (or a ReaderError)."""
    dev, dut, numbers = driver_link
    boot = f"g{next(numbers)}"
    dev.send(b"\n".join(garbage) + b"\n")
    dev.send(f"EVT 1 0 boot boot_id={boot}\nEVT 2 1 tick n={boot}\n".encode())  # a fresh numbering
    ev = dut.wait_for_event("tick", WAIT_S, n=boot)
    assert ev.seq == 2
    try:
        dut.command("PING")
    except ReaderError:
        pass  # a garbage "NAK -" that arrived late may answer the PING: a documented error type
    assert dut._thread is not None and dut._thread.is_alive(), "the driver's reader thread died"
    dut.clear_events()


def test_driver_drops_an_endless_line_and_counts_it(driver_link):
    dev, dut, numbers = driver_link
    before = dut.garbage_lines
    dev.send(b"EVT 1 0 boot boot_id=" + b"z" * 20_000)  # no LF for longer than a line may be
    dev.send(b"\nEVT 1 0 boot boot_id=after\n")
    assert dut.wait_for_event("boot", WAIT_S, boot_id="after").seq == 1
    assert dut.garbage_lines > before
    assert not any(e.get("boot_id", "").startswith("zzz") for e in dut.history())


def test_driver_reports_garbage_instead_of_a_reply_as_a_timeout():
    """A device that answers a command with garbage: the command fails with ReaderTimeout (a
    ReaderError), the garbage is counted, and the next command works."""
    dev = ScriptedDevice()
    answers = iter([None, b"\xff\xfeACK \x00garbage"])

    def garbage_for_the_second_ping(raw: bytes) -> list[str]:
        tokens = raw.decode("ascii", "replace").split()
        if len(tokens) >= 2 and tokens[1] == "PING" and (bad := next(answers, None)) is not None:
            dev.send(bad + b"\n")
            return []
        return dev.ack_all(raw)

    dev.handler = garbage_for_the_second_ping
    dut = LineProtocolReader(dev.url, timeout_s=0.5, connect_timeout_s=5.0)
    try:
        dut.open()
        dut.command("PING")  # the first PING is answered properly
        garbage_before = dut.garbage_lines
        with pytest.raises(ReaderError, match="did not answer PING"):
            dut.command("PING")
        assert dut.garbage_lines == garbage_before + 1
        assert dut.command("PING") == {}
    finally:
        dut.close()
        dev.close()


# =============================================================================================
# The rig line, motion commands included
# =============================================================================================

SLOTS = (0, 1, 2)
_NUM_EDGES = ["0", "-0", "60", "-60", "60.01", "-60.01", "40", "40.5", "45", "-45", "45.01", "1", "0.5", "2000", "2001",
              "600000", "600001", "99", "100", "-1", "1e3", "nan", "inf", "-inf", "+5", "", "abc", "1.", ".5", "0x10",
              "9" * 60, "-" + "9" * 60, "1.000000001", "0.001"]
_KEYS = ["slot", "x_mm", "y_mm", "z_mm", "tilt_deg", "speed_mm_s", "off_ms", "at_ms", "restore_ms", "lux",
         "cct_k", "backlight_lux", "id", "condition", "image", "carer", "bogus"]
_VERB_WORDS = [("PLACE",), ("REMOVE",), ("RESET",), ("POWER", "CYCLE"), ("POWER", "CUT"), ("POWER", "ON"),
               ("POWER", "OFF"), ("POWER", "DANCE"), ("POWER",), ("LIGHT",), ("STATUS",), ("HEALTH",), ("PING",),
               ("SHOW", "SUBJECT"), ("SHOW", "BLANK"), ("SHOW", "NOFACE"), ("PLACE", "NOW"), ("MOVE",), ("place",),
               ("TAP",)]
_MOTIONS = [("PLACE",), ("REMOVE",), ("RESET",), ("POWER", "CYCLE"), ("POWER", "CUT")]


def _number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return rng.choice(_NUM_EDGES)
    if kind < 0.7:
        return str(rng.randint(-10**6, 10**6))
    return f"{rng.uniform(-1e4, 1e4):.3f}"


_VALID_KEYS = {"PLACE": {"slot": (0, 2), "x_mm": (-60, 60), "y_mm": (-60, 60), "z_mm": (0, 40), "tilt_deg": (-45, 45),
                          "speed_mm_s": (1, 2000)},
               "REMOVE": {"speed_mm_s": (1, 2000)}, "CYCLE": {"off_ms": (0, 60000)},
               "CUT": {"at_ms": (0, 600000), "restore_ms": (0, 600000)},
               "LIGHT": {"lux": (0, 100000), "cct_k": (1500, 15000), "backlight_lux": (0, 100000)}}


def rig_request(rng: random.Random) -> str:
    """One request line of the rig protocol; motions half the time, mostly with their own
    arguments (in range, near the limits, or edge text), sometimes with foreign ones."""
    words = list(rng.choice(_MOTIONS if rng.random() < 0.5 else _VERB_WORDS))
    own = _VALID_KEYS.get(words[-1], {})
    keys = rng.sample(sorted(own), rng.randint(0, len(own))) if own else []
    if words[0] == "PLACE" and "slot" not in keys and rng.random() < 0.8:
        keys.insert(0, "slot")
    if rng.random() < 0.15:
        keys.append(rng.choice([k for k in _KEYS if k not in keys]))
    args = []
    for k in keys:
        lo, hi = own.get(k, (None, None))
        roll = rng.random()
        if k in ("id", "carer"):
            v = rng.choice(["p001", "bad*id", "", "x" * 70])
        elif k == "condition":
            v = rng.choice([*CONDITIONS[:2], "underwater"])
        elif lo is not None and roll < 0.6:
            v = str(rng.randint(lo, hi)) if k in ("slot", "off_ms", "at_ms", "restore_ms") \
                else f"{rng.uniform(lo, hi):.2f}"
        elif lo is not None and roll < 0.8:
            v = rng.choice([f"{lo - 0.01:.2f}", f"{hi + 0.01:.2f}", str(lo), str(hi), str(hi + 1), str(lo - 1)])
        else:
            v = _number(rng)
        args.append(f"{k}={v}")
    if words[0] == "TAP":  # the finger (issue 13): TAP <x_mm> <y_mm> <hold_ms>, words not keys
        args = [f"{rng.uniform(-5, 200):.2f}" if rng.random() < 0.6 else _number(rng) for _ in range(2)]
        args += [str(rng.randint(0, 300)) if rng.random() < 0.7 else _number(rng)][:rng.choice((1, 1, 1, 0))]
    body = " ".join([str(rng.randint(1, 65535)), *words, *args])
    return body + (f"*{checksum(body.encode())}" if rng.random() < 0.5 else "")


def _snapshot(fw: RigFirmware) -> tuple:
    s = fw.state
    f = fw.finger
    return (s.card_slot, s.pose, s.coupling, s.lux, s.cct_k, s.backlight_lux, s.display, s.subject,
            f and (f.x_mm, f.y_mm, f.z_mm, f.touching))


def _check_invariants(fw: RigFirmware) -> None:
    s = fw.state
    assert s.card_slot is None or s.card_slot in fw.cards, f"card from unknown slot {s.card_slot}"
    if s.card_slot is None:
        assert s.pose == CardPose() and s.coupling == ABSENT, f"no card held, yet pose {s.pose} coupling {s.coupling}"
    else:
        p = s.pose
        assert -60 <= p.x_mm <= 60 and -60 <= p.y_mm <= 60, p
        assert 0 <= p.z_mm <= 40 and -45 <= p.tilt_deg <= 45, p
        assert all(math.isfinite(v) for v in (p.x_mm, p.y_mm, p.z_mm, p.tilt_deg)), p
        assert s.coupling == fw.volume.coupling(p), f"coupling {s.coupling} does not follow pose {p}"
    assert 0 <= s.lux <= 100000 and 1500 <= s.cct_k <= 15000 and 0 <= s.backlight_lux <= 100000
    assert isinstance(s.power_on, bool)
    if fw.finger is not None:  # never beyond its travel, always lifted between commands
        w, h = fw.finger.limits_mm
        assert 0 <= fw.finger.x_mm <= w and 0 <= fw.finger.y_mm <= h and not fw.finger.touching


_REFUSALS = {"E_ARG", "E_RANGE", "E_SLOT", "E_VERB", "E_FRAME", "E_CHECKSUM"}


def _run_rig_requests(requests: list[str]) -> None:
    """Random and edge arguments for every verb, motions included: each request gets one
    well-framed reply; a refusal names a protocol code and a reason and leaves the state as it
    was; an accepted PLACE holds exactly the pose asked for; the model's invariants hold after each."""
    fw = RigFirmware(cards={s: None for s in SLOTS}, sleep=lambda s: None, finger=Finger(sleep=lambda s: None))
    try:
        for text in requests:
            before = _snapshot(fw)
            reply = fw.handle(text.encode("ascii"))
            assert reply is not None and reply.endswith(b"\n")
            item = rigdrv.parse_line(reply[:-1])
            assert isinstance(item, rigdrv.Reply), reply
            verb = text.split(" ")[1]
            if not item.ok:
                assert item.code in _REFUSALS, f"{text!r} -> {reply!r}"
                assert item.detail, f"the refusal of {text!r} does not say why"
                if verb != "POWER":  # a cut timer may open the relay at any moment
                    assert _snapshot(fw) == before, f"refused {text!r} changed the state"
            elif verb == "PLACE":
                kw = dict(w.split("=", 1) for w in text.split("*")[0].split(" ")[2:])
                assert fw.state.card_slot == int(kw["slot"])
                for key in ("x_mm", "y_mm", "z_mm", "tilt_deg"):
                    assert getattr(fw.state.pose, key) == float(kw.get(key, 0)), (key, text)
            elif verb in ("REMOVE", "RESET"):
                assert fw.state.card_slot is None
            _check_invariants(fw)
    finally:
        fw.shutdown()


RIG_BULK_REQUESTS = 12_000


def test_rig_firmware_motion_commands_bulk():
    """RIG_BULK_REQUESTS random requests (half of them motions) in runs of 30 per firmware."""
    rng = random.Random(20261129)
    for _ in range(RIG_BULK_REQUESTS // 30):
        _run_rig_requests([rig_request(rng) for _ in range(30)])


@fuzz(50)
@given(st.randoms(use_true_random=False), st.integers(1, 12))
def test_rig_firmware_motion_commands_keep_the_model_sound(rng, n):
    """The same property under hypothesis, which shrinks a failure to its shortest sequence."""
    _run_rig_requests([rig_request(rng) for _ in range(n)])


@pytest.fixture(scope="module")
def rig_on_pty():
    """The rig firmware on a real pty with motions at once, and the rig driver opened on it."""
    port = RigPty()
    fw = RigFirmware(cards={s: None for s in SLOTS}, send_event=port.send, sleep=lambda s: None)
    thread = threading.Thread(target=port.serve, args=(fw.handle,), daemon=True)
    thread.start()
    rig = rigdrv.RigController(port.path, timeout_s=2.0)
    rig.open()
    yield fw, rig
    rig.close()
    fw.shutdown()
    port.stop()
    thread.join(timeout=2)
    port.close()


_COORD = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 60.0, -60.0, 60.004, 60.006, 40.0, 45.0, -45.0, 1e30, -1e30, 0.001]))


@fuzz(80)
@given(slot=st.one_of(st.sampled_from(SLOTS), st.integers(-5, 200)), x=_COORD, y=_COORD, z=_COORD, tilt=_COORD,
       speed=st.one_of(st.none(), _COORD), remove=st.booleans())
def test_rig_driver_motions_with_edge_arguments(rig_on_pty, slot, x, y, z, tilt, speed, remove):
    """Through the driver over a pty: a placement either succeeds exactly as asked (to the
    protocol's 0.01 mm) or is refused with RigNak naming the bad argument; the rig stays usable."""
    fw, rig = rig_on_pty
    pose = rigdrv.CardPose(x_mm=x, y_mm=y, z_mm=z, tilt_deg=tilt)
    try:
        placed = rig.place_card(slot, pose, speed_mm_s=speed)
    except rigdrv.RigNak as exc:
        assert exc.code in ("E_ARG", "E_RANGE", "E_SLOT"), exc
        assert exc.detail, exc
    except ValueError as exc:  # the driver refuses what no line can carry: NaN, infinities, 1e300
        bad = [k for k, v in (("x_mm", x), ("y_mm", y), ("z_mm", z), ("tilt_deg", tilt), ("speed_mm_s", speed))
               if v is not None and not (math.isfinite(v) and abs(v) < 1e9)]
        assert bad and bad[0] in str(exc), f"ValueError {exc} for numbers the protocol carries"
    else:
        assert placed.slot == slot and slot in SLOTS
        for key in ("x_mm", "y_mm", "z_mm", "tilt_deg"):
            asked = getattr(pose, key)
            assert abs(getattr(placed.pose, key) - asked) <= 0.0051, (key, asked, placed.pose)
    _check_invariants(fw)
    if remove:
        rig.remove_card()
        assert fw.state.card_slot is None
    assert rig.status().card_slot == fw.state.card_slot


@pytest.mark.parametrize("speed", [-1.0, 0.5, -2000.0])
def test_rig_driver_lets_the_rig_refuse_a_bad_speed(rig_on_pty, speed):
    """Found by the fuzz above: a negative speed made the driver's motion wait negative, so it
    reported a timeout instead of the rig's refusal."""
    fw, rig = rig_on_pty
    for call in (lambda: rig.place_card(0, speed_mm_s=speed), lambda: rig.remove_card(speed_mm_s=speed)):
        with pytest.raises(rigdrv.RigNak) as err:
            call()
        assert err.value.code == "E_RANGE" and "speed_mm_s" in err.value.detail
