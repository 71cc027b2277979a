"""PC/SC card readers through pcscd (pyscard's low-level ``smartcard.scard`` API).

* ``list_readers()``, ``readers_with_card()``;
* ``PcscReader(name)``: ``card_present()``, ``wait_for_insertion/removal(timeout_s)`` ->
  ``CardEvent`` with monotonic and wall timestamps, ``connect()`` -> ``CardConnection``;
* ``CardConnection``: SHARED mode, LEAVE_CARD disposition on connect and disconnect (an
  UNPOWER disconnect after a vanished vpcd card makes pcscd miss the next insertion: see
  shared notes pcsc-sim.md), ``transmit(apdu) -> Response`` with timing, 61xx/6Cxx handling
  and a transaction log.

Every PC/SC failure is a ``PcscError``; the ones callers act on have their own class. No error
leaves a card handle or context open: each object releases what it holds in ``close()``,
which ``__exit__`` and every failing path call.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

from smartcard import scard

from drivers.apdu import (ApduTransport, LogEntry, MalformedResponse, Response, TransactionLog,
                          TransportError, build_apdu, describe_command, exchange, parse_apdu, timed_send)

__all__ = [
    "ApduTransport", "CardConnection", "CardEvent", "CardReader", "CardRemoved", "LogEntry", "NoCard",
    "PcscError", "PcscReader", "PcscTimeout", "ReaderNotFound", "Response", "TransactionLog", "build_apdu",
    "describe_command", "list_readers", "parse_apdu", "readers_with_card",
]

log = logging.getLogger(__name__)

# Wait in slices so that Ctrl-C and cancellation stay responsive during long waits.
_WAIT_SLICE_S = 0.5
# After a failed exchange, how long to watch for pcscd noticing a removal (it polls ~400 ms).
REMOVAL_GRACE_S = 1.2


def _u32(code: int) -> int:
    return code & 0xFFFFFFFF


class PcscError(TransportError):
    """A PC/SC call failed. ``code`` is the PC/SC result (e.g. 0x80100069), if any."""

    def __init__(self, message: str, code: int | None = None, reader: str | None = None):
        super().__init__(message)
        self.code = None if code is None else _u32(code)
        self.reader = reader


class ReaderNotFound(PcscError):
    """No reader of that name (or none at all)."""


class NoCard(PcscError):
    """The reader has no card (or the card does not answer)."""


class CardRemoved(PcscError):
    """The card went away while connected (before or during an APDU)."""


class PcscTimeout(PcscError):
    """Waiting for a card event (or pcscd) took longer than allowed."""


_ERROR_CLASSES: dict[int, type[PcscError]] = {
    _u32(scard.SCARD_E_UNKNOWN_READER): ReaderNotFound,
    _u32(scard.SCARD_E_READER_UNAVAILABLE): ReaderNotFound,
    _u32(scard.SCARD_E_NO_READERS_AVAILABLE): ReaderNotFound,
    _u32(scard.SCARD_E_NO_SMARTCARD): NoCard,
    _u32(scard.SCARD_W_UNRESPONSIVE_CARD): NoCard,
    _u32(scard.SCARD_W_UNPOWERED_CARD): NoCard,
    _u32(scard.SCARD_W_REMOVED_CARD): CardRemoved,
    _u32(scard.SCARD_E_TIMEOUT): PcscTimeout,
}


def _error(code: int, what: str, reader: str | None = None,
           default: type[PcscError] = PcscError) -> PcscError:
    cls = _ERROR_CLASSES.get(_u32(code), default)
    try:
        text = scard.SCardGetErrorMessage(code)
    except Exception:  # pyscard cannot describe every code
        text = "unknown error"
    where = f" on {reader!r}" if reader else ""
    return cls(f"{what}{where}: {text} (0x{_u32(code):08X})", code, reader)


def _check(code: int, what: str, reader: str | None = None) -> None:
    if code != scard.SCARD_S_SUCCESS:
        raise _error(code, what, reader)


class _Context:
    """An SCARDCONTEXT that is always released."""

    def __init__(self) -> None:
        hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            raise _error(hresult, "cannot reach pcscd (SCardEstablishContext)")
        self.handle = ctx

    def release(self) -> None:
        if self.handle is not None:
            scard.SCardReleaseContext(self.handle)
            self.handle = None

    def __enter__(self) -> "_Context":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _list(ctx: _Context) -> list[str]:
    hresult, names = scard.SCardListReaders(ctx.handle, [])
    if _u32(hresult) == _u32(scard.SCARD_E_NO_READERS_AVAILABLE):
        return []
    _check(hresult, "SCardListReaders")
    return list(names)


def list_readers() -> list[str]:
    """Names of the readers pcscd knows, in its order."""
    with _Context() as ctx:
        return _list(ctx)


def _present(event_state: int) -> bool:
    return bool(event_state & scard.SCARD_STATE_PRESENT) and not event_state & scard.SCARD_STATE_MUTE


def readers_with_card() -> list[str]:
    """Readers that hold a card right now."""
    with _Context() as ctx:
        names = _list(ctx)
        if not names:
            return []
        hresult, states = scard.SCardGetStatusChange(ctx.handle, 0, [(n, scard.SCARD_STATE_UNAWARE) for n in names])
        _check(hresult, "SCardGetStatusChange")
        return [name for name, state, _atr in states if _present(state)]


@dataclass(frozen=True)
class CardEvent:
    """A card seen present or absent, when the host learned it."""

    present: bool
    monotonic_s: float  # time.monotonic() at the moment pcscd reported it
    wall_s: float  # time.time() at the same moment
    reader: str = ""
    atr: bytes = b""


class CardReader(Protocol):
    """A card reader the harness observes and talks through (real PC/SC or anything alike)."""

    name: str

    def card_present(self) -> bool: ...

    def wait_for_insertion(self, timeout_s: float) -> CardEvent: ...

    def wait_for_removal(self, timeout_s: float) -> CardEvent: ...

    def connect(self) -> "CardConnection": ...


MAX_ATR_BYTES = 33
_ATR_SETTLE_TRIES = 10
_ATR_SETTLE_SLEEP_S = 0.02


def _looks_unsettled(atr: bytes) -> bool:
    """A full-size ATR buffer with zero padding: pcscd has not yet published the ATR's length."""
    return len(atr) == MAX_ATR_BYTES and atr.endswith(b"\x00" * 8)


