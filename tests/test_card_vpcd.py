"""A card process served through vpcd to the real (private) pcscd, seen with pyscard."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from smartcard.Exceptions import CardConnectionException, NoCardException
from smartcard.scard import (SCARD_LEAVE_CARD, SCARD_S_SUCCESS, SCARD_SCOPE_USER, SCARD_STATE_PRESENT,
                             SCARD_STATE_UNAWARE, SCardEstablishContext, SCardGetStatusChange,
                             SCardReleaseContext)
from smartcard.System import readers

from sim.card.control import ControlError
from sim.card.persona import Persona
from sim.card.station import wait_powered

from card_process import CardProcess

JPKI = "00A4040C0AD392F000260100000001"
SURFACE = "00A4040C0AD3921000310001010402"
ATR = bytes.fromhex("3BE000FF8131FE4514")
EVENT_TIMEOUT_S = 10.0


def wait_present(reader: str, present: bool, timeout_s: float = EVENT_TIMEOUT_S) -> bool:
    """Block on pcscd's reader state until the card is (or is not) present."""
    hr, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
    assert hr == SCARD_S_SUCCESS
    try:
        deadline = time.monotonic() + timeout_s
        states = [(reader, SCARD_STATE_UNAWARE)]
        while True:
            hr, states = SCardGetStatusChange(ctx, 0 if states[0][1] == SCARD_STATE_UNAWARE else 200, states)
            if hr == SCARD_S_SUCCESS and bool(states[0][1] & SCARD_STATE_PRESENT) == present:
                return True
            if time.monotonic() > deadline:
                return False
            states = [(reader, states[0][1] & ~0x2)] if hr == SCARD_S_SUCCESS else [(reader, SCARD_STATE_UNAWARE)]
    finally:
        SCardReleaseContext(ctx)


def spawn_card(persona: Persona, state, link: list[str], removed: bool = False) -> CardProcess:
    return CardProcess(persona, state, link, removed=removed, extra_args=("--seed", "1"))


@pytest.fixture(scope="module")
def served(pcscd, card_deck, tmp_path_factory):
    persona = Persona.load(card_deck / "personas" / "p001.toml")
    state = tmp_path_factory.mktemp("vpcd") / "p001.json"
    card = spawn_card(persona, state, pcscd.card_args(0))
    reader = pcscd.reader_names[0]
    assert wait_present(reader, True), "pcscd never saw the card"
    # PRESENT comes before pcscd has powered the card and published its ATR length
    assert wait_powered(card.control), "pcscd never powered the card"
    yield persona, card.proc, card.control, reader
    card.stop()
    wait_present(reader, False)


def connect(reader_name: str):
    reader = next(r for r in readers() if str(r) == reader_name)
    conn = reader.createConnection()
    conn.connect(disposition=SCARD_LEAVE_CARD)
    return conn


def close(conn) -> None:
    """Disconnect (leaving the card powered) and release the PC/SC context now, not at exit."""
    try:
        conn.disconnect()
    except CardConnectionException:
        pass  # the card already went away
    conn.release()


def tx(conn, hexapdu: str) -> tuple[bytes, int]:
    data, sw1, sw2 = conn.transmit(list(bytes.fromhex(hexapdu)))
    return bytes(data), (sw1 << 8) | sw2


def assert_jpki_selects(reader_name: str) -> None:
    """The card in this reader answers SELECT JPKI with 9000 on a fresh connection."""
    conn = connect(reader_name)
    try:
        assert tx(conn, JPKI)[1] == 0x9000
    finally:
        close(conn)


def test_atr_select_and_extended_read_through_pcscd(served):
    persona, _, control, reader = served
    conn = connect(reader)
    try:
        assert bytes(conn.getATR()) == ATR
        assert tx(conn, JPKI)[1] == 0x9000
        assert tx(conn, "00A4020C02000A")[1] == 0x9000
        data, sw = tx(conn, "00B0000000")
        assert sw == 0x9000 and len(data) == 256
        tx(conn, SURFACE)
        tx(conn, "00A4020C020012")
        assert tx(conn, f"002000800E{persona.check_code_b.encode().hex()}")[1] == 0x9000
        tx(conn, "00A4020C020002")
        record = (persona.card_dir / "surface-0002.bin").read_bytes()
        data, sw = tx(conn, "00B0000000FFFD")  # one extended READ for the whole card face
        assert sw == 0x6282 and data == record
        assert tx(conn, "FFCA000000")[1] == 0x6E00  # wrong class reaches the card and gets its answer
    finally:
        close(conn)
    assert int(control.status()["apdus"]) >= 8


def test_removal_and_insertion_are_seen_by_pcscd(served):
    _, _, control, reader = served
    control.remove()
    assert wait_present(reader, False)
    assert control.status()["inserted"] == "0"
    with pytest.raises((NoCardException, CardConnectionException)):
        connect(reader)
    control.insert()
    assert wait_present(reader, True)
    assert_jpki_selects(reader)


