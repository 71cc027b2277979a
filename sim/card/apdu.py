"""Card-side ISO/IEC 7816-4 command APDU parsing and status words.

The card sees raw bytes; this module turns them into a ``CommandApdu`` or a ``CardError``
carrying the status word a real card answers for malformed input (6700). Cases 1-4, short
and extended length (ISO 7816-3 12.1.3):

* case 1: ``CLA INS P1 P2``
* case 2S: ``+ Le`` (Le 00 -> 256); case 2E: ``+ 00 Le1 Le2`` (0000 -> 65536)
* case 3S: ``+ Lc data`` (Lc 01..FF); case 3E: ``+ 00 Lc1 Lc2 data`` (Lc 0001..FFFF)
* case 4S: ``+ Lc data Le``; case 4E: ``+ 00 Lc1 Lc2 data Le1 Le2``
"""

from __future__ import annotations

from dataclasses import dataclass

# Status words used by the simulated card.
SW_OK = 0x9000
SW_EOF = 0x6282                # end of file reached before Ne bytes were read
SW_AUTH_FAILED = 0x6300        # our terminal authorization: verification failed
SW_WRONG_LENGTH = 0x6700
SW_INCOMPATIBLE_FILE = 0x6981  # command incompatible with the file structure
SW_SECURITY = 0x6982           # security status not satisfied
SW_BLOCKED = 0x6983            # authentication method blocked
SW_REF_DATA_UNUSABLE = 0x6984  # reference data not usable (also: not set)
SW_CONDITIONS = 0x6985         # conditions of use not satisfied
SW_NO_CURRENT_EF = 0x6986      # command not allowed (no current EF)
SW_WRONG_DATA = 0x6A80
SW_FILE_NOT_FOUND = 0x6A82
SW_WRONG_P1P2 = 0x6A86
SW_REF_NOT_FOUND = 0x6A88
SW_OFFSET_OUTSIDE = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_UNKNOWN = 0x6F00

SHORT_MAX_NE = 256
EXTENDED_MAX_NE = 65536


class CardError(Exception):
    """A command ends with this status word (and no data)."""

    def __init__(self, sw: int, why: str = "") -> None:
        super().__init__(f"{sw:04X} {why}".strip())
        self.sw = sw


def sw_bytes(sw: int) -> bytes:
    return bytes(((sw >> 8) & 0xFF, sw & 0xFF))


def tries_sw(tries_left: int) -> int:
    """63Cx: verification failed or status query, x tries left (0..15)."""
    return 0x63C0 | max(0, min(tries_left, 15))


@dataclass(frozen=True)
class CommandApdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    ne: int | None = None  # expected response length; None when Le is absent
    extended: bool = False

    @property
    def p1p2(self) -> int:
        return (self.p1 << 8) | self.p2

    @property
    def case(self) -> int:
        return 1 + (self.ne is not None) + 2 * bool(self.data)


def _short_ne(le: int) -> int:
    return le or SHORT_MAX_NE


def _extended_ne(b1: int, b2: int) -> int:
    return ((b1 << 8) | b2) or EXTENDED_MAX_NE


def parse_command(raw: bytes) -> CommandApdu:
    """Parse a command APDU; raises CardError(6700) when its length fields do not add up."""
    n = len(raw)
    if n < 4:
        raise CardError(SW_WRONG_LENGTH, "shorter than a header")
    cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
    if n == 4:
        return CommandApdu(cla, ins, p1, p2)
    if n == 5:
        return CommandApdu(cla, ins, p1, p2, ne=_short_ne(raw[4]))
    if raw[4] != 0:  # short Lc
        lc = raw[4]
        if n == 5 + lc:
            return CommandApdu(cla, ins, p1, p2, data=bytes(raw[5:]))
        if n == 6 + lc:
            return CommandApdu(cla, ins, p1, p2, data=bytes(raw[5:5 + lc]), ne=_short_ne(raw[-1]))
        raise CardError(SW_WRONG_LENGTH, "short Lc does not match the APDU length")
    # Extended length: a zero byte, then two length bytes.
    if n == 7:
        return CommandApdu(cla, ins, p1, p2, ne=_extended_ne(raw[5], raw[6]), extended=True)
    if n < 7:
        raise CardError(SW_WRONG_LENGTH, "truncated extended length")
    lc = (raw[5] << 8) | raw[6]
    if lc == 0:
        raise CardError(SW_WRONG_LENGTH, "extended Lc of zero")
    if n == 7 + lc:
        return CommandApdu(cla, ins, p1, p2, data=bytes(raw[7:]), extended=True)
    if n == 9 + lc:
        return CommandApdu(cla, ins, p1, p2, data=bytes(raw[7:7 + lc]),
                           ne=_extended_ne(raw[-2], raw[-1]), extended=True)
    raise CardError(SW_WRONG_LENGTH, "extended Lc does not match the APDU length")
