"""Image decoding and normalisation: bad input is an ImageError with a reason, never a crash."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from harness.biometrics import images


def test_garbage_and_empty_bytes_are_unreadable(tmp_path):
    for data in (b"not an image at all", b"\xff\xd8\xff\xe0truncated jpeg"):
        with pytest.raises(images.ImageError) as err:
            images.decode(data)
        assert err.value.reason == "unreadable"
    with pytest.raises(images.ImageError, match="unreadable"):
        images.decode(b"")
    with pytest.raises(images.ImageError, match="unreadable"):
        images.load(tmp_path / "missing.jpg")


def test_huge_image_is_refused_from_its_header():
    # a PGM header promising 10000 x 10000 px: refused before any pixel is decoded
    with pytest.raises(images.ImageError) as err:
        images.decode(b"P5\n10000 10000\n255\n" + b"\0" * 16)
    assert err.value.reason == "too_large"


def test_large_image_is_downscaled():
    d = images.normalise(np.zeros((3000, 4000, 3), np.uint8))
    assert max(d.bgr.shape[:2]) == images.MAX_SIDE_PX
    assert d.original_size == (4000, 3000) and d.scale == pytest.approx(images.MAX_SIDE_PX / 4000)


def test_greyscale_rgba_and_16_bit_are_converted():
    grey = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    d = images.normalise(grey)
    assert d.bgr.shape == (64, 64, 3) and d.was_grey
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 2] = 200
    d = images.normalise(rgba)
    assert d.bgr.shape == (32, 32, 3) and d.bgr[0, 0, 2] == 200 and not d.was_grey
    deep = np.full((32, 32, 3), 65535, np.uint16)
    assert images.normalise(deep).bgr.max() == 255
    ok, png16 = cv2.imencode(".png", (grey.astype(np.uint16) * 257))
    d = images.decode(png16.tobytes())
    assert d.bgr.dtype == np.uint8 and d.was_grey and d.bgr[0, 63, 0] == 63


def test_jpeg2000_greyscale_card_photo_decodes():
    grey = np.tile(np.arange(0, 225, dtype=np.uint8)[:, None], (1, 180))
    ok, jp2 = cv2.imencode(".jp2", grey)
    d = images.decode(jp2.tobytes())
    assert d.bgr.shape == (225, 180, 3) and d.was_grey


@pytest.mark.parametrize("arr", [np.zeros((4, 4, 3), np.uint8), np.zeros((32, 32, 2), np.uint8),
                                 np.zeros((32, 32, 3), np.complex64), np.zeros((2, 2, 2, 2), np.uint8)])
def test_unusable_arrays_are_unsupported(arr):
    with pytest.raises(images.ImageError) as err:
        images.normalise(arr)
    assert err.value.reason == "unsupported"
