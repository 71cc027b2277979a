"""Images stored in the card-surface AP: the face photo (greyscale JPEG 2000) and small PNG
renderings of the printed name, address and security code.

Card-photo size: 240 x 300 px (4:5, the printed photo's aspect), greyscale, JPEG 2000
codestream in a JP2 box at roughly 20:1, a few kilobytes like the chip's photo. The source
photo is centre-cropped to 4:5; no face detection, so a dataset whose faces are centred
(LFW, ORL) gives card-like portraits.
"""

from __future__ import annotations

import io
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


def text_png(text: str, fallback: str = "", height_px: int = 40) -> bytes:
    """A black-on-white line of text as a greyscale PNG, like the printed card face.

    Without a CJK font installed, Japanese text would be boxes: then ``fallback`` (the
    romanised text) is drawn instead.
    """
    font, cjk = _font(text, int(height_px * 0.7))
    if not cjk and not text.isascii():
        text = fallback or text.encode("ascii", "replace").decode()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    img = Image.new("L", (max(1, right - left + 8), height_px), 255)
    ImageDraw.Draw(img).text((4 - left, (height_px - (bottom - top)) // 2 - top), text, font=font, fill=0)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()
