"""Capture conditions: deterministic, same size, input untouched, each changes what it should."""

from __future__ import annotations

import numpy as np
import pytest

from harness.biometrics import conditions


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(7)
    img = rng.integers(60, 200, size=(480, 640, 3), dtype=np.uint8)
    img[:, :, 2] = np.clip(img[:, :, 2].astype(int) + 30, 0, 255)  # some colour
    return img


def test_names_match_the_contract():
    assert conditions.NAMES == ("nominal", "low_light", "backlight", "motion_blur", "jpeg", "jpeg2000",
                                "card_greyscale", "mask", "glasses")


@pytest.mark.parametrize("name", conditions.NAMES)
def test_condition_is_deterministic_and_keeps_shape(frame, name):
    before = frame.copy()
    a = conditions.apply(frame, name, seed=3)
    b = conditions.apply(frame, name, seed=3)
    assert a.shape == frame.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.array_equal(frame, before)  # input not modified
    if name != "nominal":
        assert not np.array_equal(a, frame)


def test_seed_varies_the_random_conditions(frame):
    assert not np.array_equal(conditions.apply(frame, "low_light", seed=0), conditions.apply(frame, "low_light", seed=1))


def test_low_light_darkens_and_backlight_darkens_the_face_only(frame):
    assert conditions.apply(frame, "low_light").mean() < frame.mean() * 0.4
    box = (220, 140, 420, 340)
    out = conditions.apply(frame, "backlight", face_box=box).astype(float)
    face = (slice(200, 280), slice(280, 360))
    assert out[face].mean() < frame[face].mean() * 0.5
    assert out[:40, :40].mean() > frame[:40, :40].mean()


def test_card_greyscale_has_no_colour(frame):
    out = conditions.apply(frame, "card_greyscale")
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2])


def test_mask_covers_the_lower_face_and_glasses_the_eyes(frame):
    box = (220, 140, 420, 340)
    masked = conditions.apply(frame, "mask", face_box=box)
    changed = np.any(masked != frame, axis=2)
    assert changed[280:330, 280:360].mean() > 0.9  # mouth and chin
    assert changed[150:190, 260:380].mean() < 0.05  # eyes and brows stay visible
    glassed = conditions.apply(frame, "glasses", face_box=box)
    changed = np.any(glassed != frame, axis=2)
    assert changed[195:215, 270:300].mean() > 0.9  # around the left eye (31% of box height)
    assert changed[300:340, 260:380].mean() == 0.0  # mouth untouched


def test_motion_blur_smooths_horizontally(frame):
    out = conditions.apply(frame, "motion_blur").astype(float)
    assert np.abs(np.diff(out, axis=1)).mean() < 0.5 * np.abs(np.diff(frame.astype(float), axis=1)).mean()


def test_bad_arguments_are_clear_errors(frame):
    with pytest.raises(ValueError, match="unknown condition"):
        conditions.apply(frame, "fog")
    with pytest.raises(ValueError, match="BGR"):
        conditions.apply(frame[:, :, 0], "nominal")