def test_coupling_absent_takes_the_card_off_the_field(served):
    _, _, control, reader = served
    control.coupling("absent")
    assert wait_present(reader, False)
    st = control.status()
    assert st["inserted"] == "1" and st["coupling"] == "absent" and st["connected"] == "0"
    control.coupling("present")
    assert wait_present(reader, True)


def test_flaky_coupling_drops_the_card_mid_apdu_and_it_comes_back(served):
    _, _, control, reader = served
    conn = connect(reader)
    control.coupling("flaky", 1.0, dropout_ms=800)
    try:
        with pytest.raises(CardConnectionException):
            tx(conn, JPKI)
    finally:
        close(conn)
    assert int(control.status()["dropouts"]) >= 1
    control.coupling("present")
    assert wait_present(reader, False)  # off the field long enough for pcscd to notice
    assert wait_present(reader, True)
    assert_jpki_selects(reader)


def test_control_port_survives_bad_input(served):
    _, proc, control, _ = served
    for bad in ("", "FLY", "COUPLING", "COUPLING FLAKY 2", "COUPLING FLAKY x", "INSERT now", "COUPLING FLAKY 0.1 -5"):
        with pytest.raises(ControlError):
            control.command(bad)
    with socket.create_connection((control.host, control.port), timeout=5) as s:
        s.sendall(b"\xff\xfe\n" + b"A" * 5000 + b"\n")
        reply = s.makefile("rb").readline()
        assert reply.startswith(b"ERR")
    assert proc.poll() is None
    st = control.status()
    assert st["persona"] == "p001" and st["profile"] == "standard" and st["coupling"] == "present"


def test_removed_start_then_quit(pcscd, card_deck, tmp_path):
    persona = Persona.load(card_deck / "personas" / "p002.toml")
    reader = pcscd.reader_names[1]
    card = spawn_card(persona, tmp_path / "p002.json", pcscd.card_args(1), removed=True)
    proc, control = card.proc, card.control
    try:
        assert control.status()["inserted"] == "0"
        assert not wait_present(reader, True, timeout_s=1.0)
        control.insert()
        assert wait_present(reader, True)
        control.quit()
        assert proc.wait(timeout=5) == 0
        assert wait_present(reader, False)
    finally:
        card.stop()


def test_serve_reports_a_bad_persona(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "x"\n')
    proc = subprocess.run([sys.executable, "-m", "sim.card", "serve", "--persona", str(bad), "--state",
                           str(tmp_path / "s.json"), "--vpcd", "127.0.0.1:1"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "missing key" in proc.stderr and str(bad) in proc.stderr


class FakeVpcd:
    """The reader side of the vpcd protocol on a socket of our own (no pcscd)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)

    def send(self, payload: bytes, length: int | None = None) -> None:
        n = len(payload) if length is None else length
        self.conn.sendall(n.to_bytes(2, "big") + payload)

    def recv(self) -> bytes:
        f = self.conn.makefile("rb")
        n = int.from_bytes(f.read(2), "big")
        return f.read(n)

    def close(self) -> None:
        for s in (self.conn, self.listener):
            if s is not None:
                s.close()


def test_vpcd_link_survives_garbage_frames(card_deck, tmp_path):
    persona = Persona.load(card_deck / "personas" / "p001.toml")
    vpcd = FakeVpcd()
    card = spawn_card(persona, tmp_path / "s.json", ["--vpcd", f"127.0.0.1:{vpcd.port}"])
    proc, control = card.proc, card.control
    try:
        vpcd.accept()
        vpcd.send(b"\x04")
        assert vpcd.recv() == ATR
        vpcd.send(b"")          # empty frame: ignored, no reply
        vpcd.send(b"\x09")      # unknown control byte: ignored
        vpcd.send(b"\x01")      # power on: no reply
        vpcd.send(b"\x00\xa4")  # two-byte "APDU"
        assert vpcd.recv() == b"\x67\x00"
        vpcd.send(bytes(65535))  # the largest frame vpcd can carry
        resp = vpcd.recv()
        assert len(resp) == 2
        vpcd.send(bytes.fromhex(JPKI))
        assert vpcd.recv() == b"\x90\x00"
        vpcd.send(b"\x00\xa4\x04", length=10)  # truncated frame, then the reader goes away
        vpcd.conn.close()
        vpcd.accept()  # the card comes back: a new insertion
        vpcd.send(bytes.fromhex(JPKI))
        assert vpcd.recv() == b"\x90\x00"
        assert proc.poll() is None
        assert int(control.status()["apdus"]) >= 4
    finally:
        card.stop()
        vpcd.close()
