"""The reader control port end to end over real sockets and ptys: drivers/reader.py against the
reference firmware (sim/reader) running on recorded hardware in this process."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
from pathlib import Path

import pytest

from drivers.reader import (
    AdapterNotFound,
    LineProtocolReader,
    ReaderNak,
    ReaderProtocolError,
    ReaderTimeout,
    ReaderUnderTest,
    load_adapter,
    open_reader,
    parse_reader_line,
)
from sim.reader.assembly import SimulatedReader
from sim.reader.device import DeviceOptions
from sim.reader.firmware import ensure_firmware_dir, load_image, sign_image
from sim.reader.flow import Faults, FlowConfig
from sim.reader.ports import FACE_AUTH, CardData, SystemClock
from sim.reader.recorded import RecordedCard, RecordedFace, RecordedHardware, recorded_ports
from sim.reader.transport import PtyTransport, SocketTransport

from scripted_device import ScriptedDevice

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

WAIT_S = 5.0


@pytest.fixture(scope="module")
def fwdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fw")
    ensure_firmware_dir(d)
    return d


def make_reader(tmp_path: Path, fwdir: Path, transport="socket", card: CardData | None = None, face=None,
                faults: Faults = Faults()) -> tuple[SimulatedReader, RecordedHardware]:
    def ports():
        return recorded_ports(card=RecordedCard(data=card) if card else RecordedCard(),
                              face=RecordedFace(script=list(face)) if face else RecordedFace(), clock=SystemClock())

    hw = RecordedHardware(ports)
    opts = DeviceOptions(state_dir=tmp_path / "reader", firmware_dir=fwdir, boot_ms=20, tick_ms=10,
                         flow_config=FlowConfig(face_timeout_ms=3000), faults=faults)
    t = SocketTransport() if transport == "socket" else PtyTransport()
    return SimulatedReader(opts, hw, t).start(), hw


@pytest.fixture(params=["socket", "pty"])
def reader(request, tmp_path, fwdir):
    sim, hw = make_reader(tmp_path, fwdir, request.param)
    dut = LineProtocolReader(sim.url, timeout_s=2.0, connect_timeout_s=5.0)
    dut.open()
    yield sim, hw, dut
    dut.close()
    sim.stop()


def test_standard_card_by_face_over_the_port(reader):
    sim, hw, dut = reader
    assert isinstance(dut, ReaderUnderTest)
    info = dut.info()
    assert info.version == "1.4.0" and "visual_check_registration" not in info.features and info.slot == "A"
    assert dut.screen().id == "idle"
    hw.insert()
    st = dut.wait_for_screen("method_select", WAIT_S)
    assert st.buttons == ("face", "pin", "end") and st.mode == "face"
    dut.press("face")
    ev = dut.wait_for_event("auth", WAIT_S, method="face")
    assert ev.get("result") == "ok"
    dut.wait_for_screen("consent_surgery", WAIT_S)
    for _ in range(3):
        dut.press("consent")
    dut.wait_for_screen("done", WAIT_S)
    hw.remove()
    dut.wait_for_screen("idle", WAIT_S)
    hist = dut.history()
    seqs = [e.seq for e in hist]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert hist[0].kind == "boot" and hist[0].get("version") == "1.4.0"
    t = [e.reader_ms for e in hist]
    assert t == sorted(t)
    assert all(e.host_monotonic_s > 0 for e in hist)


def test_refusals_come_back_as_naks(tmp_path, fwdir):
    sim, hw = make_reader(tmp_path, fwdir, card=CardData(FACE_AUTH, b"c", None, b"p"))
    with LineProtocolReader(sim.url) as dut:
        hw.insert()
        shown = dut.wait_for_screen("method_select", WAIT_S)
        assert shown.buttons == ("face", "end")
        # msg: the notice's Japanese (percent-encoded UTF-8 on the ASCII line); msg_en: the English
        assert shown.message.startswith("本人確認の方法を選んでください。") and shown.fields["msg_en"].startswith("Choose")
        assert shown.fields["labels"] == "顔認証を行う,終了する"
        with pytest.raises(ReaderNak) as err:
            dut.enter_pin("1234")
        assert err.value.code == "PIN_UNAVAILABLE" and "顔認証" in err.value.message
        assert "face-authentication card" in err.value.fields["msg_en"]
        with pytest.raises(ReaderNak) as err:
            dut.press("pin")
        assert err.value.code == "PIN_UNAVAILABLE"
        with pytest.raises(ReaderNak, match="NOT_OFFERED"):
            dut.press("no such button")
        with pytest.raises(ReaderNak, match="STATE"):
            dut.staff_confirm()
        with pytest.raises(ReaderNak, match="ARGS"):
            dut.command("STAFF", "DANCE")
        with pytest.raises(ReaderNak, match="UNKNOWN"):
            dut.command("FROB")
        with pytest.raises(ReaderNak, match="PROTO"):
            dut.command("HELLO", 99)
        refused = dut.wait_for_event("refused", WAIT_S, code="PIN_UNAVAILABLE")
        assert refused.get("action") == "pin"
    sim.stop()


def test_faulty_reader_via_supply_port(tmp_path, fwdir):
    sim, hw = make_reader(tmp_path, fwdir, card=CardData(FACE_AUTH, b"c", None, b"p"))
    _wait_booted(sim)
    with socket.create_connection((sim.supply.host, sim.supply.port), timeout=2) as s:
        f = s.makefile("rb")
        s.sendall(b"FAULTS offer_pin_to_face_auth\n")
        assert f.readline().startswith(b"OK faults=offer_pin_to_face_auth")
        s.sendall(b"FAULTS bogus\n")
        assert f.readline().startswith(b"ERR unknown reader fault")
        s.sendall(b"WHAT\n")
        assert f.readline().startswith(b"ERR")
        s.sendall(b"STATUS\n")
        assert f.readline().startswith(b"OK power=on booted=1 fw=1.4.0")
    with LineProtocolReader(sim.url) as dut:
        hw.insert()
        assert dut.wait_for_screen("method_select", WAIT_S).buttons == ("face", "pin", "end")
    sim.stop()


class RawLink:
    """Bytes to and from the reader's port, bypassing the driver (a socket or the pty itself)."""

    def __init__(self, sim: SimulatedReader):
        import serial

        self.port = serial.serial_for_url(sim.url, timeout=3.0)
        self.port.reset_input_buffer()

    def send(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def line(self) -> str:
        while True:
            raw = self.port.readline()
            assert raw.endswith(b"\n"), f"no line from the reader (got {raw!r})"
            text = raw.decode().strip()
            if not text.startswith("EVT"):
                return text

    def close(self) -> None:
        self.port.close()


def _wait_booted(sim):
    deadline = time.monotonic() + WAIT_S
    while not sim.device.booted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.device.booted


@pytest.mark.parametrize("transport", ["socket", "pty"])
def test_garbage_partial_lines_and_overlong_lines_from_the_host(tmp_path, fwdir, transport):
    sim, _ = make_reader(tmp_path, fwdir, transport)
    _wait_booted(sim)
    s = RawLink(sim)
    s.send(b"\xff\xfe garbage\n")
    assert s.line().startswith("NAK - SYNTAX")
    s.send(b"hello there\n")
    assert s.line().startswith("NAK - SYNTAX")
    s.send(b"7\n")
    assert s.line().startswith("NAK 7 SYNTAX")
    s.send(b"x" * 9000 + b"\n")
    assert s.line().startswith("NAK - TOO_LONG")
    s.send(b"8 PI")  # a command in pieces
    time.sleep(0.1)
    s.send(b"NG\r\n")
    msg = parse_reader_line(s.line())
    assert msg.kind == "ACK" and msg.seq == 8
    s.send(b"9 PIN")  # a partial line abandoned: dropped after the idle time
    time.sleep(1.4)
    s.send(b"10 PING\n")
    msg = parse_reader_line(s.line())
    assert (msg.kind, msg.seq) == ("ACK", 10)
    s.close()
    sim.stop()


def test_driver_survives_garbage_and_stale_replies_from_the_device(tmp_path, fwdir):
    sim, hw = make_reader(tmp_path, fwdir)
    with LineProtocolReader(sim.url) as dut:
        sim.transport.send("%%% line noise %%%")
        sim.transport.send("ACK 60000 stale=1")  # a reply to nothing we sent
        sim.transport.send("EVT notanumber x y")
        assert dut.screen().id == "idle"
        assert dut.garbage_lines >= 2
        hw.insert()
        dut.wait_for_screen("method_select", WAIT_S)
    sim.stop()


def test_silent_device_times_out_and_comes_back(tmp_path, fwdir):
    sim, _ = make_reader(tmp_path, fwdir)
    dut = LineProtocolReader(sim.url, timeout_s=0.3, connect_timeout_s=3.0)
    dut.open()
    sim.device.power_off()
    with pytest.raises(ReaderTimeout, match="did not answer SCREEN within 0.3 s"):
        dut.screen()
    after = time.monotonic()
    sim.device.power_on()
    boot = dut.wait_for_boot(after, timeout_s=WAIT_S)
    assert boot.get("version") == "1.4.0"
    assert dut.screen().id == "idle"
    dut.close()
    sim.stop()


def test_open_times_out_on_a_dead_port(tmp_path, fwdir):
    sim, _ = make_reader(tmp_path, fwdir)
    sim.device.power_off()
    dut = LineProtocolReader(sim.url, timeout_s=0.2, connect_timeout_s=0.6)
    with pytest.raises(ReaderTimeout, match="no handshake"):
        dut.open()
    dut.close()
    sim.stop()


def test_event_replay_is_deduplicated(tmp_path, fwdir):
    sim, hw = make_reader(tmp_path, fwdir)
    with LineProtocolReader(sim.url) as dut:
        hw.insert()
        dut.wait_for_screen("method_select", WAIT_S)
        before = len(dut.history())
        assert dut.replay_events(1) >= before
        time.sleep(0.1)
        assert len(dut.history()) == before
        assert dut.lost_events == 0
    sim.stop()


def test_adapter_loader():
    assert load_adapter("reference") is LineProtocolReader
    with pytest.raises(AdapterNotFound, match="no reader adapter 'acme'"):
        load_adapter("acme")


def test_open_reader_by_entry_point(tmp_path, fwdir):
    sim, _ = make_reader(tmp_path, fwdir)
    dut = open_reader(sim.url, "reference", timeout_s=1.0)
    try:
        assert dut.info().model == "facehil-ref"
    finally:
        dut.close()
        sim.stop()


# -- firmware over the port ----------------------------------------------------------------------

def test_firmware_update_with_power_cut_over_the_port(tmp_path, fwdir):
    sim, _ = make_reader(tmp_path, fwdir, transport="pty")
    dut = LineProtocolReader(sim.url, timeout_s=2.0)
    dut.open()
    image, sig = load_image(fwdir, "1.5.0")
    # a power cut in the middle of the upload
    dut.command("FW BEGIN", f"size={len(image)}", f"sha256={hashlib.sha256(image).hexdigest()}",
                f"sig={base64.b64encode(sig).decode()}")
    for off in range(0, 5 * 4096, 4096):
        dut.command("FW CHUNK", off, base64.b64encode(image[off:off + 4096]).decode())
    assert dut.firmware_status().state == "receiving"
    cut = time.monotonic()
    sim.device.power_off()
    sim.device.power_on()
    dut.wait_for_boot(cut, WAIT_S)
    assert dut.info().version == "1.4.0"
    st = dut.firmware_status()
    assert st.state == "idle" and st.active_version == "1.4.0"
    # then the whole update
    seen = []
    assert dut.firmware_upload(image, sig, progress=lambda r, n: seen.append(r)) == "1.5.0"
    assert seen[-1] == len(image)
    progress = [e for e in dut.history() if e.kind == "fw" and e.get("state") == "progress"]
    assert progress and progress[-1].get("pct") == "100"
    dut.firmware_commit()
    assert dut.firmware_status().pending_slot == "B"
    dut.reboot(timeout_s=WAIT_S)
    info = dut.info()
    assert (info.version, info.slot) == ("1.5.0", "B") and "visual_check_registration" in info.features
    st = dut.firmware_status()
    assert st.previous_version == "1.4.0" and not st.rolled_back
    dut.close()
    sim.stop()


@pytest.mark.parametrize("how,code", [("signature", "FW_SIGNATURE"), ("hash", "FW_HASH"),
                                      ("truncated", "FW_TRUNCATED"), ("downgrade", "FW_DOWNGRADE")])
def test_refusal_codes_over_the_port(tmp_path, fwdir, how, code):
    sim, _ = make_reader(tmp_path, fwdir)
    with LineProtocolReader(sim.url) as dut:
        image, sig = load_image(fwdir, "1.5.0")
        with pytest.raises(ReaderNak) as err:
            if how == "signature":
                dut.firmware_upload(image, sign_image(image, Ed25519PrivateKey.generate()))
            elif how == "downgrade":
                dut.firmware_upload(*load_image(fwdir, "1.3.0"))
            else:
                size = len(image) + (4096 if how == "truncated" else 0)
                digest = hashlib.sha256(image if how == "truncated" else b"x").hexdigest()
                dut.command("FW BEGIN", f"size={size}", f"sha256={digest}", f"sig={base64.b64encode(sig).decode()}")
                for off in range(0, len(image), 4096):
                    dut.command("FW CHUNK", off, base64.b64encode(image[off:off + 4096]).decode())
                dut.command("FW END")
        assert err.value.code == code
        assert dut.firmware_status().last_error == code
        failed = dut.wait_for_event("fw", WAIT_S, state="failed")
        assert failed.get("code") == code
        with pytest.raises(ReaderNak, match="FW_STATE"):
            dut.firmware_commit()
    sim.stop()


def test_downgrade_with_permission_over_the_port(tmp_path, fwdir):
    sim, _ = make_reader(tmp_path, fwdir)
    with LineProtocolReader(sim.url) as dut:
        assert dut.firmware_upload(*load_image(fwdir, "1.3.0"), allow_downgrade=True) == "1.3.0"
    sim.stop()


def test_a_reader_of_another_protocol_is_refused_clearly():
    """A device that NAKs our protocol version (or answers another one) is a ReaderProtocolError."""
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def device(answer: str) -> None:
        conn, _ = srv.accept()
        f = conn.makefile("rb")
        for raw in f:
            parts = raw.decode().split()
            if len(parts) >= 2 and parts[1] == "HELLO":
                conn.sendall(answer.replace("SEQ", parts[0]).encode() + b"\n")
                break
        time.sleep(0.5)
        conn.close()

    for answer in ("NAK SEQ PROTO msg=only%20protocol%202", "ACK SEQ proto=2 fw=9"):
        t = threading.Thread(target=device, args=(answer,), daemon=True)
        t.start()
        dut = LineProtocolReader(f"socket://127.0.0.1:{port}", timeout_s=1.0, connect_timeout_s=2.0)
        with pytest.raises(ReaderProtocolError):
            dut.open()
        dut.close()
        t.join(timeout=2)
    srv.close()


# -- bounded memory of a long-lived driver (issue 10 §5) -----------------------------------------

def _settle(dut: LineProtocolReader, last_seq: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while dut._last_evseq != last_seq:
        assert time.monotonic() < deadline, f"driver reached event {dut._last_evseq}, not {last_seq}"
        time.sleep(0.01)


SMALL_HISTORY, SMALL_WINDOW = 200, 100


@pytest.fixture
def scripted(monkeypatch):
    """The driver with small bounds (the mechanism is the same at the documented sizes, which the
    tests check too; the driver reads a TCP link byte by byte, so 10,000 events would take seconds)."""
    import drivers.reader as reader_mod

    assert LineProtocolReader("unused")._log.maxlen == reader_mod.HISTORY_MAX_EVENTS == 10_000
    assert LineProtocolReader("unused")._seen_evseqs.size == reader_mod.SEEN_EVSEQ_WINDOW == 4096
    monkeypatch.setattr(reader_mod, "HISTORY_MAX_EVENTS", SMALL_HISTORY)
    monkeypatch.setattr(reader_mod, "SEEN_EVSEQ_WINDOW", SMALL_WINDOW)
    dev = ScriptedDevice()
    dut = LineProtocolReader(dev.url, timeout_s=2.0, connect_timeout_s=5.0)
    dut.open()
    yield dev, dut
    dut.close()
    dev.close()


def test_history_is_bounded_and_next_event_follows_it(scripted):
    """More events than the history holds: it keeps the newest HISTORY_MAX_EVENTS, next_event() and
    wait_for_event() still see the newest ones, and clear_events() empties it."""
    dev, dut = scripted
    n = SMALL_HISTORY * 3 + 50
    dev.events(range(1, n + 1))
    _settle(dut, n)
    hist = dut.history()
    assert len(hist) == SMALL_HISTORY
    assert [hist[0].seq, hist[-1].seq] == [n - SMALL_HISTORY + 1, n]
    assert dut.evicted_unread_events == n - SMALL_HISTORY  # nobody consumed them: the oldest fell out, counted
    assert dut.next_event(1.0).seq == n - SMALL_HISTORY + 1
    assert dut.next_event(1.0).seq == n - SMALL_HISTORY + 2
    dev.events([n + 1])
    assert dut.wait_for_event("tick", 5.0, n=str(n + 1)).seq == n + 1
    assert len(dut.history()) == SMALL_HISTORY
    dut.clear_events()
    assert dut.history() == []
    dev.events([n + 2])
    assert dut.next_event(5.0).seq == n + 2 and len(dut.history()) == 1


def test_seen_event_numbers_are_bounded_and_duplicates_still_dropped(scripted):
    """The duplicate filter remembers SEEN_EVSEQ_WINDOW numbers however long the run; a replay of
    the newest events (as a device replays its ring) is still recognised and dropped."""
    dev, dut = scripted
    n = SMALL_WINDOW * 5
    dev.events(range(1, n + 1))
    _settle(dut, n)
    assert len(dut._seen_evseqs) == SMALL_WINDOW
    dut.clear_events()
    dev.events(range(n - SMALL_WINDOW + 1, n + 1))  # a replay of the newest window
    dev.events([n + 1])
    _settle(dut, n + 1)
    assert [e.seq for e in dut.history()] == [n + 1], "a replayed event was taken as new"
    assert dut.lost_events == 0 and len(dut._seen_evseqs) == SMALL_WINDOW
    dev.events([1, 2], boot_id="b2")  # a new boot still restarts the numbering
    _settle(dut, 2)
    assert [e.seq for e in dut.history()][-2:] == [1, 2]


def test_supply_port_takes_commands_only_after_the_station_token(tmp_path, fwdir, monkeypatch):
    """hardware.md 9.1: with a station token, a connection without ``AUTH <token>`` first cannot cut
    the reader's power or make it faulty; the rig's relay (sim/rig_links.py) sends the token."""
    from drivers.station_auth import TOKEN_ENV, authenticate_socket
    from sim.rig_links import SupplyLink

    monkeypatch.setenv(TOKEN_ENV, "supply-secret")
    sim, _ = make_reader(tmp_path, fwdir, card=CardData(FACE_AUTH, b"c", None, b"p"))
    _wait_booted(sim)
    target = (sim.supply.host, sim.supply.port)
    for first in (b"POWER OFF\n", b"AUTH wrong-token\n", b"AUTH\n"):
        with socket.create_connection(target, timeout=2) as s:
            s.sendall(first + b"FAULTS offer_pin_to_face_auth\n")
            f = s.makefile("rb")
            assert f.readline() == b"AUTH REFUSED\n", first
            assert f.readline() == b"", "the connection stays open after a refused token"
    assert sim.device.powered and not sim.device.faults.active(), "a refused connection changed the reader"
    with socket.create_connection(target, timeout=2) as s:
        assert authenticate_socket(s, "supply port")
        s.sendall(b"STATUS\n")
        assert s.makefile("rb").readline().startswith(b"OK power=on booted=1")
    assert SupplyLink(f"{target[0]}:{target[1]}").switch(False) == "ok"
    assert not sim.device.powered
    sim.stop()
