"""The reader-under-test's control port: the adapter interface and the reference line protocol.

A scenario drives a face-auth card reader only through :class:`ReaderUnderTest`. Vendors whose
readers speak another protocol register an adapter class in the ``facehil.reader_adapters``
entry-point group; :func:`open_reader` loads one by name. The reference adapter,
:class:`LineProtocolReader`, speaks the line protocol documented in hardware.md ("Reader control
port") over anything ``serial.serial_for_url`` opens: ``/dev/ttyUSB0``, a pty path, or
``socket://host:port``.

Wire format (ASCII, one line per message, LF-terminated; CRLF accepted):

* host -> reader: ``<seq> <VERB> [<arg> ...]`` with ``seq`` 1..65535;
* reader -> host replies: ``ACK <seq> [k=v ...]`` or ``NAK <seq> <CODE> [k=v ...]``;
* reader -> host events, at any time: ``EVT <evseq> <t_ms> <kind> [k=v ...]``.

Arguments and values are percent-encoded UTF-8 (see :func:`quote`); keys are lower-case tokens.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

from drivers.station_auth import authenticate

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 8192  # a longer line is garbage: dropped up to the next LF
MAX_CHUNK_BYTES = 4096  # firmware bytes per FW CHUNK (base64 keeps the line under MAX_LINE_BYTES)
SEQ_MAX = 65535
# A long-lived driver keeps a bounded memory (issue 10): the history holds the newest events only
# (a scenario's visit is a few dozen; clear_events() between tests empties it anyway), and the
# duplicate filter remembers the newest event numbers, 4x the reference reader's replay ring (a
# replay never reaches further back than the device's ring).
HISTORY_MAX_EVENTS = 10_000
SEEN_EVSEQ_WINDOW = 4096
ENTRY_POINT_GROUP = "facehil.reader_adapters"
# What an adapter can tell or do beyond the screens and buttons a patient meets. An adapter class
# lists its own in ``capabilities`` (one that lists none is a control port: it has them all); a
# scenario that needs one is marked ``requires(<name>)`` and skips, naming it, on an adapter without.
READER_CAPABILITIES: dict[str, str] = {
    "reader_info": "the reader's firmware version, features and claims (INFO on a control port)",
    "reader_events": "the reader's internal events: face attempts and scores, PIN tries left, error codes, "
                     "alarms, registration results, what staff are shown, transaction ids",
    "firmware_update": "firmware upload, commit and reboot through a control port",
    "raw_pin": "a PIN sent as any string on any screen (a panel's keypad takes only its digits, on its PIN screen)",
}
_SAFE = "-._~,:/+=@!*"  # left as is by quote(); everything else (space, %, non-ASCII) is %XX


# ---------------------------------------------------------------------------------------------
# Codec shared by the host driver and the reference firmware (sim/reader)
# ---------------------------------------------------------------------------------------------

def quote(value: Any) -> str:
    """Percent-encode one argument or value so it holds no space, CR, LF or '%'."""
    return urllib.parse.quote(str(value), safe=_SAFE)


def unquote(token: str) -> str:
    return urllib.parse.unquote(token, errors="replace")


def encode_fields(fields: dict[str, Any]) -> str:
    """``k=v`` tokens, values quoted; ``None`` values are left out."""
    return " ".join(f"{k}={quote(v)}" for k, v in fields.items() if v is not None)


def decode_fields(tokens: list[str]) -> dict[str, str]:
    """Parse ``k=v`` tokens; a token without ``=`` becomes a key with an empty value."""
    out: dict[str, str] = {}
    for tok in tokens:
        if not tok:
            continue
        key, _, value = tok.partition("=")
        out[key] = unquote(value)
    return out


def split_list(value: str | None) -> tuple[str, ...]:
    """A comma-separated field (buttons, features) as a tuple; empty for None or ''."""
    return tuple(v for v in (value or "").split(",") if v)


@dataclass(frozen=True)
class ParsedLine:
    """One line from the reader: ``kind`` is "ACK", "NAK" or "EVT"."""

    kind: str
    seq: int | None
    code: str = ""  # NAK only
    event: str = ""  # EVT only
    t_ms: int = 0  # EVT only
    fields: dict[str, str] = field(default_factory=dict)


def parse_reader_line(line: str) -> ParsedLine | None:
    """Parse a reply or event line; ``None`` for anything that is not one (garbage)."""
    tokens = line.strip().split(" ")
    try:
        head = tokens[0]
        if head == "ACK":
            return ParsedLine("ACK", int(tokens[1]), fields=decode_fields(tokens[2:]))
        if head == "NAK":
            seq = None if tokens[1] == "-" else int(tokens[1])
            return ParsedLine("NAK", seq, code=tokens[2], fields=decode_fields(tokens[3:]))
        if head == "EVT":
            return ParsedLine("EVT", int(tokens[1]), t_ms=int(tokens[2]), event=tokens[3],
                              fields=decode_fields(tokens[4:]))
    except (IndexError, ValueError):
        return None
    return None


def format_ack(seq: int, fields: dict[str, Any] | None = None) -> str:
    tail = encode_fields(fields or {})
    return f"ACK {seq}" + (f" {tail}" if tail else "")


def format_nak(seq: int | None, code: str, message: str, fields: dict[str, Any] | None = None) -> str:
    tail = encode_fields({**(fields or {}), "msg": message})
    return f"NAK {'-' if seq is None else seq} {code} {tail}"


def format_event(seq: int, t_ms: int, kind: str, fields: dict[str, Any] | None = None) -> str:
    tail = encode_fields(fields or {})
    return f"EVT {seq} {t_ms} {kind}" + (f" {tail}" if tail else "")


# ---------------------------------------------------------------------------------------------
# What a scenario sees
# ---------------------------------------------------------------------------------------------

class ReaderError(RuntimeError):
    """Any failure talking to the reader under test."""


class ReaderTimeout(ReaderError):
    """The reader did not answer (or the awaited event did not come) in time."""


class ReaderProtocolError(ReaderError):
    """The reader answered something this driver cannot use (e.g. another protocol version)."""


class AdapterNotFound(ReaderError):
    """No reader adapter of that name is registered."""


class ReaderNak(ReaderError):
    """The reader refused a command; ``code`` is the stable error code (hardware.md)."""

    def __init__(self, verb: str, code: str, message: str, fields: dict[str, str] | None = None):
        super().__init__(f"{verb} refused: {code}: {message}")
        self.verb = verb
        self.code = code
        self.message = message
        self.fields = dict(fields or {})


@dataclass(frozen=True)
class ReaderEvent:
    """One event from the reader, stamped by the reader (``reader_ms``) and on arrival here."""

    seq: int
    kind: str
    reader_ms: int
    host_monotonic_s: float
    fields: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)

    def matches(self, kind: str | None = None, /, **fields: str) -> bool:
        if kind is not None and self.kind != kind:
            return False
        return all(self.fields.get(k) == str(v) for k, v in fields.items())


@dataclass(frozen=True)
class ScreenState:
    id: str
    buttons: tuple[str, ...]
    message: str
    mode: str  # "face" (unattended face auth) or "visual" (staff visual-check mode)
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FirmwareInfo:
    version: str
    features: frozenset[str]
    slot: str
    vendor: str
    model: str
    protocol: int
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateStatus:
    state: str  # idle | receiving | verified | committed | failed
    received: int
    size: int
    active_slot: str
    active_version: str
    pending_slot: str | None
    previous_version: str | None
    last_error: str | None
    rolled_back: bool
    fields: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ReaderUnderTest(Protocol):
    """What every reader adapter offers a scenario."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "ReaderUnderTest": ...
    def __exit__(self, *exc: object) -> None: ...

    # queries
    def info(self) -> FirmwareInfo: ...
    def screen(self) -> ScreenState: ...

    # event stream
    def next_event(self, timeout_s: float) -> ReaderEvent: ...
    def events(self, timeout_s: float) -> Iterator[ReaderEvent]: ...
    def wait_for_event(self, kind: str, timeout_s: float, /, **fields: str) -> ReaderEvent: ...
    def wait_for_screen(self, screen_id: str, timeout_s: float) -> ScreenState: ...
    def history(self) -> list[ReaderEvent]: ...
    def clear_events(self) -> None: ...

    # patient actions
    def press(self, button_id: str) -> None: ...
    def enter_pin(self, digits: str) -> float | None: ...  # when the reader had the whole PIN, if after the call

    # staff actions
    def staff_visual_mode(self) -> None: ...
    def staff_confirm(self) -> None: ...
    def staff_reject(self) -> None: ...
    def staff_face_mode(self) -> None: ...

    # firmware
    def firmware_upload(self, image: bytes, signature: bytes, *, chunk_size: int = MAX_CHUNK_BYTES,
                        allow_downgrade: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> str: ...
    def firmware_commit(self) -> None: ...
    def reboot(self, wait: bool = True, timeout_s: float = 10.0) -> None: ...
    def firmware_status(self) -> UpdateStatus: ...


# ---------------------------------------------------------------------------------------------
# Adapters: registry and loader
# ---------------------------------------------------------------------------------------------

class EventLog:
    """The events an adapter has seen: bounded, in order, handed out once each through a cursor.

    Both adapters of :class:`ReaderUnderTest` keep one (the control port's events as they arrive,
    the screen adapter's as it derives them). It shares its owner's condition variable, which
    guards the owner's other state too: ``append`` is called with it held, the rest take it."""

    def __init__(self, cond: threading.Condition, maxlen: int, source: str):
        self.cond = cond
        self.source = source  # "reader at URL": how timeouts name where the events come from
        self._events: deque[ReaderEvent] = deque(maxlen=maxlen)
        self._base = 0  # absolute number of _events[0]: events are numbered since the log began
        self._cursor = 0  # absolute number of the next event next() hands out
        self.evicted_unread = 0  # events that fell out before anyone read them

    @property
    def maxlen(self) -> int:
        return self._events.maxlen or 0

    def append(self, ev: ReaderEvent) -> None:
        """Keep ``ev`` (the caller holds ``cond`` and notifies); the oldest falls out once full."""
        if len(self._events) == self._events.maxlen:
            self._base += 1
            if self._cursor < self._base:
                self._cursor = self._base
                self.evicted_unread += 1
                if self.evicted_unread == 1:
                    log.warning("%s: more than %d events unread; the oldest are dropped", self.source,
                                self._events.maxlen)
        self._events.append(ev)

    def next(self, timeout_s: float) -> ReaderEvent:
        """The next event not yet handed out, waiting up to ``timeout_s`` for one."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while self._cursor >= self._base + len(self._events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReaderTimeout(f"no event from {self.source} within {timeout_s:.1f} s")
                self.cond.wait(left)
            ev = self._events[self._cursor - self._base]
            self._cursor += 1
            return ev

    def drain(self, timeout_s: float) -> Iterator[ReaderEvent]:
        """Events as they come, until none arrives for ``timeout_s``."""
        while True:
            try:
                yield self.next(timeout_s)
            except ReaderTimeout:
                return

    def wait_for(self, kind: str, timeout_s: float, fields: dict[str, str],
                 last_screen: Callable[[], str]) -> ReaderEvent:
        """The next event of ``kind`` with these fields; the events before it are consumed."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                want = " ".join(f"{k}={v}" for k, v in fields.items())
                raise ReaderTimeout(f"no {kind} event {want} from {self.source} within {timeout_s:.1f} s"
                                    f" (last screen: {last_screen()})")
            try:
                ev = self.next(left)
            except ReaderTimeout:
                continue
            if ev.matches(kind, **fields):
                return ev

    def unread(self) -> list[ReaderEvent]:
        with self.cond:
            return list(self._events)[self._cursor - self._base:]

    def history(self) -> list[ReaderEvent]:
        with self.cond:
            return list(self._events)

    def newest(self, match: Callable[[ReaderEvent], bool]) -> ReaderEvent | None:
        """The newest event kept that ``match`` accepts, consumed or not (the caller holds ``cond``)."""
        return next((e for e in reversed(self._events) if match(e)), None)

    def clear(self) -> None:
        with self.cond:
            self._base += len(self._events)
            self._events.clear()
            self._cursor = self._base


def await_screens(dut: "ReaderUnderTest", ids: tuple[str, ...], timeout_s: float) -> tuple[ReaderEvent | None, list[str]]:
    """Consume ``dut``'s events until a screen event shows one of ``ids``: that event (None at the
    timeout), and the screens shown on the way, for the caller's message."""
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, seen
        try:
            ev = dut.next_event(left)
        except ReaderTimeout:
            continue
        if ev.kind == "screen":
            seen.append(ev.get("id", "?"))
            if ev.get("id") in ids:
                return ev, seen


def adapter_capabilities(adapter: type | object) -> frozenset[str]:
    """The READER_CAPABILITIES an adapter (class or instance) has: its ``capabilities``, else all."""
    declared = getattr(adapter, "capabilities", None)
    return frozenset(READER_CAPABILITIES) if declared is None else frozenset(declared)


def available_adapters() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_adapter(name: str) -> type:
    """The adapter class registered under ``name`` (the reference one even when not installed)."""
    eps = available_adapters()
    if name in eps:
        try:
            return eps[name].load()
        except Exception as exc:  # a vendor plugin that fails to import must say so clearly
            raise AdapterNotFound(f"reader adapter {name!r} failed to load ({eps[name].value}): {exc}") from exc
    if name == "reference":
        return LineProtocolReader
    known = ", ".join(sorted(set(eps) | {"reference"}))
    raise AdapterNotFound(f"no reader adapter {name!r} in entry-point group {ENTRY_POINT_GROUP!r}; known: {known}")


def open_reader(url: str, adapter: str = "reference", **options: Any) -> ReaderUnderTest:
    """Construct the named adapter for ``url`` and open it."""
    cls = load_adapter(adapter)
    dut = cls(url, **options)
    if not isinstance(dut, ReaderUnderTest):
        raise AdapterNotFound(f"reader adapter {adapter!r} ({cls!r}) does not implement ReaderUnderTest")
    dut.open()
    return dut


# ---------------------------------------------------------------------------------------------
# The reference adapter: the line protocol over pyserial
# ---------------------------------------------------------------------------------------------

def _default_serial_factory(url: str, timeout_s: float, baudrate: int):
    import serial

    if url.startswith("serial:") and not url.startswith("serial://"):
        url = url[len("serial:"):]  # the station file's spelling of a device path
    return serial.serial_for_url(url, timeout=timeout_s, baudrate=baudrate, write_timeout=2.0)


class LineProtocolReader:
    """The reference control-port protocol (hardware.md), as a :class:`ReaderUnderTest`.

    A background thread reads the port: replies complete the one pending command, events are
    appended to the history with their arrival time, anything else is dropped (resync after
    garbage). Every wait has a timeout. If the link drops (a socket closed by the device), the
    thread reopens it and the next command repeats the handshake.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0, connect_timeout_s: float = 10.0,
                 baudrate: int = 115200, serial_factory: Callable[..., Any] | None = None):
        self.url = url
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.baudrate = baudrate
        self._factory = serial_factory or _default_serial_factory
        self._port: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cmd_lock = threading.Lock()  # one command in flight at a time
        self._cond = threading.Condition()
        self._seq = 0
        self._pending_seq: int | None = None
        self._reply: ParsedLine | None = None
        self._log = EventLog(self._cond, HISTORY_MAX_EVENTS, f"reader at {url}")
        self._last_screen = "?"
        self._last_evseq: int | None = None
        self._seen_evseqs = _SeqWindow(SEEN_EVSEQ_WINDOW)
        self._boot_id: str | None = None
        self._needs_handshake = True
        self._write_lock = threading.Lock()
        self.garbage_lines = 0
        self.lost_events = 0
        self.hello: dict[str, str] = {}

    # -- life cycle ---------------------------------------------------------------------------
    def open(self) -> None:
        if self._thread is not None:
            return
        self._port = self._factory(self.url, 0.05, self.baudrate)
        try:
            self._port.reset_input_buffer()  # what the device said before we listened is stale
        except Exception:
            pass
        try:
            authenticate(self._port, self.url)  # a simulated station's TCP port wants its token first
        except OSError as exc:
            self.close()
            raise ReaderError(f"reader port {self.url}: {exc}") from exc
        self._stop.clear()
        self._thread = threading.Thread(target=self._read_loop, name=f"reader-port {self.url}", daemon=True)
        self._thread.start()
        try:
            self._handshake(self.connect_timeout_s)
        except BaseException:
            self.close()  # a failed open leaves nothing running
            raise

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._port is not None:
            try:
                self._port.close()
            except Exception:  # closing a dead link must not mask the caller's own error
                pass
            self._port = None

    def __enter__(self) -> "LineProtocolReader":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- link ---------------------------------------------------------------------------------
    def _write_line(self, line: str) -> None:
        data = line.encode("ascii") + b"\n"
        with self._write_lock:
            port = self._port
            if port is None:
                raise ReaderError(f"reader port {self.url} is not open")
            try:
                port.write(data)
                port.flush()
            except Exception as exc:
                raise ReaderError(f"cannot write to reader port {self.url}: {exc}") from exc

    def _read_loop(self) -> None:
        buf = bytearray()
        discarding = False
        while not self._stop.is_set():
            try:
                port = self._port
                chunk = port.read(max(1, getattr(port, "in_waiting", 0) or 1)) if port else b""
            except Exception as exc:
                log.warning("reader port %s: %s; reopening", self.url, exc)
                self._reopen()
                buf.clear()
                continue
            if not chunk:
                continue
            buf.extend(chunk)
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > MAX_LINE_BYTES:  # an endless line: drop it up to the next LF
                        buf.clear()
                        discarding = True
                        self.garbage_lines += 1
                    break
                raw = bytes(buf[:nl])
                del buf[:nl + 1]
                if discarding:
                    discarding = False
                    continue
                self._dispatch(raw, time.monotonic())

    def _reopen(self) -> None:
        with self._write_lock:
            try:
                if self._port is not None:
                    self._port.close()
            except Exception:
                pass
            self._port = None
        while not self._stop.is_set():
            try:
                port = self._factory(self.url, 0.05, self.baudrate)
            except Exception:
                time.sleep(0.2)
                continue
            with self._write_lock:
                self._port = port
            self._needs_handshake = True
            return

    def _dispatch(self, raw: bytes, arrived_s: float) -> None:
        try:
            line = raw.decode("ascii").rstrip("\r")
        except UnicodeDecodeError:
            self.garbage_lines += 1
            return
        if not line.strip():
            return
        msg = parse_reader_line(line)
        if msg is None:
            self.garbage_lines += 1
            log.debug("reader port %s: dropped garbage line %r", self.url, line[:80])
            return
        with self._cond:
            if msg.kind == "EVT":
                assert msg.seq is not None
                boot_id = msg.fields.get("boot_id")
                if msg.event == "boot" and (boot_id != self._boot_id or msg.seq not in self._seen_evseqs):
                    # a new boot: event numbering restarts
                    self._boot_id = boot_id
                    self._seen_evseqs.clear()
                    self._last_evseq = None
                elif msg.seq in self._seen_evseqs:
                    return  # a replayed event we already have
                if self._last_evseq is not None and msg.seq > self._last_evseq + 1:
                    self.lost_events += msg.seq - self._last_evseq - 1
                self._last_evseq = max(msg.seq, self._last_evseq or 0)
                self._seen_evseqs.add(msg.seq)
                self._append(ReaderEvent(seq=msg.seq, kind=msg.event, reader_ms=msg.t_ms,
                                         host_monotonic_s=arrived_s, fields=msg.fields))
            elif msg.seq is not None and msg.seq == self._pending_seq:
                self._reply = msg
            elif msg.kind == "NAK" and msg.seq is None and self._pending_seq is not None:
                self._reply = msg  # the device could not even read our seq: it is our command's answer
            else:
                log.debug("reader port %s: stale reply %r", self.url, line[:80])
                return
            self._cond.notify_all()

    @property
    def evicted_unread_events(self) -> int:
        """Events that fell out of the bounded history before next_event() saw them."""
        return self._log.evicted_unread

    def _append(self, ev: ReaderEvent) -> None:
        """Keep ``ev`` (under ``_cond``); the oldest event falls out once the history is full."""
        self._log.append(ev)
        if ev.kind == "screen":
            self._last_screen = ev.fields.get("id", "?")

    # -- commands -----------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = self._seq % SEQ_MAX + 1
        return self._seq

    def _send(self, verb: str, *args: Any, timeout_s: float | None = None) -> dict[str, str]:
        if self._thread is None:
            raise ReaderError("reader is not open: call open() first")
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        with self._cmd_lock:
            if self._needs_handshake and verb != "HELLO":
                self._handshake_locked(self.connect_timeout_s)
            return self._send_locked(verb, args, wait_s)

    def _send_locked(self, verb: str, args: tuple, wait_s: float) -> dict[str, str]:
        seq = self._next_seq()
        with self._cond:
            self._pending_seq = seq
            self._reply = None
        line = " ".join([str(seq), *verb.split(" "), *(quote(a) for a in args)])
        try:
            self._write_line(line)
            deadline = time.monotonic() + wait_s
            with self._cond:
                while self._reply is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ReaderTimeout(f"reader at {self.url} did not answer {verb} within {wait_s:.1f} s")
                    self._cond.wait(left)
                reply = self._reply
        finally:
            with self._cond:
                self._pending_seq = None
        if reply.kind == "NAK":
            fields = dict(reply.fields)
            raise ReaderNak(verb, reply.code, fields.pop("msg", ""), fields)
        return reply.fields

    def _handshake(self, timeout_s: float) -> None:
        with self._cmd_lock:
            self._handshake_locked(timeout_s)

    def _handshake_locked(self, timeout_s: float) -> None:
        """HELLO until answered: the device may still be booting. A bare LF first resyncs its input."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while True:
            try:
                self._write_line("")
                fields = self._send_locked("HELLO", (PROTOCOL_VERSION,), min(0.3, max(0.05, deadline - time.monotonic())))
                break
            except ReaderNak as exc:
                raise ReaderProtocolError(f"reader at {self.url} refused protocol {PROTOCOL_VERSION}: {exc.message}") from exc
            except ReaderError as exc:
                last = exc
                if time.monotonic() >= deadline:
                    raise ReaderTimeout(f"no handshake with reader at {self.url} within {timeout_s:.1f} s: {last}") from exc
                time.sleep(0.05)
        if fields.get("proto") != str(PROTOCOL_VERSION):
            raise ReaderProtocolError(f"reader at {self.url} speaks protocol {fields.get('proto')!r}, "
                                      f"this driver {PROTOCOL_VERSION}")
        self.hello = fields
        self._needs_handshake = False

    def command(self, verb: str, *args: Any, timeout_s: float | None = None) -> dict[str, str]:
        """Send a raw command (for vendor extensions and protocol tests); returns the ACK fields."""
        return self._send(verb, *args, timeout_s=timeout_s)

    # -- queries ------------------------------------------------------------------------------
    def info(self) -> FirmwareInfo:
        f = self._send("INFO")
        return FirmwareInfo(version=f.get("fw", ""), features=frozenset(split_list(f.get("features"))),
                            slot=f.get("slot", ""), vendor=f.get("vendor", ""), model=f.get("model", ""),
                            protocol=int(f.get("proto", PROTOCOL_VERSION)), fields=f)

    def screen(self) -> ScreenState:
        f = self._send("SCREEN")
        return _screen_from_fields(f)

    # -- events -------------------------------------------------------------------------------
    def next_event(self, timeout_s: float) -> ReaderEvent:
        return self._log.next(timeout_s)

    def events(self, timeout_s: float) -> Iterator[ReaderEvent]:
        """Yield events as they come, until none arrives for ``timeout_s``."""
        return self._log.drain(timeout_s)

    def wait_for_event(self, kind: str, timeout_s: float, /, **fields: str) -> ReaderEvent:
        """The next event of ``kind`` with these fields; events before it are consumed."""
        return self._log.wait_for(kind, timeout_s, fields, self._last_screen_id)

    def wait_for_screen(self, screen_id: str, timeout_s: float) -> ScreenState:
        """Wait until the reader shows ``screen_id`` (already shown counts)."""
        deadline = time.monotonic() + timeout_s
        if not any(e.kind == "screen" for e in self._log.unread()):
            now = self.screen()
            if now.id == screen_id:
                return now
        try:
            self.wait_for_event("screen", max(0.0, deadline - time.monotonic()), id=screen_id)
        except ReaderTimeout as exc:
            raise ReaderTimeout(f"reader at {self.url} did not show screen {screen_id!r} within {timeout_s:.1f} s"
                                f" (last screen: {self._last_screen_id()})") from exc
        return self.screen()

    def _last_screen_id(self) -> str:
        with self._cond:
            return self._last_screen

    def history(self) -> list[ReaderEvent]:
        """The events since open() or the last clear_events(), at most HISTORY_MAX_EVENTS (the newest)."""
        return self._log.history()

    def clear_events(self) -> None:
        """Consume and forget every event received so far (the plugin does it before each test)."""
        self._log.clear()

    # -- patient and staff actions ------------------------------------------------------------
    def press(self, button_id: str) -> None:
        self._send("PRESS", button_id)

    def enter_pin(self, digits: str) -> None:
        self._send("PIN", digits)

    def staff_visual_mode(self) -> None:
        self._send("STAFF", "VISUAL")

    def staff_confirm(self) -> None:
        self._send("STAFF", "CONFIRM")

    def staff_reject(self) -> None:
        self._send("STAFF", "REJECT")

    def staff_face_mode(self) -> None:
        self._send("STAFF", "FACE")

    # -- firmware -----------------------------------------------------------------------------
    def firmware_upload(self, image: bytes, signature: bytes, *, chunk_size: int = MAX_CHUNK_BYTES,
                        allow_downgrade: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> str:
        """Upload and verify an image into the inactive slot; returns its version. Refusals raise ReaderNak."""
        if not 0 < chunk_size <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_size must be 1..{MAX_CHUNK_BYTES}, got {chunk_size}")
        digest = hashlib.sha256(image).hexdigest()
        self._send("FW BEGIN", f"size={len(image)}", f"sha256={digest}",
                   f"sig={base64.b64encode(signature).decode()}", f"allow_downgrade={int(allow_downgrade)}")
        for offset in range(0, len(image), chunk_size):
            chunk = image[offset:offset + chunk_size]
            self._send("FW CHUNK", offset, base64.b64encode(chunk).decode())
            if progress is not None:
                progress(offset + len(chunk), len(image))
        fields = self._send("FW END", timeout_s=max(self.timeout_s, 10.0))
        return fields.get("version", "")

    def firmware_commit(self) -> None:
        self._send("FW COMMIT", timeout_s=max(self.timeout_s, 10.0))

    def firmware_abort(self) -> None:
        self._send("FW ABORT")

    def reboot(self, wait: bool = True, timeout_s: float = 10.0) -> None:
        """Reboot; with ``wait``, return once the reader answers the handshake again."""
        sent_s = time.monotonic()
        self._send("REBOOT")
        if not wait:
            self._needs_handshake = True
            return
        self.wait_for_boot(after_monotonic_s=sent_s, timeout_s=timeout_s)

    def wait_for_boot(self, after_monotonic_s: float, timeout_s: float = 10.0) -> ReaderEvent:
        """Wait for a ``boot`` event that arrived after ``after_monotonic_s``, then handshake again.

        Looks through the history without consuming it, so a scenario still sees the boot event.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                boot = self._log.newest(lambda e: e.kind == "boot" and e.host_monotonic_s >= after_monotonic_s)
                if boot is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReaderTimeout(f"reader at {self.url} did not boot within {timeout_s:.1f} s")
                self._cond.wait(left)
        with self._cmd_lock:
            self._needs_handshake = True
            self._handshake_locked(max(0.5, deadline - time.monotonic()))
        return boot

    def firmware_status(self) -> UpdateStatus:
        f = self._send("FW STATUS")
        return UpdateStatus(state=f.get("state", ""), received=int(f.get("received", 0)),
                            size=int(f.get("size", 0)), active_slot=f.get("active_slot", ""),
                            active_version=f.get("active_version", ""), pending_slot=f.get("pending_slot") or None,
                            previous_version=f.get("previous_version") or None,
                            last_error=f.get("last_error") or None, rolled_back=f.get("rolled_back") == "1",
                            fields=f)

    def replay_events(self, from_seq: int) -> int:
        """Ask the reader to resend buffered events from ``from_seq`` (after a lost link)."""
        return int(self._send("EVENTS", from_seq).get("count", 0))


class _SeqWindow:
    """A set of the ``size`` most recently added event numbers (insertion order evicts)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seqs: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, seq: int) -> bool:
        return seq in self._seqs

    def __len__(self) -> int:
        return len(self._seqs)

    def add(self, seq: int) -> None:
        self._seqs[seq] = None
        self._seqs.move_to_end(seq)
        while len(self._seqs) > self.size:
            self._seqs.popitem(last=False)

    def clear(self) -> None:
        self._seqs.clear()


def _screen_from_fields(f: dict[str, str]) -> ScreenState:
    return ScreenState(id=f.get("screen", ""), buttons=split_list(f.get("buttons")), message=f.get("msg", ""),
                       mode=f.get("mode", ""), fields=f)
