"""BER-TLV encoding as the My Number Card's data files use it (card side only).

The card's records use two-byte private tags (``FF 20``, ``DF 22`` ...) with definite BER
lengths (1 byte up to 127, ``81 xx``, ``82 xx xx``). The TLV coding itself is drivers.tlv's.
"""

from __future__ import annotations

from drivers.tlv import encode


# One TLV with a minimal BER length: the same encoding the host drivers use.
tlv = encode


def record_with_offsets(outer_tag: int, offsets_tag: int, items: list[tuple[int, bytes]]) -> bytes:
    """``outer { offsets, item... }`` where offsets holds, for each item, the 2-byte offset of
    its tag from the start of the file (our reading of the card's DF21 index)."""
    bodies = [tlv(t, v) for t, v in items]
    offsets_len = 2 * len(items)
    offsets_tlv_len = len(tlv(offsets_tag, bytes(offsets_len)))
    inner_len = offsets_tlv_len + sum(len(b) for b in bodies)
    header_len = len(tlv(outer_tag, bytes(inner_len))) - inner_len
    pos = header_len + offsets_tlv_len
    offsets = b""
    for body in bodies:
        offsets += pos.to_bytes(2, "big")
        pos += len(body)
    return tlv(outer_tag, tlv(offsets_tag, offsets) + b"".join(bodies))
