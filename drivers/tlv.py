"""BER-TLV as the My Number Card's EFs use it (FF 20 { DF 21 ... }, FF 10 0C ...).

Decoding is one level at a time: the card's templates (FF10, FF20) are not always
constructed in the BER sense (FF 10 holds 12 ASCII digits), so the caller says where to
descend. Trailing 00 / FF padding after the last object (fixed-size EFs) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass


class TlvError(ValueError):
    """Bytes that are not a well-formed TLV."""


@dataclass(frozen=True)
class Tlv:
    tag: int  # all tag bytes as one integer, e.g. 0xFF20, 0xDF21, 0x30
    value: bytes
    header_len: int  # tag + length bytes

    @property
    def size(self) -> int:
        return self.header_len + len(self.value)

    def children(self) -> list["Tlv"]:
        return decode(self.value)

    def child(self, tag: int) -> "Tlv | None":
        return find(self.value, tag)

    def __repr__(self) -> str:  # values may be personal data: show sizes only
        return f"Tlv(tag={self.tag:X}, {len(self.value)} bytes)"


def read_header(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """(tag, value length, header length) of the TLV at ``offset``."""
    i = offset
    if i >= len(data):
        raise TlvError("no tag: data ended")
    first = data[i]
    tag = first
    i += 1
    if first & 0x1F == 0x1F:  # multi-byte tag: subsequent bytes while bit 8 is set
        while True:
            if i >= len(data):
                raise TlvError("tag runs past the end of the data")
            b = data[i]
            tag = (tag << 8) | b
            i += 1
            if not b & 0x80:
                break
            if i - offset > 4:
                raise TlvError("tag longer than 4 bytes")
    if i >= len(data):
        raise TlvError(f"tag {tag:X} has no length")
    b = data[i]
    i += 1
    if b < 0x80:
        length = b
    elif b == 0x80:
        raise TlvError(f"tag {tag:X}: indefinite length is not used on this card")
    else:
        n = b & 0x7F
        if n > 4 or i + n > len(data):
            raise TlvError(f"tag {tag:X}: bad length field")
        length = int.from_bytes(data[i:i + n], "big")
        i += n
    return tag, length, i - offset


def total_size(header: bytes) -> int:
    """Size in bytes of the whole TLV (header + value) that ``header`` starts; e.g. a DER
    certificate from its first 4 bytes ``30 82 LL LL``."""
    _tag, length, hlen = read_header(header)
    return hlen + length


def decode(data: bytes) -> list[Tlv]:
    """The TLV objects at one level of ``data``."""
    data = bytes(data)
    out: list[Tlv] = []
    i = 0
    while i < len(data):
        if all(b in (0x00, 0xFF) for b in data[i:]):
            break  # padding of a fixed-size EF
        tag, length, hlen = read_header(data, i)
        end = i + hlen + length
        if end > len(data):
            raise TlvError(f"tag {tag:X}: {length} value bytes announced, {len(data) - i - hlen} present")
        out.append(Tlv(tag, data[i + hlen:end], hlen))
        i = end
    return out


def find(data: bytes, tag: int) -> Tlv | None:
    """The first object with ``tag`` at one level of ``data``."""
    for obj in decode(data):
        if obj.tag == tag:
            return obj
    return None


def encode(tag: int, value: bytes) -> bytes:
    """One TLV with a minimal BER length (for tests and tools)."""
    tag_bytes = tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")
    n = len(value)
    if n < 0x80:
        length = bytes((n,))
    else:
        body = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes((0x80 | len(body),)) + body
    return tag_bytes + length + bytes(value)
