"""Serve one CardOS to pcscd through vsmartcard's vpcd socket protocol.

The card side connects to vpcd's TCP port: connected = card inserted, closed = removed. A
private pcscd's vpcd listens in a network namespace of its own (sim/pcscd.py): the serving
thread enters it before its first connection (sim/netns.py).
Every message is a 2-byte big-endian length and a payload. A 1-byte payload is control
(0 power off, 1 power on, 2 reset, 4 get ATR: only 4 is answered); anything longer is a
command APDU, answered with the response APDU. We never send an empty reply (vpcd takes
it as removal).

Coupling models how well the card sits on the reader's antenna:
``present`` (connected while inserted), ``absent`` (inserted but out of the field: not
connected), ``flaky`` (each APDU, with probability ``error_rate``, the card drops off the
field: the socket closes mid-APDU, power is lost, and the card comes back after
``dropout_s``, as a badly placed contactless card does).

Latency: vpcd writes length and payload in two writes without TCP_NODELAY, so unless we
re-arm TCP_QUICKACK before every recv, each APDU waits ~44 ms for a delayed ACK.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sim import netns as _netns
from sim.card.cardos import CardOS

log = logging.getLogger(__name__)

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4
COUPLINGS = ("present", "absent", "flaky")
RECONNECT_S = 0.2
DEFAULT_DROPOUT_S = 0.6
# pcscd polls vpcd every ~400 ms; a card back sooner is never seen as removed, and pcscd then
# keeps talking to an unpowered card ("Transaction failed" for good). Real readers report the
# glitch, so shorter dropouts are raised to this floor.
MIN_DROPOUT_S = 0.45


@dataclass
class LinkStatus:
    inserted: bool
    coupling: str
    error_rate: float
    connected: bool
    powered: bool  # pcscd has powered the card since it came on the reader
    apdus: int
    dropouts: int


class CardLink:
    """The card's side of one vpcd slot. Thread-safe; ``run()`` is the serving loop."""

    def __init__(self, card: CardOS, host: str, port: int, inserted: bool = True,
                 rng: random.Random | None = None, dropout_s: float = DEFAULT_DROPOUT_S,
                 netns: str | Path | None = None) -> None:
        self.card = card
        self.addr = (host, port)
        self.netns = netns
        self.started = threading.Event()  # run() is serving (or has given up: ``start_error``)
        self.start_error: OSError | None = None
        self._cond = threading.Condition()
        self._inserted = inserted
        self._coupling = "present"
        self._error_rate = 0.0
        self._dropout_s = max(MIN_DROPOUT_S, dropout_s)
        self._away_until = 0.0
        self._sock: socket.socket | None = None
        self._stopping = False
        self._rng = rng or random.Random()
        self.apdus = 0
        self.dropouts = 0

    # ------------------------------------------------------------ commands
    def insert(self) -> None:
        with self._cond:
            self._inserted = True
            self._cond.notify_all()

    def remove(self) -> None:
        with self._cond:
            self._inserted = False
            self._drop_socket()
            self._cond.notify_all()

    def set_coupling(self, mode: str, error_rate: float = 0.0, dropout_s: float | None = None) -> None:
        if mode not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error rate must be within 0..1")
        with self._cond:
            self._coupling = mode
            self._error_rate = error_rate if mode == "flaky" else 0.0
            if dropout_s is not None:
                self._dropout_s = max(MIN_DROPOUT_S, dropout_s)
            if mode == "absent":
                self._drop_socket()
            self._cond.notify_all()  # a dropout under way still runs its course

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._drop_socket()
            self._cond.notify_all()

    def status(self) -> LinkStatus:
        with self._cond:
            return LinkStatus(self._inserted, self._coupling, self._error_rate, self._sock is not None,
                              self.card.powered, self.apdus, self.dropouts)

    # ------------------------------------------------------------ serving loop
    def _want_connected(self) -> bool:
        return (self._inserted and self._coupling != "absent" and time.monotonic() >= self._away_until)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the serving thread's recv
            except OSError:
                pass

    def run(self) -> None:
        if self.netns is not None:
            try:
                _netns.enter(self.netns)  # this thread only: the control port stays on the host
            except OSError as exc:
                self.start_error = exc
                self.started.set()
                return
        self.started.set()
        while True:
            with self._cond:
                while not self._stopping and not self._want_connected():
                    wait = self._away_until - time.monotonic()
                    self._cond.wait(timeout=wait if wait > 0 else None)
                if self._stopping:
                    return
            sock = self._connect()
            if sock is None:
                with self._cond:
                    self._cond.wait(timeout=RECONNECT_S)
                continue
            try:
                self._serve(sock)
            except OSError as exc:
                log.debug("vpcd link closed: %s", exc)
            except Exception:  # the card must outlive any bug: drop this link, serve the next
                log.exception("vpcd link failed")
            finally:
                with self._cond:
                    self._sock = None
                sock.close()
                self.card.power_off()  # off the reader: the chip loses power
                log.info("card off the reader")

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(self.addr, timeout=2.0)
        except OSError as exc:
            log.debug("vpcd %s:%d not reachable: %s", *self.addr, exc)
            return None
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._cond:
            if self._stopping or not self._want_connected():
                sock.close()
                return None
            self._sock = sock
        log.info("card on the reader (vpcd %s:%d)", *self.addr)
        return sock

    def _serve(self, sock: socket.socket) -> None:
        while True:
            header = _recv_exact(sock, 2)
            if header is None:
                return
            payload = _recv_exact(sock, int.from_bytes(header, "big"))
            if payload is None:
                return
            if len(payload) == 1:
                reply = self._control(payload[0])
            elif not payload:
                continue
            else:
                with self._cond:
                    self.apdus += 1
                    drop = self._coupling == "flaky" and self._rng.random() < self._error_rate
                    if drop:
                        self.dropouts += 1
                        self._away_until = time.monotonic() + self._dropout_s
                if drop:
                    log.info("flaky coupling: card dropped off the field mid-APDU")
                    return
                reply = self.card.process(payload)
            if reply:
                sock.sendall(len(reply).to_bytes(2, "big") + reply)

    def _control(self, code: int) -> bytes | None:
        if code == CTRL_OFF:
            self.card.power_off()
        elif code == CTRL_ON:
            self.card.power_on()
        elif code == CTRL_RESET:
            self.card.reset()
        elif code == CTRL_ATR:
            return self.card.atr
        else:
            log.warning("unknown vpcd control byte %d ignored", code)
        return None


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        # Re-arm quick ACK every time: the kernel clears it after sending an ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)
