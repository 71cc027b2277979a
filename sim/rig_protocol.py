"""Rig controller line protocol, firmware side: framing of requests, replies and events.

Written independently of ``drivers/rig.py`` (as a real controller's firmware would be), so the
tests that run one against the other check the byte-exact format of hardware.md rather than
one implementation against itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PROTOCOL_VERSION = "1.0"
MAX_LINE_BYTES = 512  # including the LF
_SEQ_RE = re.compile(r"^[0-9]{1,5}$")
_VERB_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


class FrameError(ValueError):
    """A request line that cannot be understood. ``code`` is the NAK code to send back."""

    def __init__(self, code: str, detail: str, seq: int = 0):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.seq = seq


def checksum(body: bytes) -> str:
    """XOR of every byte of the body, as two uppercase hex digits."""
    x = 0
    for b in body:
        x ^= b
    return f"{x:02X}"


def frame(body: str) -> bytes:
    raw = body.encode("ascii")
    return raw + b"*" + checksum(raw).encode("ascii") + b"\n"


@dataclass(frozen=True)
class Request:
    seq: int
    verb: str
    words: tuple[str, ...] = ()
    kwargs: dict[str, str] = field(default_factory=dict)
    body: str = ""


def parse_request(line: bytes) -> Request:
    """Parse one request line (without its LF). Raises FrameError with the NAK code."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if any(b < 0x20 or b > 0x7E for b in line):
        raise FrameError("E_FRAME", "non-printable byte in line")
    text = line.decode("ascii")
    body = text
    star = text.rfind("*")
    if star >= 0 and len(text) - star == 3:
        body, cs = text[:star], text[star + 1:]
        if not re.fullmatch(r"[0-9A-F]{2}", cs):
            raise FrameError("E_FRAME", "checksum must be two uppercase hex digits", _seq_of(body))
        if checksum(body.encode("ascii")) != cs:
            raise FrameError("E_CHECKSUM", f"expected {checksum(body.encode('ascii'))}", _seq_of(body))
    fields = body.split(" ")
    if len(fields) < 2 or not _SEQ_RE.match(fields[0]) or not 1 <= int(fields[0]) <= 65535:
        raise FrameError("E_FRAME", "expected '<seq 1..65535> <VERB> ...'")
    seq = int(fields[0])
    verb = fields[1]
    if not _VERB_RE.match(verb):
        raise FrameError("E_FRAME", "verb must be uppercase letters", seq)
    words: list[str] = []
    kwargs: dict[str, str] = {}
    for f in fields[2:]:
        if f == "":
            raise FrameError("E_FRAME", "fields are separated by exactly one space", seq)
        if "=" in f:
            k, _, v = f.partition("=")
            if not k or not v or k in kwargs:
                raise FrameError("E_ARG", f"bad or repeated argument {f!r}", seq)
            kwargs[k] = v
        elif kwargs:
            raise FrameError("E_ARG", f"word {f!r} after key=value arguments", seq)
        else:
            words.append(f)
    return Request(seq=seq, verb=verb, words=tuple(words), kwargs=kwargs, body=body)


def _seq_of(body: str) -> int:
    head = body.split(" ", 1)[0]
    return int(head) if _SEQ_RE.match(head) and 1 <= int(head) <= 65535 else 0


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        # decimal, at most two places, no trailing zeros: 0, 12.5, 0.25, -3
        text = f"{value:.2f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    if value is None:
        return "-"
    return str(value)


def ack(seq: int, **values) -> bytes:
    parts = [str(seq), "ACK"] + [f"{k}={_fmt(v)}" for k, v in values.items()]
    return frame(" ".join(parts))


def nak(seq: int, code: str, detail: str) -> bytes:
    detail = "".join(c if 0x20 <= ord(c) <= 0x7E and c != "*" else "?" for c in detail)[:120]
    return frame(f"{seq} NAK {code} {detail}".rstrip())


def event(name: str, **values) -> bytes:
    return frame(" ".join(["!", name] + [f"{k}={_fmt(v)}" for k, v in values.items()]))
