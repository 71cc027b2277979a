"""ISO 7816-4 command APDUs and responses, independent of how they reach a card.

* ``build_apdu`` / ``parse_apdu``: cases 1-4, short and extended length.
* ``exchange``: one logical command over a raw ``send(bytes) -> bytes``, with the two
  transport-level repairs a host does for the card: 61xx (GET RESPONSE until the data is all
  out) and 6Cxx (send again with the Le the card asked for).
* ``Response``, ``TransactionLog`` and ``LocalTransport`` (an in-process transport over any
  ``process(apdu) -> response`` function, e.g. a card OS in a test).

The log never holds card secrets: VERIFY / CHANGE / RESET RETRY COUNTER data are masked and
response data is recorded by length only (it can be personal data or a face photo).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol

log = logging.getLogger(__name__)

SW_OK = 0x9000
INS_GET_RESPONSE = 0xC0
# Commands whose data is a PIN, password or check code.
SECRET_INS = frozenset({0x20, 0x21, 0x24, 0x2C})
MAX_SHORT_LE = 256
MAX_EXTENDED_LE = 65536


class TransportError(Exception):
    """An APDU could not be exchanged with the card (not a card status word)."""


class MalformedResponse(TransportError):
    """The card (or the transport) returned fewer than two bytes."""


class Response(NamedTuple):
    """A card's answer to one logical command, after GET RESPONSE / 6Cxx handling.

    A NamedTuple: immutable and cheap to make (it is built once per APDU on the hot path).
    """

    data: bytes
    sw: int
    elapsed_ms: float  # round-trip time of its raw APDUs (chaining included), host clock
    apdus: int = 1  # raw APDUs it took (1 + GET RESPONSEs + 6Cxx re-sends)

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    def __repr__(self) -> str:  # never show the data: it may be personal
        return f"Response(sw={self.sw:04X}, data={len(self.data)} bytes, elapsed_ms={self.elapsed_ms:.3f})"


class ApduTransport(Protocol):
    """Anything that carries a command APDU to a card and brings back its response."""

    def transmit(self, apdu: bytes) -> Response: ...


# --------------------------------------------------------------------------- building / parsing


@dataclass(frozen=True)
class Command:
    """A parsed command APDU. ``le`` is Ne, the maximum number of response bytes (None: case 1/3)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    extended: bool = False

    def encode(self) -> bytes:
        return build_apdu(self.cla, self.ins, self.p1, self.p2, self.data, self.le, extended=self.extended)


def build_apdu(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None,
               *, extended: bool | None = None) -> bytes:
    """Encode a command APDU (ISO 7816-4 cases 1-4).

    ``le`` is Ne, the number of response bytes expected: 1..256 short, 1..65536 extended;
    0 means "as many as possible" (encoded 00 / 0000). ``extended=None`` picks extended
    length only when the data or Le does not fit a short APDU.
    """
    for name, v in (("CLA", cla), ("INS", ins), ("P1", p1), ("P2", p2)):
        if not 0 <= v <= 0xFF:
            raise ValueError(f"{name} must be one byte, got {v}")
    data = bytes(data)
    if extended is None:
        extended = len(data) > 255 or (le is not None and le > MAX_SHORT_LE)
    max_lc, max_le = (65535, MAX_EXTENDED_LE) if extended else (255, MAX_SHORT_LE)
    if len(data) > max_lc:
        raise ValueError(f"{len(data)} data bytes do not fit a{'n extended' if extended else ' short'} APDU")
    if le is not None and not 0 <= le <= max_le:
        raise ValueError(f"Le {le} out of range for a{'n extended' if extended else ' short'} APDU (0..{max_le})")
    out = bytearray((cla, ins, p1, p2))
    if not extended:
        if data:
            out += bytes((len(data),)) + data
        if le is not None:
            out.append(le % 256)
        return bytes(out)
    if not data and le is None:
        return bytes(out)  # case 1 has no extended form
    out.append(0)
    if data:
        out += len(data).to_bytes(2, "big") + data
    if le is not None:
        out += (le % 65536).to_bytes(2, "big")
    return bytes(out)


def parse_apdu(raw: bytes) -> Command | None:
    """Decode a command APDU; None when its length fields are inconsistent (malformed)."""
    raw = bytes(raw)
    n = len(raw)
    if n < 4:
        return None
    cla, ins, p1, p2 = raw[:4]
    if n == 4:
        return Command(cla, ins, p1, p2)
    b = raw[4]
    if n == 5:
        return Command(cla, ins, p1, p2, le=b or 256)
    if b != 0:  # short, with data
        lc = b
        if n == 5 + lc:
            return Command(cla, ins, p1, p2, raw[5:5 + lc])
        if n == 6 + lc:
            return Command(cla, ins, p1, p2, raw[5:5 + lc], le=raw[-1] or 256)
        return None
    if n == 7:  # extended case 2
        return Command(cla, ins, p1, p2, le=int.from_bytes(raw[5:7], "big") or 65536, extended=True)
    lc = int.from_bytes(raw[5:7], "big")
    if lc == 0:
        return None
    if n == 7 + lc:
        return Command(cla, ins, p1, p2, raw[7:7 + lc], extended=True)
    if n == 9 + lc:
        return Command(cla, ins, p1, p2, raw[7:7 + lc], le=int.from_bytes(raw[-2:], "big") or 65536,
                       extended=True)
    return None