def _settled_atr(atr: bytes, read_again: Callable[[], bytes]) -> bytes:
    """Right after a card is powered, pcscd can publish the reader state before the ATR's length:
    the ATR then comes as all 33 bytes of its buffer, zero-padded. A real ATR that long ending in
    zeros is vanishingly rare, so ask again for a short while."""
    for _ in range(_ATR_SETTLE_TRIES):
        if not _looks_unsettled(atr):
            break
        time.sleep(_ATR_SETTLE_SLEEP_S)
        atr = read_again()
    return atr


class PcscReader:
    """One reader of pcscd. Holds no PC/SC resources between calls."""

    def __init__(self, name: str):
        if name not in list_readers():
            raise ReaderNotFound(f"no reader named {name!r} (pcscd has: {', '.join(list_readers()) or 'none'})",
                                 reader=name)
        self.name = name

    def __repr__(self) -> str:
        return f"PcscReader({self.name!r})"

    def _state(self, ctx: _Context) -> tuple[int, bytes]:
        hresult, states = scard.SCardGetStatusChange(ctx.handle, 0, [(self.name, scard.SCARD_STATE_UNAWARE)])
        _check(hresult, "reading the reader state", self.name)
        _name, state, atr = states[0]
        return state, bytes(atr)

    def card_present(self) -> bool:
        with _Context() as ctx:
            return _present(self._state(ctx)[0])

    def atr(self) -> bytes:
        """The ATR of the card in the reader (NoCard without one), without connecting."""
        with _Context() as ctx:
            state, atr = self._state(ctx)
        if not _present(state):
            raise NoCard(f"no card in {self.name!r}", reader=self.name)
        return atr

    def wait_for_insertion(self, timeout_s: float) -> CardEvent:
        """Return once a card is present (at once if one already is); PcscTimeout otherwise."""
        return self._wait(True, timeout_s)

    def wait_for_removal(self, timeout_s: float) -> CardEvent:
        """Return once the reader is empty (at once if it already is); PcscTimeout otherwise."""
        return self._wait(False, timeout_s)

    def _wait(self, want_present: bool, timeout_s: float) -> CardEvent:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with _Context() as ctx:
            state, atr = self._state(ctx)
            while _present(state) != want_present:
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    raise PcscTimeout(f"no card {'insertion' if want_present else 'removal'} in {self.name!r} "
                                      f"within {timeout_s:.3f} s", scard.SCARD_E_TIMEOUT, self.name)
                hresult, states = scard.SCardGetStatusChange(
                    ctx.handle, max(1, int(min(left_s, _WAIT_SLICE_S) * 1000)), [(self.name, state)])
                if _u32(hresult) == _u32(scard.SCARD_E_TIMEOUT):
                    continue
                _check(hresult, "waiting for a card event", self.name)
                _name, state, atr_list = states[0]
                atr = bytes(atr_list)
            mono, wall = time.monotonic(), time.time()
            if want_present:
                atr = _settled_atr(atr, lambda: self._state(ctx)[1])
        return CardEvent(want_present, mono, wall, self.name, atr if want_present else b"")

    def connect(self, log_size: int = 2000) -> "CardConnection":
        return CardConnection(self.name, log_size=log_size)


