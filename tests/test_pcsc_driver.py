"""drivers.pcsc through the real private pcscd, and drivers.apdu on its own.

The transport-level behaviours (61xx chaining, 6Cxx, extended APDUs, a card vanishing in the
middle of an APDU) need a card that does them on purpose, so this file carries a tiny
scripted vpcd card (run as ``python tests/test_pcsc_driver.py PORT [NETNS]``, a process of its own:
a card served from the test process can hang it at exit). Card-level behaviour is tested
against the real software card in test_mynumber_driver.py.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

import pytest

SCRIPTED_ATR = bytes.fromhex("3BE000FF8131FE4514")
FILE_SIZE = 65600  # the scripted card's READ BINARY file (P1-P2 taken as a 16-bit offset)
CHAINED_SIZE = 600  # bytes behind 00 CA (delivered through 61xx)
EXACT_LE = 0x20  # 00 CB answers 6C20 unless Le is exactly this


def _pattern(offset: int, n: int) -> bytes:
    return bytes((offset + i) * 7 & 0xFF for i in range(n))


# --------------------------------------------------------------------------- the scripted card


def _card_answer(apdu: bytes, state: dict) -> bytes | None:
    """Response for one command APDU; None means: vanish (close the socket, no reply)."""
    ins = apdu[1]
    if ins == 0xEE:
        return None
    if ins == 0xA4:
        return b"\x90\x00"
    if ins == 0x20:
        return b"\x63\xC3"
    if ins == 0xB0:
        offset = (apdu[2] << 8) | apdu[3]
        if len(apdu) == 5:
            ne = apdu[4] or 256
        elif len(apdu) == 7 and apdu[4] == 0:
            ne = int.from_bytes(apdu[5:7], "big") or 65536
        else:
            return b"\x67\x00"
        if offset >= FILE_SIZE:
            return b"\x6B\x00"
        n = min(ne, FILE_SIZE - offset)
        return _pattern(offset, n) + (b"\x90\x00" if n == ne else b"\x62\x82")
    if ins == 0xCA:  # data only through GET RESPONSE
        state["pending"] = _pattern(0, CHAINED_SIZE)
        return b"\x61\x00"
    if ins == 0xC0:
        pending = state.get("pending", b"")
        if not pending:
            return b"\x69\x85"
        ne = (apdu[4] or 256) if len(apdu) == 5 else 256
        out, state["pending"] = pending[:ne], pending[ne:]
        rest = len(state["pending"])
        return out + (bytes((0x61, min(rest, 256) & 0xFF)) if rest else b"\x90\x00")
    if ins == 0xCB:
        le = apdu[4] if len(apdu) == 5 else None
        if le != EXACT_LE:
            return bytes((0x6C, EXACT_LE))
        return _pattern(0, EXACT_LE) + b"\x90\x00"
    if ins == 0x42:  # echo the command data (extended Lc)
        if len(apdu) > 7 and apdu[4] == 0:
            lc = int.from_bytes(apdu[5:7], "big")
            return apdu[7:7 + lc] + b"\x90\x00"
        return apdu[5:5 + apdu[4]] + b"\x90\x00"
    return b"\x6D\x00"


def _serve(port: int, netns: str | None) -> None:
    if netns:  # a private pcscd's vpcd listens in its own network namespace (sim/netns.py)
        from sim.netns import enter

        enter(netns)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    state: dict = {}

    def recv_exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            # vpcd sends length and payload separately without TCP_NODELAY (pcsc-sim.md)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise SystemExit(0)
            buf += chunk
        return buf

    while True:
        (n,) = struct.unpack(">H", recv_exact(2))
        msg = recv_exact(n)
        if n == 1:
            if msg[0] == 4:
                sock.sendall(struct.pack(">H", len(SCRIPTED_ATR)) + SCRIPTED_ATR)
            continue
        answer = _card_answer(msg, state)
        if answer is None:
            sock.close()
            raise SystemExit(0)
        sock.sendall(struct.pack(">H", len(answer)) + answer)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
    sys.exit(0)

# --------------------------------------------------------------------------- fixtures (below: tests)

from drivers.apdu import LocalTransport, build_apdu, describe_command, exchange, parse_apdu  # noqa: E402
from drivers.pcsc import (CardRemoved, NoCard, PcscError, PcscReader, PcscTimeout, ReaderNotFound,  # noqa: E402
                          list_readers, readers_with_card)

INSERT_TIMEOUT_S = 10.0


class ScriptedCard:
    """The scripted card as a process in one vpcd slot."""

    def __init__(self, pcscd, slot: int):
        self.reader = PcscReader(pcscd.reader_names[slot])
        self.port = pcscd.slot_port(slot)
        self.netns = str(pcscd.netns or "")
        self.proc: subprocess.Popen | None = None

    def insert(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, str(self.port), self.netns])

    def remove(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None

    def stop(self) -> None:
        self.remove()
        self.reader.wait_for_removal(INSERT_TIMEOUT_S)


@pytest.fixture
def empty_slot(pcscd):
    reader = PcscReader(pcscd.reader_names[1])
    reader.wait_for_removal(INSERT_TIMEOUT_S)  # a card left by an earlier test would lie to us
    return reader


@pytest.fixture(scope="module")
def scripted(pcscd):
    card = ScriptedCard(pcscd, 0)
    card.insert()
    card.reader.wait_for_insertion(INSERT_TIMEOUT_S)
    yield card
    card.stop()


@pytest.fixture
def conn(scripted):
    with scripted.reader.connect() as c:
        yield c


# --------------------------------------------------------------------------- APDU encoding (no pcscd)


@pytest.mark.parametrize("args, kwargs, hexed", [
    ((0x00, 0xA4, 0x00, 0x00), {}, "00A40000"),  # case 1
    ((0x00, 0xB0, 0x00, 0x00), {"le": 256}, "00B0000000"),  # case 2S, Ne 256 -> 00
    ((0x00, 0xB0, 0x01, 0x02), {"le": 0x10}, "00B0010210"),
    ((0x00, 0xA4, 0x02, 0x0C, b"\x00\x0a"), {}, "00A4020C02000A"),  # case 3S
    ((0x80, 0x2A, 0x00, 0x80, b"\x01\x02"), {"le": 256}, "802A0080020102" + "00"),  # case 4S
    ((0x00, 0xB0, 0x00, 0x00), {"le": 4096}, "00B00000001000"),  # case 2E
    ((0x00, 0xB0, 0x00, 0x00), {"le": 65536}, "00B00000000000"),
    ((0x00, 0x42, 0x00, 0x00, b"\xAA" * 300), {}, "00420000" + "00012C" + "AA" * 300),  # case 3E
    ((0x00, 0x42, 0x00, 0x00, b"\xAA" * 2), {"le": 300, "extended": True},
     "00420000" + "000002AAAA" + "012C"),  # case 4E
])
def test_build_and_parse_round_trip(args, kwargs, hexed):
    raw = build_apdu(*args, **kwargs)
    assert raw.hex().upper() == hexed
    cmd = parse_apdu(raw)
    assert cmd is not None and cmd.encode() == raw
    assert cmd.data == (args[4] if len(args) > 4 else b"")
    assert cmd.le == kwargs.get("le")


@pytest.mark.parametrize("kwargs", [{"le": 257, "extended": False}, {"le": 65537}, {"data": b"x" * 256, "extended": False},
                                    {"data": b"x" * 65536}])
def test_build_apdu_rejects_what_does_not_fit(kwargs):
    with pytest.raises(ValueError):
        build_apdu(0, 0xB0, 0, 0, **kwargs)


@pytest.mark.parametrize("raw", ["00", "00B0000000ff", "00A40000050102", "004200000001", "004200000000020102FF"])
def test_parse_apdu_rejects_inconsistent_lengths(raw):
    assert parse_apdu(bytes.fromhex(raw)) is None


def test_exchange_chains_and_retries_without_pcscd():
    state: dict = {}
    transport = LocalTransport(lambda apdu: _card_answer(apdu, state))
    chained = transport.transmit(bytes.fromhex("00CA000000"))
    assert (chained.data, chained.sw, chained.apdus) == (_pattern(0, CHAINED_SIZE), 0x9000, 4)
    retried = transport.transmit(bytes.fromhex("00CB000005"))
    assert (retried.data, retried.sw, retried.apdus) == (_pattern(0, EXACT_LE), 0x9000, 2)
    # a card that never stops asking for GET RESPONSE is an error, not a hang
    endless = LocalTransport(lambda apdu: b"\x61\x01")
    with pytest.raises(Exception, match="61xx"):
        endless.transmit(bytes.fromhex("00CA000000"))
    assert exchange(lambda a: b"\x6A\x82", bytes.fromhex("00A4020C020001")).sw == 0x6A82


def test_log_description_masks_secrets():
    verify = build_apdu(0x00, 0x20, 0x00, 0x80, b"1234")
    text = describe_command(verify)
    assert "31 32 33 34" not in text and "masked" in text and text.startswith("00 20 00 80")
    assert describe_command(bytes.fromhex("00200080")) == "00 20 00 80"  # status query: nothing to mask
    assert "31 32" not in describe_command(bytes.fromhex("0020008009313233"))  # malformed still masked
    assert describe_command(bytes.fromhex("00B0000010")) == "00 B0 00 00 10"


# --------------------------------------------------------------------------- through pcscd


def test_lists_the_private_readers(pcscd):
    assert list_readers() == pcscd.reader_names


def test_unknown_reader_is_reader_not_found(pcscd):
    with pytest.raises(ReaderNotFound) as info:
        PcscReader("No Such Reader 00 00")
    assert "Virtual PCD 00 00" in str(info.value)


def test_empty_reader_is_no_card(empty_slot):
    assert not empty_slot.card_present()
    assert empty_slot.name not in readers_with_card()
    with pytest.raises(NoCard) as info:
        empty_slot.connect()
    assert info.value.code == 0x8010000C
    with pytest.raises(NoCard):
        empty_slot.atr()


def test_waiting_for_a_card_that_never_comes_times_out(empty_slot):
    with pytest.raises(PcscTimeout) as info:
        empty_slot.wait_for_insertion(timeout_s=0.3)
    assert info.value.reader == empty_slot.name
    # the empty reader is already "removed": no wait
    assert empty_slot.wait_for_removal(timeout_s=0.0).present is False


def test_insertion_and_removal_events_carry_timestamps(pcscd, empty_slot):
    card = ScriptedCard(pcscd, 1)
    try:
        before_mono, before_wall = time.monotonic(), time.time()
        card.insert()
        inserted = empty_slot.wait_for_insertion(INSERT_TIMEOUT_S)
        assert inserted.present and inserted.reader == empty_slot.name
        assert inserted.atr == SCRIPTED_ATR
        assert before_mono <= inserted.monotonic_s <= time.monotonic()
        assert before_wall <= inserted.wall_s <= time.time()
        assert empty_slot.card_present() and empty_slot.name in readers_with_card()
        with pytest.raises(PcscTimeout):
            empty_slot.wait_for_removal(timeout_s=0.2)
        card.remove()
        removed = empty_slot.wait_for_removal(INSERT_TIMEOUT_S)
        assert removed.present is False and removed.monotonic_s > inserted.monotonic_s
    finally:
        card.stop()


def test_connection_reports_atr_and_times_each_apdu(conn):
    assert conn.atr == SCRIPTED_ATR and conn.protocol in ("T=0", "T=1")
    before = len(conn.log)
    resp = conn.transmit(bytes.fromhex("00A4040C0AD392F000260100000001"))
    assert resp.sw == 0x9000 and resp.ok and resp.data == b"" and resp.apdus == 1
    assert resp.elapsed_ms > 0
    entry = conn.log.entries()[-1]
    assert len(conn.log) == before + 1
    assert entry.command.startswith("00 A4 04 0C") and entry.sw == 0x9000 and entry.elapsed_ms > 0


def test_get_response_chaining_through_pcscd(conn):
    resp = conn.transmit(bytes.fromhex("00CA000000"))
    assert resp.sw == 0x9000 and resp.data == _pattern(0, CHAINED_SIZE)
    assert resp.apdus == 4  # 61 00, then 256 + 256 + 88 bytes of GET RESPONSE
    sent = [e.command for e in conn.log.entries()[-4:]]
    assert sent[1:] == ["00 C0 00 00 00", "00 C0 00 00 00", "00 C0 00 00 58"]
    assert resp.elapsed_ms >= sum(e.elapsed_ms for e in conn.log.entries()[-4:]) * 0.99


def test_6cxx_is_resent_with_the_card_s_le(conn):
    resp = conn.transmit(bytes.fromhex("00CB000005"))
    assert resp.sw == 0x9000 and resp.data == _pattern(0, EXACT_LE) and resp.apdus == 2
    assert conn.log.entries()[-1].command == "00 CB 00 00 20"
    # transmit_raw does no repair: the caller sees the card's own answer
    assert conn.transmit_raw(bytes.fromhex("00CB000005")) == bytes((0x6C, EXACT_LE))


def test_extended_length_apdus_through_pcscd(conn):
    le = 4096
    resp = conn.transmit(build_apdu(0x00, 0xB0, 0x00, 0x10, le=le))
    assert resp.sw == 0x9000 and resp.data == _pattern(0x10, le)
    big = conn.transmit(build_apdu(0x00, 0xB0, 0x00, 0x00, le=65533, extended=True))
    assert big.sw == 0x9000 and len(big.data) == 65533 and big.data == _pattern(0, 65533)
    payload = bytes(range(256)) * 12
    echo = conn.transmit(build_apdu(0x00, 0x42, 0x00, 0x00, payload, le=65536))
    assert echo.sw == 0x9000 and echo.data == payload
    tail = conn.transmit(build_apdu(0x00, 0xB0, 0xFF, 0xF0, le=256))  # 80 bytes before the end
    assert tail.sw == 0x6282 and tail.data == _pattern(0xFFF0, FILE_SIZE - 0xFFF0)


def test_verify_data_never_reaches_the_log(conn):
    resp = conn.transmit(build_apdu(0x00, 0x20, 0x00, 0x80, b"4321"))
    assert resp.sw == 0x63C3
    entry = conn.log.entries()[-1]
    assert "34 33 32 31" not in entry.command and "masked" in entry.command
    assert all("34 33 32 31" not in e.command for e in conn.log.entries())


def test_transaction_and_close(scripted):
    conn = scripted.reader.connect()
    with conn.transaction():
        assert conn.transmit(bytes.fromhex("00A40000")).sw == 0x9000
    with conn:
        pass
    assert conn.closed
    with pytest.raises(PcscError, match="closed"):
        conn.transmit(bytes.fromhex("00A40000"))
    conn.close()  # idempotent


def test_card_removed_mid_apdu_and_the_next_insertion_is_seen(pcscd):
    # its own card in slot 1: the module's card in slot 0 must survive for the other tests
    card = ScriptedCard(pcscd, 1)
    reader = card.reader
    reader.wait_for_removal(INSERT_TIMEOUT_S)
    try:
        card.insert()
        reader.wait_for_insertion(INSERT_TIMEOUT_S)
        conn = reader.connect()
        assert conn.transmit(bytes.fromhex("00A40000")).sw == 0x9000
        with pytest.raises(CardRemoved) as info:
            conn.transmit(bytes.fromhex("00EE0000"))
        assert info.value.reader == reader.name
        assert conn.closed  # no dangling handle after CardRemoved
        assert conn.log.entries()[-1].sw is None  # the failed APDU is logged, without a status word
        card.remove()
        reader.wait_for_removal(INSERT_TIMEOUT_S)
        # LEAVE_CARD everywhere: pcscd must see the next card (UNPOWER makes it miss ~1 in 3)
        for _ in range(3):
            card.insert()
            reader.wait_for_insertion(INSERT_TIMEOUT_S)
            with reader.connect() as again:
                assert again.transmit(bytes.fromhex("00A40000")).sw == 0x9000
            card.remove()
            reader.wait_for_removal(INSERT_TIMEOUT_S)
    finally:
        card.stop()


def test_card_pulled_between_apdus_is_card_removed(pcscd):
    card = ScriptedCard(pcscd, 1)
    reader = card.reader
    reader.wait_for_removal(INSERT_TIMEOUT_S)
    try:
        card.insert()
        reader.wait_for_insertion(INSERT_TIMEOUT_S)
        with reader.connect() as conn:
            card.remove()
            reader.wait_for_removal(INSERT_TIMEOUT_S)
            with pytest.raises(CardRemoved):
                conn.transmit(bytes.fromhex("00A40000"))
            assert conn.closed
    finally:
        card.stop()


# --------------------------------------------------------------------------- with the real software card


def test_real_card_events_and_a_drop_mid_apdu(pcscd, card_deck, tmp_path):
    """The software card process (sim.card): INSERT/REMOVE on its control port are insertion and
    removal events; a card that drops off the field during an APDU is CardRemoved."""
    from card_process import CardProcess, pick_personas

    reader = PcscReader(pcscd.reader_names[1])
    reader.wait_for_removal(INSERT_TIMEOUT_S)
    persona = pick_personas(card_deck)[0]
    card = CardProcess(persona, tmp_path / "state.json", pcscd.card_args(1), removed=True)
    try:
        with pytest.raises(PcscTimeout):
            reader.wait_for_insertion(0.3)
        t0 = time.monotonic()
        card.control.insert()
        inserted = reader.wait_for_insertion(INSERT_TIMEOUT_S)
        assert inserted.monotonic_s >= t0 and inserted.atr.startswith(b"\x3B")
        with reader.connect() as conn:
            assert conn.atr == inserted.atr
            select = bytes.fromhex("00A4040C0AD392F000260100000001")
            assert conn.transmit(select).sw == 0x9000
            card.control.coupling("flaky", 1.0, dropout_ms=800)  # every APDU now loses the card
            with pytest.raises(CardRemoved):
                conn.transmit(select)
            assert conn.closed
        card.control.coupling("present")
        back = reader.wait_for_insertion(INSERT_TIMEOUT_S)  # the card settles back on the reader
        with reader.connect() as conn:
            assert conn.transmit(select).sw == 0x9000
        card.control.remove()
        removed = reader.wait_for_removal(INSERT_TIMEOUT_S)
        assert removed.present is False and removed.monotonic_s > back.monotonic_s
    finally:
        card.stop()
        reader.wait_for_removal(INSERT_TIMEOUT_S)


def test_a_zero_padded_full_size_atr_is_read_again():
    """pcscd can publish a just-powered card's state before the ATR's length (33 zero-padded bytes)."""
    from drivers.pcsc import MAX_ATR_BYTES, _looks_unsettled

    atr = bytes.fromhex("3BE000FF8131FE4514")
    assert not _looks_unsettled(atr)
    assert _looks_unsettled(atr + b"\x00" * (MAX_ATR_BYTES - len(atr)))
    assert not _looks_unsettled(bytes(range(1, MAX_ATR_BYTES + 1)))