def describe_command(raw: bytes, max_bytes: int = 64) -> str:
    """Hex of a command APDU for logs, with secret data (PINs, check codes) masked and long
    commands cut after ``max_bytes``."""
    raw = bytes(raw)
    if len(raw) >= 2 and raw[1] in SECRET_INS and len(raw) > 5:
        cmd = parse_apdu(raw)
        if cmd is None:
            return f"{raw[:4].hex(' ').upper()} <{len(raw) - 4} bytes masked>"
        le = "" if cmd.le is None else f" Le={cmd.le}"
        return f"{raw[:4].hex(' ').upper()} <{len(cmd.data)} bytes masked>{le}"
    if len(raw) > max_bytes:
        return f"{raw[:max_bytes].hex(' ').upper()} ... (+{len(raw) - max_bytes} bytes)"
    return raw.hex(" ").upper()


# --------------------------------------------------------------------------- transaction log


class LogEntry(NamedTuple):
    """One raw APDU on the wire. Response data is recorded by length only; the command's
    secret data is masked when it is formatted (``command``), never stored in clear."""

    wall_s: float
    raw: bytes  # the command, secret data already replaced (see _mask)
    sw: int | None  # None when the exchange failed
    response_len: int
    elapsed_ms: float
    error: str = ""

    @property
    def command(self) -> str:
        return describe_command(self.raw)


def _mask(apdu: bytes) -> bytes:
    """The command with the data of a VERIFY-like command zeroed (length kept for the log)."""
    if len(apdu) > 5 and apdu[1] in SECRET_INS:
        cmd = parse_apdu(apdu)
        if cmd is None:
            return apdu[:4] + bytes(len(apdu) - 4)
        return Command(cmd.cla, cmd.ins, cmd.p1, cmd.p2, bytes(len(cmd.data)), cmd.le, cmd.extended).encode()
    return apdu


class TransactionLog:
    """The last ``maxlen`` raw APDUs of a connection, safe to read from another thread."""

    def __init__(self, maxlen: int = 2000):
        self._entries: deque[LogEntry] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, entry: LogEntry) -> None:
        with self._lock:
            self._entries.append(entry)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("apdu %s -> %s (%d bytes) %.3f ms %s", entry.command,
                      "----" if entry.sw is None else f"{entry.sw:04X}", entry.response_len, entry.elapsed_ms,
                      entry.error)

    def entries(self) -> list[LogEntry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def timed_send(send: Callable[[bytes], bytes], apdu: bytes, txlog: TransactionLog | None) -> tuple[bytes, float]:
    """Send one raw APDU; returns the response and its round trip in ms, logged in ``txlog``."""
    wall = time.time()
    t0 = time.perf_counter_ns()
    try:
        resp = send(apdu)
    except Exception as exc:
        if txlog is not None:
            txlog.add(LogEntry(wall, _mask(apdu), None, 0, (time.perf_counter_ns() - t0) / 1e6, type(exc).__name__))
        raise
    elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
    if txlog is not None:
        n = len(resp)
        txlog.add(LogEntry(wall, _mask(apdu), (resp[-2] << 8) | resp[-1] if n >= 2 else None, max(n - 2, 0),
                           elapsed_ms))
    return resp, elapsed_ms


# --------------------------------------------------------------------------- chaining


def _split(resp: bytes) -> tuple[bytes, int]:
    if len(resp) < 2:
        raise MalformedResponse(f"response of {len(resp)} byte(s) has no status word")
    return bytes(resp[:-2]), int.from_bytes(resp[-2:], "big")


def _get_response_cla(cla: int) -> int:
    # GET RESPONSE is inter-industry: keep the logical-channel bits, drop proprietary/chaining bits.
    return cla & 0x03 if cla & 0x80 else cla & 0xEF


def exchange(send: Callable[[bytes], bytes], apdu: bytes, txlog: TransactionLog | None = None,
             max_get_response: int = 256) -> Response:
    """Send one logical command; follow 61xx with GET RESPONSE and answer 6Cxx once with its Le."""
    resp, elapsed_ms = timed_send(send, apdu, txlog)
    if len(resp) < 2:
        raise MalformedResponse(f"response of {len(resp)} byte(s) has no status word")
    sw1 = resp[-2]
    if sw1 != 0x61 and sw1 != 0x6C:  # the common case, kept short: it is every APDU's cost
        return Response(bytes(resp[:-2]), (sw1 << 8) | resp[-1], elapsed_ms)
    data, sw = _split(resp)
    count = 1
    if sw >> 8 == 0x6C:
        cmd = parse_apdu(apdu)
        if cmd is not None and not cmd.extended:
            retry = Command(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, le=(sw & 0xFF) or 256).encode()
            resp, more_ms = timed_send(send, retry, txlog)
            data, sw = _split(resp)
            elapsed_ms += more_ms
            count += 1
    chunks = [data]
    gr_cla = _get_response_cla(apdu[0]) if apdu else 0
    while sw >> 8 == 0x61:
        if count > max_get_response:
            raise TransportError(f"card kept answering 61xx after {max_get_response} GET RESPONSEs")
        resp, more_ms = timed_send(send, build_apdu(gr_cla, INS_GET_RESPONSE, 0, 0, le=(sw & 0xFF) or 256), txlog)
        more, sw = _split(resp)
        chunks.append(more)
        elapsed_ms += more_ms
        count += 1
    return Response(b"".join(chunks), sw, elapsed_ms, count)


class LocalTransport:
    """An in-process transport over ``process(apdu) -> response bytes`` (e.g. a card OS).

    Same chaining, timing and log as a PC/SC connection, without pcscd: for fast tests and
    as the raw baseline of benches.
    """

    def __init__(self, process: Callable[[bytes], bytes], log_size: int = 2000):
        self._process = process
        self.log = TransactionLog(log_size)

    def transmit(self, apdu: bytes) -> Response:
        return exchange(self._process, apdu, self.log)
