"""Images stored in the card-surface AP: the face photo (greyscale JPEG 2000) and small PNG
renderings of the printed name, address and security code; and the printed front of the card
(``card_face_png``), with the amendment field (追記欄).

Japanese text needs a CJK font (Debian fonts-noto-cjk, installed by the Makefile). Without one
the chip's name and address images fall back to romaji and ``card_face_png`` refuses: a card
face with boxes for kanji would only look drawn.

Card-photo size: 240 x 300 px (4:5, the printed photo's aspect), greyscale, JPEG 2000
codestream in a JP2 box at roughly 20:1, a few kilobytes like the chip's photo. The source
photo is centre-cropped to 4:5; no face detection, so a dataset whose faces are centred
(LFW, ORL) gives card-like portraits.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

PHOTO_SIZE_PX = (240, 300)  # width, height
JP2_COMPRESSION_X1000 = 50  # OpenCV: target compression ratio x1000 (50 -> ~1:20)
_CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
)
_LATIN_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf")


log = logging.getLogger(__name__)
CARD_FACE_PX_PER_MM = 10
CARD_FACE_SIZE_PX = (856, 540)  # ID-1 card, 85.6 x 54.0 mm
AMENDMENT_BOX_PX = (24, 440, 600, 520)  # x0, y0, x1, y1 of the amendment field on the front


class ImageError(ValueError):
    """A face photo could not be read or encoded."""


def face_photo_jp2(source: Path | np.ndarray) -> bytes:
    """A card photo from an image file or a BGR/greyscale array."""
    if isinstance(source, np.ndarray):
        img = source
    else:
        img = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ImageError(f"cannot read face image {source}")
    grey = img if img.ndim == 2 else cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    target_w, target_h = PHOTO_SIZE_PX
    # Centre crop to the photo's 4:5 aspect, then scale.
    if w * target_h > h * target_w:
        crop_w = h * target_w // target_h
        x0 = (w - crop_w) // 2
        grey = grey[:, x0:x0 + crop_w]
    else:
        crop_h = w * target_h // target_w
        y0 = (h - crop_h) // 2
        grey = grey[y0:y0 + crop_h, :]
    grey = cv2.resize(grey, PHOTO_SIZE_PX, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jp2", grey, [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, JP2_COMPRESSION_X1000])
    if not ok:
        raise ImageError("OpenCV could not encode JPEG 2000")
    return buf.tobytes()


def _font(text: str, size: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, bool]:
    """A font and whether it can draw non-Latin text."""
    for path in _CJK_FONTS:
        if Path(path).exists():
            return ImageFont.truetype(path, size), True
    for path in _LATIN_FONTS:
        if Path(path).exists():
            return ImageFont.truetype(path, size), False
    return ImageFont.load_default(), False


def cjk_font_path() -> Path | None:
    """The first installed CJK font, or None."""
    return next((Path(p) for p in _CJK_FONTS if Path(p).exists()), None)


def text_png(text: str, fallback: str = "", height_px: int = 40) -> bytes:
    """A black-on-white line of text as a greyscale PNG, like the printed card face.

    Without a CJK font installed, Japanese text would be boxes: then ``fallback`` (the
    romanised text) is drawn instead.
    """
    font, cjk = _font(text, int(height_px * 0.7))
    if not cjk and not text.isascii():
        log.warning("no CJK font installed (Debian fonts-noto-cjk): drawing %r in romaji", fallback)
        text = fallback or text.encode("ascii", "replace").decode()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    img = Image.new("L", (max(1, right - left + 8), height_px), 255)
    ImageDraw.Draw(img).text((4 - left, (height_px - (bottom - top)) // 2 - top), text, font=font, fill=0)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _photo(face_jp2: bytes | None, size: tuple[int, int]) -> Image.Image | None:
    if not face_jp2:
        return None
    grey = cv2.imdecode(np.frombuffer(face_jp2, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ImageError("the card photo (JPEG 2000) cannot be decoded")
    return Image.fromarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA))


def card_face_png(*, name: str, address: str, birth: str, sex: str, expiry: str, security_code: str,
                  amendments: Sequence[tuple[str, bool]], face_jp2: bytes | None = None) -> bytes:
    """The printed front of a My Number Card, greyscale, 10 px/mm.

    ``amendments``: the amendment field's entries (text, struck), oldest first; a struck entry
    is crossed out with a double line, as municipalities correct a card face.
    """
    path = cjk_font_path()
    if path is None:
        raise ImageError("no CJK font installed (Debian fonts-noto-cjk): cannot draw a Japanese card face")
    w, h = CARD_FACE_SIZE_PX
    img = Image.new("L", (w, h), 250)
    d = ImageDraw.Draw(img)
    small, body, big = (ImageFont.truetype(str(path), s) for s in (18, 26, 34))
    d.rounded_rectangle((2, 2, w - 3, h - 3), radius=30, outline=120, width=3)
    d.text((24, 20), "個人番号カード", font=body, fill=30)
    rows = [("氏名", name, big, 70), ("住所", address, body, 140), ("生年月日", birth, body, 230),
            ("性別", sex, body, 280), ("有効期限", expiry, body, 330)]
    for label, value, font, y in rows:
        d.text((24, y + 6), label, font=small, fill=90)
        d.text((120, y), value, font=font, fill=10)
    d.text((600, 400), "セキュリティコード", font=small, fill=90)
    d.text((640, 425), security_code, font=big, fill=10)
    photo = _photo(face_jp2, (192, 240))
    x0, y0 = w - 24 - 192, 100
    if photo is not None:
        img.paste(photo, (x0, y0))
    d.rectangle((x0 - 1, y0 - 1, x0 + 192, y0 + 240), outline=120)
    ax0, ay0, ax1, ay1 = AMENDMENT_BOX_PX
    d.rectangle((ax0, ay0, ax1, ay1), outline=120)
    d.text((ax0 + 8, ay0 + 4), "追記欄", font=small, fill=90)
    x = ax0 + 110
    for text, struck in amendments:
        left, top, right, bottom = d.textbbox((x, ay0 + 22), text, font=body)
        d.text((x, ay0 + 22), text, font=body, fill=10)
        if struck:  # 二重線: two lines through the middle of the text
            mid = (top + bottom) // 2
            for dy in (-4, 4):
                d.line((left - 4, mid + dy, right + 4, mid + dy), fill=10, width=2)
        x = right + 24
    return _png(img)
