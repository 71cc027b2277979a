"""The software My Number Card's operating system, as a pure object.

``CardOS.process(apdu) -> response`` takes raw command bytes and returns response data +
SW1 SW2, and never raises: malformed input gets the status word a real card gives. The
applications (``filesystem.Application``) are built by ``sim.card.layout``; persistent retry
counters live in ``sim.card.state.CardState``.

Commands:

=========  ==============================================================================
00 A4      SELECT: P1=04 by AID (P2 0C or 00), P1=02 EF by FID under the current AP.
           MF and other P1 values -> 6A86 (a real card answers SELECT MF so after reset).
00 B0      READ BINARY, offset P1P2 (15 bits), short (Le 00 = 256) or extended (<= 65533).
           Offset at/after the end -> 6B00; fewer bytes than Ne left -> data + 6282.
00 20      VERIFY P1=00 P2=80 on the selected secret EF. No data: 63Cx, nothing spent
           (63C0 for a blocked or unset secret). Wrong: 63Cx, 63C0 on the last try, then
           the blocked SW (6984, or 6983 by configuration). Bad format: 6A80, nothing spent.
00 84      GET CHALLENGE, P1P2=0000, Le 1..32 (8 for terminal authorization).
00 C0      GET RESPONSE after 61xx.
80 2A      SIGN P1=00 P2=80 with the selected key EF: PKCS#1 v1.5 over the given DigestInfo.
80 82      TERMINAL AUTHORIZE (drivers/terminal_auth.py).
=========  ==============================================================================

Security status is per application: VERIFY results and a terminal authorization last until
another application is selected, or reset / power-off / removal.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from typing import Callable

from cryptography import x509

from drivers import terminal_auth
from sim.card.apdu import (SW_CLA_NOT_SUPPORTED, SW_CONDITIONS, SW_EOF, SW_FILE_NOT_FOUND,
                           SW_INCOMPATIBLE_FILE, SW_INS_NOT_SUPPORTED, SW_NO_CURRENT_EF, SW_OFFSET_OUTSIDE,
                           SW_OK, SW_REF_DATA_UNUSABLE, SW_SECURITY, SW_UNKNOWN, SW_WRONG_DATA,
                           SW_WRONG_LENGTH, SW_WRONG_P1P2, CardError, CommandApdu, parse_command, sw_bytes,
                           tries_sw)
from sim.card.filesystem import TERMINAL, Application, BinaryEF, KeyEF, SecretEF
from sim.card.keyops import max_input_len, pkcs1_v15_sign
from sim.card.state import CardState

log = logging.getLogger(__name__)

CONTACT_ATR = bytes.fromhex("3BE000FF8131FE4514")
# The card's response buffer: vpcd frames carry at most 65535 bytes, SW included.
MAX_RESPONSE_DATA = 65533


@dataclass(frozen=True)
class CardConfig:
    atr: bytes = CONTACT_ATR
    blocked_sw: int = 0x6984  # some tables say 6983


@dataclass
class _Session:
    """Volatile state: lost at reset, power-off and removal."""

    app: Application | None = None
    ef: object | None = None
    verified: frozenset[str] = frozenset()
    terminal_grant: int | None = None  # method of a pending terminal authorization
    challenge: bytes | None = None
    pending: bytes = b""  # data waiting for GET RESPONSE


class CardOS:
    def __init__(self, apps: list[Application], state: CardState, config: CardConfig | None = None,
                 terminal_ca: x509.Certificate | None = None, auth_cert_der: bytes | None = None,
                 random_bytes: Callable[[int], bytes] = os.urandom,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.apps = apps
        self.state = state
        self.config = config or CardConfig()
        self.terminal_ca = terminal_ca
        self.auth_cert_der = auth_cert_der
        self._random = random_bytes
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._s = _Session()
        self.powered = False
        self.apdu_count = 0
        self._handlers = {
            (0x00, 0xA4): self._select,
            (0x00, 0xB0): self._read_binary,
            (0x00, 0x20): self._verify,
            (0x00, 0x84): self._get_challenge,
            (0x00, 0xC0): self._get_response,
            (0x80, 0x2A): self._sign,
            (0x80, terminal_auth.INS_AUTHORIZE): self._terminal_authorize,
        }

    # ------------------------------------------------------------ power
    @property
    def atr(self) -> bytes:
        return self.config.atr

    def power_on(self) -> bytes:
        self._s = _Session()
        self.powered = True
        return self.atr

    def reset(self) -> bytes:
        self._s = _Session()
        self.powered = True
        return self.atr

    def power_off(self) -> None:
        self._s = _Session()
        self.powered = False

    # ------------------------------------------------------------ dispatch
    def process(self, apdu: bytes) -> bytes:
        """Response data + SW1 SW2 for one command APDU. Never raises."""
        self.apdu_count += 1
        pending, self._s.pending = self._s.pending, b""
        try:
            cmd = parse_command(bytes(apdu))
            if cmd.cla not in (0x00, 0x80):
                raise CardError(SW_CLA_NOT_SUPPORTED)
            handler = self._handlers.get((cmd.cla, cmd.ins))
            if handler is None:
                raise CardError(SW_INS_NOT_SUPPORTED)
            if cmd.ins == 0xC0:
                self._s.pending = pending
            data, sw = handler(cmd)
            return data + sw_bytes(sw)
        except CardError as exc:
            return sw_bytes(exc.sw)
        except Exception:  # a card never crashes: log it and answer "no precise diagnosis"
            log.exception("card OS error on APDU %s", bytes(apdu[:5]).hex())
            return sw_bytes(SW_UNKNOWN)

    # ------------------------------------------------------------ SELECT
    def _select(self, cmd: CommandApdu) -> tuple[bytes, int]:
        if cmd.p2 not in (0x0C, 0x00) or cmd.p1 not in (0x04, 0x02):
            raise CardError(SW_WRONG_P1P2, "select mode not supported (MF, path, ...)")
        if not cmd.data:
            raise CardError(SW_WRONG_LENGTH, "select without identifier")
        if cmd.p1 == 0x04:
            app = next((a for a in self.apps if a.aid == cmd.data), None)
            if app is None:
                raise CardError(SW_FILE_NOT_FOUND)
            if app is not self._s.app:  # leaving an AP loses its security status
                self._s.verified = frozenset()
                self._s.terminal_grant = None
            self._s.app, self._s.ef = app, None
            return b"", SW_OK
        if len(cmd.data) != 2:
            raise CardError(SW_WRONG_LENGTH, "an EF identifier has two bytes")
        fid = int.from_bytes(cmd.data, "big")
        if self._s.app is None or fid not in self._s.app.files:
            raise CardError(SW_FILE_NOT_FOUND)
        self._s.ef = self._s.app.files[fid]
        return b"", SW_OK

    def _current_ef(self, kind: type):
        ef = self._s.ef
        if ef is None:
            raise CardError(SW_NO_CURRENT_EF)
        if not isinstance(ef, kind):
            raise CardError(SW_INCOMPATIBLE_FILE)
        return ef

    def _allowed(self, credentials: frozenset[str]) -> bool:
        return not credentials or bool(credentials & self._s.verified)

    # ------------------------------------------------------------ READ BINARY
    def _read_binary(self, cmd: CommandApdu) -> tuple[bytes, int]:
        if cmd.data or cmd.ne is None:
            raise CardError(SW_WRONG_LENGTH)
        if cmd.p1 & 0x80:
            raise CardError(SW_WRONG_P1P2, "short EF identifiers are not supported")
        ef: BinaryEF = self._current_ef(BinaryEF)
        if not self._allowed(ef.read):
            raise CardError(SW_SECURITY)
        offset = cmd.p1p2
        if offset >= len(ef.data):
            raise CardError(SW_OFFSET_OUTSIDE)
        want = min(cmd.ne, MAX_RESPONSE_DATA)
        chunk = ef.data[offset:offset + want]
        eof = len(chunk) < want
        return chunk, SW_EOF if eof else SW_OK

    # ------------------------------------------------------------ VERIFY
    def _verify(self, cmd: CommandApdu) -> tuple[bytes, int]:
        if cmd.p1 != 0x00 or cmd.p2 != 0x80:
            raise CardError(SW_WRONG_P1P2)
        ef: SecretEF = self._current_ef(SecretEF)
        tries = self.state.get(ef.counter)
        if not cmd.data:  # status query: never spends a try
            return b"", tries_sw(0 if ef.value is None else tries)
        if ef.value is None:
            raise CardError(SW_REF_DATA_UNUSABLE, "no such secret is set on this card")
        if tries == 0:
            raise CardError(self.config.blocked_sw)
        if not ef.well_formed(cmd.data):
            raise CardError(SW_WRONG_DATA, "secret in the wrong format")
        if cmd.data == ef.value.encode("ascii"):
            self.state.set(ef.counter, ef.max_tries)
            self._s.verified = self._s.verified | {ef.grants}
            return b"", SW_OK
        tries -= 1
        self.state.set(ef.counter, tries)
        self._s.verified = self._s.verified - {ef.grants}
        return b"", tries_sw(tries)

    # ------------------------------------------------------------ GET CHALLENGE / RESPONSE
    def _get_challenge(self, cmd: CommandApdu) -> tuple[bytes, int]:
        if cmd.p1p2 != 0:
            raise CardError(SW_WRONG_P1P2)
        if cmd.data or cmd.ne is None:
            raise CardError(SW_WRONG_LENGTH)
        if cmd.ne > 32:
            raise CardError(0x6C00 | terminal_auth.CHALLENGE_LEN, "challenges are at most 32 bytes")
        self._s.challenge = self._random(cmd.ne)
        return self._s.challenge, SW_OK

    def _get_response(self, cmd: CommandApdu) -> tuple[bytes, int]:
        if cmd.p1p2 != 0:
            raise CardError(SW_WRONG_P1P2)
        if not self._s.pending:
            raise CardError(SW_CONDITIONS, "nothing to get")
        if cmd.ne is None:
            raise CardError(SW_WRONG_LENGTH)
        return self._respond(self._s.pending, cmd.ne)

    def _respond(self, data: bytes, ne: int | None) -> tuple[bytes, int]:
        """Return data the way a T=1 card does for a fixed-size result."""
        if ne is None:  # case 3 command: announce the data for GET RESPONSE
            self._s.pending = data
            return b"", 0x6100 | (len(data) & 0xFF)
        if ne < len(data):
            if ne <= 256 and len(data) <= 256:
                raise CardError(0x6C00 | (len(data) & 0xFF), "wrong Le")
            self._s.pending = data[ne:]
            rest = len(self._s.pending)
            return data[:ne], 0x6100 | (rest & 0xFF if rest < 256 else 0)
        return data, SW_OK

    # ------------------------------------------------------------ SIGN
    def _sign(self, cmd: CommandApdu) -> tuple[bytes, int]:
        if cmd.p1 != 0x00 or cmd.p2 != 0x80:
            raise CardError(SW_WRONG_P1P2, "only PKCS#1 v1.5 over a given DigestInfo (P1=00 P2=80)")
        if not cmd.data:
            raise CardError(SW_WRONG_LENGTH)
        ef: KeyEF = self._current_ef(KeyEF)
        by_terminal = False
        if not (ef.use & self._s.verified):
            if TERMINAL in ef.use and self._s.terminal_grant is not None:
                by_terminal = True
            else:
                raise CardError(SW_SECURITY)
        if len(cmd.data) > max_input_len(ef.key):
            raise CardError(SW_WRONG_DATA, "data too long for the key")
        signature = pkcs1_v15_sign(ef.key, cmd.data)
        if by_terminal:
            self._s.terminal_grant = None  # one authorization, one signature
        return self._respond(signature, cmd.ne)

    # ------------------------------------------------------------ TERMINAL AUTHORIZE
    def _terminal_authorize(self, cmd: CommandApdu) -> tuple[bytes, int]:
        if self._s.challenge is None:
            raise CardError(terminal_auth.SW_NO_CHALLENGE, "no challenge pending")
        if cmd.p1 != 0x00 or cmd.p2 not in terminal_auth.METHODS:
            raise CardError(SW_WRONG_P1P2)
        challenge, self._s.challenge = self._s.challenge, None  # consumed by any attempt
        if not cmd.data:
            raise CardError(SW_WRONG_LENGTH)
        if self.terminal_ca is None or self.auth_cert_der is None:
            raise CardError(SW_CONDITIONS, "card has no terminal CA or user-auth certificate")
        if self._s.app is None or not _accepts_terminal(self._s.app):
            raise CardError(SW_CONDITIONS, "terminal authorization is done in the JPKI AP")
        try:
            terminal_auth.verify_authorization(cmd.data, challenge, cmd.p2, self.auth_cert_der,
                                               self.terminal_ca, now=self._clock())
        except terminal_auth.TerminalAuthError as exc:
            log.info("terminal authorization refused: %s", exc.reason)
            raise CardError(exc.sw) from None
        self._s.terminal_grant = cmd.p2
        return b"", SW_OK


def _accepts_terminal(app: Application) -> bool:
    """The application holding a key that a terminal authorization unlocks (the JPKI AP)."""
    return any(isinstance(ef, KeyEF) and TERMINAL in ef.use for ef in app.files.values())