@dataclass
class _Handle:
    ctx: _Context
    card: int
    protocol: int


class CardConnection:
    """A SHARED connection to the card in one reader; disconnects with LEAVE_CARD.

    Use as a context manager. After CardRemoved the connection is closed already.
    """

    def __init__(self, reader: str, log_size: int = 2000):
        self.reader = reader
        self.log = TransactionLog(log_size)
        ctx = _Context()
        try:
            hresult, card, protocol = scard.SCardConnect(ctx.handle, reader, scard.SCARD_SHARE_SHARED,
                                                         scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
            if hresult != scard.SCARD_S_SUCCESS:
                # "no smart card" and "removed" both mean there is nothing to talk to yet.
                exc = _error(hresult, "connecting", reader)
                raise NoCard(str(exc), exc.code, reader) if isinstance(exc, CardRemoved) else exc
            self._h: _Handle | None = _Handle(ctx, card, protocol)
            self.atr = self._read_atr()
            # pcscd counts card events per reader (upper 16 bits of the state): a card swapped
            # faster than its poll still shows as a new count.
            self._events_at_connect = self._reader_state() >> 16
        except BaseException:
            if getattr(self, "_h", None) is not None:
                scard.SCardDisconnect(self._h.card, scard.SCARD_LEAVE_CARD)
                self._h = None
            ctx.release()
            raise
        log.debug("connected to %s, protocol T=%d", reader, 0 if protocol == scard.SCARD_PROTOCOL_T0 else 1)

    def __repr__(self) -> str:
        return f"CardConnection({self.reader!r}, {'open' if self._h else 'closed'})"

    @property
    def closed(self) -> bool:
        return self._h is None

    @property
    def protocol(self) -> str:
        if self._h is None:
            return ""
        return "T=0" if self._h.protocol == scard.SCARD_PROTOCOL_T0 else "T=1"

    def _read_atr(self) -> bytes:
        return _settled_atr(self._status_atr(), self._status_atr)

    def _status_atr(self) -> bytes:
        hresult, _name, _state, _proto, atr = scard.SCardStatus(self._h.card)
        _check(hresult, "reading the ATR", self.reader)
        return bytes(atr)

    def _require(self) -> _Handle:
        if self._h is None:
            raise PcscError(f"the connection to {self.reader!r} is closed", reader=self.reader)
        return self._h

    def _send(self, apdu: bytes) -> bytes:
        h = self._require()
        hresult, resp = scard.SCardTransmit(h.card, h.protocol, list(apdu))
        if hresult != scard.SCARD_S_SUCCESS:
            exc = _error(hresult, "transmit", self.reader)
            if isinstance(exc, (CardRemoved, NoCard)):
                raise CardRemoved(str(exc), exc.code, self.reader)
            raise self._removed_or(exc)
        if len(resp) < 2:
            # vpcd answers a vanished card with an empty "success"; pcscd notices on its next poll.
            raise self._removed_or(PcscError(f"transmit on {self.reader!r}: {len(resp)}-byte response",
                                             reader=self.reader))
        return bytes(resp)

    def _removed_or(self, exc: PcscError) -> PcscError:
        """After a failed exchange: CardRemoved if pcscd reports the card gone within the grace."""
        try:
            gone = self._wait_absent(REMOVAL_GRACE_S)
        except PcscError:
            gone = False
        if gone:
            return CardRemoved(f"card removed from {self.reader!r} during an APDU ({exc})", exc.code, self.reader)
        return exc

    def _reader_state(self) -> int:
        h = self._require()
        hresult, states = scard.SCardGetStatusChange(h.ctx.handle, 0, [(self.reader, scard.SCARD_STATE_UNAWARE)])
        _check(hresult, "reading the reader state", self.reader)
        return states[0][1]

    def _wait_absent(self, grace_s: float) -> bool:
        """Has the card we connected to gone (now, or within ``grace_s``)?"""
        h = self._require()
        deadline = time.monotonic() + grace_s
        state = self._reader_state()
        while _present(state) and state >> 16 == self._events_at_connect:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                return False
            hresult, states = scard.SCardGetStatusChange(h.ctx.handle, max(1, int(left_s * 1000)),
                                                         [(self.reader, state)])
            if _u32(hresult) == _u32(scard.SCARD_E_TIMEOUT):
                return False
            _check(hresult, "reading the reader state", self.reader)
            state = states[0][1]
        return True

    def transmit_raw(self, apdu: bytes) -> bytes:
        """One APDU as is (no GET RESPONSE / 6Cxx handling): response data + SW1 SW2."""
        try:
            return timed_send(self._send, bytes(apdu), self.log)[0]
        except CardRemoved:
            self.close()
            raise

    def transmit(self, apdu: bytes) -> Response:
        """Send one command; 61xx and 6Cxx are handled, ``elapsed_ms`` covers all of it."""
        try:
            return exchange(self._send, bytes(apdu), self.log)
        except CardRemoved:
            self.close()
            raise
        except MalformedResponse as exc:
            raise PcscError(str(exc), reader=self.reader) from exc

    @contextmanager
    def transaction(self) -> Iterator["CardConnection"]:
        """Exclusive access for a sequence of APDUs (other SHARED clients wait)."""
        h = self._require()
        _check(scard.SCardBeginTransaction(h.card), "SCardBeginTransaction", self.reader)
        try:
            yield self
        finally:
            if self._h is not None:
                scard.SCardEndTransaction(self._h.card, scard.SCARD_LEAVE_CARD)

    def close(self) -> None:
        """Disconnect (LEAVE_CARD) and release the context. Idempotent; never raises."""
        h, self._h = self._h, None
        if h is None:
            return
        try:
            scard.SCardDisconnect(h.card, scard.SCARD_LEAVE_CARD)
        finally:
            h.ctx.release()

    def __enter__(self) -> "CardConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; callers should close()
        try:
            self.close()
        except Exception:
            pass
