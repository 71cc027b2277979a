"""Size and format of an image from its header alone (JPEG 2000 JP2/J2K, PNG, JPEG).

The card's face photo is biometric data: tools describe it ("JPEG 2000, 90x120 greyscale,
4.1 KB") without decoding or showing it.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

JP2_SIGNATURE = bytes.fromhex("0000000C6A5020200D0A870A")
J2K_SOC_SIZ = bytes.fromhex("FF4FFF51")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "JPEG 2000 (JP2)", "JPEG 2000 (J2K)", "PNG", "JPEG", "unknown"
    size_bytes: int
    width: int | None = None
    height: int | None = None
    components: int | None = None
    bits_per_component: int | None = None
    colour: str = ""  # "greyscale", "sRGB", "sYCC", "RGB", ... when the header says

    def describe(self) -> str:
        parts = [self.format]
        if self.width and self.height:
            dims = f"{self.width}x{self.height}"
            if self.colour:
                dims += f" {self.colour}"
            parts.append(dims)
        parts.append(_human_size(self.size_bytes))
        return ", ".join(parts)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["description"] = self.describe()
        return d


def _human_size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB"


def _colour_from_components(nc: int | None) -> str:
    return {1: "greyscale", 3: "colour", 4: "colour+alpha"}.get(nc or 0, "")


def _jp2(data: bytes) -> ImageInfo:
    info: dict = {}
    i = 0
    stack_end = [len(data)]
    while i + 8 <= len(data):
        lbox, tbox = struct.unpack(">I4s", data[i:i + 8])
        hlen = 8
        if lbox == 1:
            if i + 16 > len(data):
                break
            lbox = struct.unpack(">Q", data[i + 8:i + 16])[0]
            hlen = 16
        elif lbox == 0:
            lbox = stack_end[-1] - i
        if lbox < hlen:
            break
        body = data[i + hlen:i + lbox]
        if tbox == b"jp2h":  # superbox: descend
            stack_end.append(i + lbox)
            i += hlen
            continue
        if tbox == b"ihdr" and len(body) >= 11:
            h, w, nc, bpc = struct.unpack(">IIHB", body[:11])
            info.update(width=w, height=h, components=nc, bits_per_component=(bpc & 0x7F) + 1)
        elif tbox == b"colr" and len(body) >= 7 and body[0] == 1:
            enum = struct.unpack(">I", body[3:7])[0]
            info["colour"] = {16: "sRGB", 17: "greyscale", 18: "sYCC"}.get(enum, f"colourspace {enum}")
        elif tbox == b"jp2c":
            break
        i += lbox
    info.setdefault("colour", _colour_from_components(info.get("components")))
    return ImageInfo("JPEG 2000 (JP2)", len(data), **info)


def _j2k(data: bytes) -> ImageInfo:
    # SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz {Ssiz XRsiz YRsiz}
    if len(data) < 4 + 38 + 3:
        return ImageInfo("JPEG 2000 (J2K)", len(data))
    _l, _r, xs, ys, xo, yo, _xt, _yt, _xto, _yto, nc = struct.unpack(">HHIIIIIIIIH", data[4:42])
    bpc = (data[42] & 0x7F) + 1
    return ImageInfo("JPEG 2000 (J2K)", len(data), xs - xo, ys - yo, nc, bpc, _colour_from_components(nc))


def _png(data: bytes) -> ImageInfo:
    if len(data) < 26 or data[12:16] != b"IHDR":
        return ImageInfo("PNG", len(data))
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    colour = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}.get(ctype, "")
    nc = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    return ImageInfo("PNG", len(data), w, h, nc, depth, colour)


def _jpeg(data: bytes) -> ImageInfo:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        seglen = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 10 <= len(data):
            bpc, h, w, nc = struct.unpack(">BHHB", data[i + 4:i + 10])
            return ImageInfo("JPEG", len(data), w, h, nc, bpc, _colour_from_components(nc))
        i += 2 + seglen
    return ImageInfo("JPEG", len(data))


def image_info(data: bytes) -> ImageInfo:
    """Describe an image from its header; never decodes the pixels."""
    data = bytes(data)
    try:
        if data.startswith(JP2_SIGNATURE):
            return _jp2(data)
        if data.startswith(J2K_SOC_SIZ):
            return _j2k(data)
        if data.startswith(PNG_SIGNATURE):
            return _png(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
    except struct.error:
        pass
    return ImageInfo("unknown", len(data))
