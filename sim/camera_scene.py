"""What the subject presenter shows: a scene rendered from face photos, lighting and a condition.

Rendered once per change of what is shown (the presenter re-sends it with a fresh frame
counter each tick), so the cost of compositing and of the condition does not recur per frame.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from harness.biometrics import conditions
from harness.biometrics.conditions import Box
from harness.facedata import Identity
from sim import attacks

log = logging.getLogger(__name__)

WIDTH_PX, HEIGHT_PX = 640, 480
MODES = ("subject", "noface", "attack", "blank")
CONDITIONS = conditions.NAMES
NEUTRAL_CCT_K = 5000.0  # the camera is white-balanced for the rig's default light
REFERENCE_LUX = 500.0


class SceneError(ValueError):
    """A request for something the presenter cannot show (unknown subject, bad value)."""


@dataclass(frozen=True)
class Display:
    mode: str = "blank"
    subject: str | None = None
    condition: str = "nominal"
    image: int | None = None  # index into the identity's photos
    carer: str | None = None
    species: str = "print"  # attack instrument (sim/attacks.py SPECIES), mode attack only


@dataclass(frozen=True)
class Light:
    lux: float = REFERENCE_LUX
    cct_k: float = 5000.0
    backlight_lux: float = 0.0


def apply_condition(image_bgr: np.ndarray, name: str, seed: int, face_box: Box | None) -> np.ndarray:
    """The face-matching work's capture conditions, applied to the whole scene."""
    return conditions.apply(image_bgr, name, seed=seed, face_box=face_box)


def _photo_face_box(w: int, h: int, x0: float, y0: float, scale: float) -> Box:
    """Where the face sits in the scene, for a portrait photo of w x h pasted at (x0, y0) scaled."""
    bx0, by0, bx1, by1 = conditions.default_face_box(w, h)
    return (x0 + bx0 * scale, y0 + by0 * scale, x0 + bx1 * scale, y0 + by1 * scale)


def _background() -> np.ndarray:
    """A plain wall with a soft gradient: what a reader's camera sees behind a user."""
    y = np.linspace(0.0, 1.0, HEIGHT_PX, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, WIDTH_PX, dtype=np.float32)[None, :]
    base = 150 - 40 * y - 15 * x ** 2
    bgr = np.stack([base + 12, base + 4, base - 6], axis=2)
    return np.clip(bgr, 0, 255).astype(np.uint8)


def _ellipse_alpha(h: int, w: int, feather_px: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (int(w * 0.40), int(h * 0.48)), 0, 0, 360, 255, -1)
    k = feather_px * 2 + 1
    return cv2.GaussianBlur(mask, (k, k), 0).astype(np.float32) / 255.0


class SceneRenderer:
    def __init__(self, identities: list[Identity]):
        self.identities = {i.name: i for i in identities}
        self.background = _background()

    # -- inputs ---------------------------------------------------------------------------
    def validate(self, d: Display) -> None:
        if d.mode not in MODES:
            raise SceneError(f"mode must be one of {', '.join(MODES)}")
        if d.mode in ("subject", "attack"):
            if not d.subject:
                raise SceneError(f"mode {d.mode} needs an id")
            self.photo_path(d.subject, d.image, for_attack=d.mode == "attack")
        if d.mode == "attack" and d.species not in attacks.SPECIES:
            raise SceneError(f"species must be one of {', '.join(attacks.SPECIES)}")
        if d.condition not in CONDITIONS:
            raise SceneError(f"condition must be one of {', '.join(CONDITIONS)}")
        if d.carer is not None:
            self.photo_path(d.carer, None, for_attack=False)

    def photo_path(self, subject: str, image: int | None, for_attack: bool) -> Path:
        ident = self.identities.get(subject)
        if ident is None:
            raise SceneError(f"unknown subject id {subject!r} (not in the face dataset)")
        if image is None:
            # The card holds photo 0; a live presentation uses another photo when there is one.
            image = 0 if for_attack or len(ident.images) < 2 else 1
        if not 0 <= image < len(ident.images):
            raise SceneError(f"subject {subject!r} has {len(ident.images)} photo(s); image {image} is out of range")
        return ident.images[image]

    # -- rendering ------------------------------------------------------------------------
    def render(self, d: Display, light: Light) -> np.ndarray:
        if d.mode == "blank":
            return np.zeros((HEIGHT_PX, WIDTH_PX, 3), np.uint8)
        scene = self.background.astype(np.float32)
        fg = np.zeros((HEIGHT_PX, WIDTH_PX), np.float32)
        box = None
        if d.mode == "subject":
            if d.carer:
                self._paste_face(scene, fg, self.photo_path(d.carer, None, False), centre=(505, 270), size_px=230)
            box = self._paste_face(scene, fg, self.photo_path(d.subject, d.image, False), centre=(300, 250),
                                   size_px=330)
        elif d.mode == "attack" and d.species == "print":
            box = self._paste_print(scene, fg, self.photo_path(d.subject, d.image, True))
        elif d.mode == "attack":
            box = self._paste_instrument(scene, fg, self.photo_path(d.subject, d.image, True), d)
        out = _light(scene, fg, light)
        if d.condition != "nominal" and d.mode != "noface":
            out = apply_condition(out, d.condition, seed=_seed(d), face_box=box)
            if out.shape[:2] != (HEIGHT_PX, WIDTH_PX):
                out = cv2.resize(out, (WIDTH_PX, HEIGHT_PX))
            if out.ndim == 2:
                out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(out, dtype=np.uint8)

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise SceneError(f"cannot read face photo {path.name}")
        return img

    def _paste_face(self, scene: np.ndarray, fg: np.ndarray, path: Path, centre: tuple[int, int],
                    size_px: int) -> Box:
        img = self._load(path)
        h, w = img.shape[:2]
        scale = size_px / max(h, w)
        img = cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_CUBIC)
        alpha = _ellipse_alpha(img.shape[0], img.shape[1], feather_px=max(3, img.shape[1] // 14))
        _blend(scene, fg, img.astype(np.float32), alpha, centre)
        return _photo_face_box(w, h, centre[0] - img.shape[1] // 2, centre[1] - img.shape[0] // 2, scale)

    def _paste_print(self, scene: np.ndarray, fg: np.ndarray, path: Path) -> Box:
        """A greyscale print of the card photo on paper: flat, low contrast, white border, slightly turned."""
        grey = cv2.cvtColor(self._load(path), cv2.COLOR_BGR2GRAY)
        h, w = grey.shape[:2]
        scale = 210 / h
        grey = cv2.resize(grey, (int(w * scale), 210), interpolation=cv2.INTER_AREA).astype(np.float32)
        grey = 40 + grey * 0.75  # printed ink never reaches black, paper never pure white
        border = 18
        paper = np.full((grey.shape[0] + 2 * border, grey.shape[1] + 2 * border), 236, np.float32)
        paper[border:-border, border:-border] = grey
        paper_bgr = cv2.cvtColor(paper.astype(np.uint8), cv2.COLOR_GRAY2BGR).astype(np.float32)
        ph, pw = paper.shape
        rot = cv2.getRotationMatrix2D((pw / 2, ph / 2), 4.0, 1.0)
        cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
        nw, nh = int(ph * sin + pw * cos) + 2, int(ph * cos + pw * sin) + 2
        rot[0, 2] += nw / 2 - pw / 2
        rot[1, 2] += nh / 2 - ph / 2
        warped = cv2.warpAffine(paper_bgr, rot, (nw, nh), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(np.ones((ph, pw), np.float32), rot, (nw, nh), flags=cv2.INTER_LINEAR)
        centre = (WIDTH_PX // 2, HEIGHT_PX // 2 + 10)
        _blend(scene, fg, warped, alpha, centre)
        # the photo inside the (slightly turned) print; the 4 degree turn is ignored for the box
        return _photo_face_box(w, h, centre[0] - pw / 2 + border, centre[1] - ph / 2 + border, scale)


    def _paste_instrument(self, scene: np.ndarray, fg: np.ndarray, path: Path, d: Display) -> Box:
        """An attack instrument of sim/attacks.py (phone screen, cut-out print) held before the camera."""
        photo = self._load(path)
        sprite = attacks.screen_replay(photo, seed=_seed(d)) if d.species == "screen" else attacks.cutout(photo)
        sh, sw = sprite.image.shape[:2]
        centre = (WIDTH_PX // 2, HEIGHT_PX // 2 + 5)
        _blend(scene, fg, sprite.image, sprite.alpha, centre)
        ox, oy = sprite.photo_origin
        h, w = photo.shape[:2]
        return _photo_face_box(w, h, centre[0] - sw // 2 + ox, centre[1] - sh // 2 + oy, sprite.photo_scale)


def _blend(scene: np.ndarray, fg: np.ndarray, img: np.ndarray, alpha: np.ndarray, centre: tuple[int, int]) -> None:
    h, w = img.shape[:2]
    x0, y0 = centre[0] - w // 2, centre[1] - h // 2
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    dx1, dy1 = min(WIDTH_PX, x0 + w), min(HEIGHT_PX, y0 + h)
    if dx1 <= dx0 or dy1 <= dy0:
        return
    a = alpha[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]
    region = scene[dy0:dy1, dx0:dx1]
    region[:] = region * (1 - a[..., None]) + img[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0] * a[..., None]
    fg[dy0:dy1, dx0:dx1] = np.maximum(fg[dy0:dy1, dx0:dx1], a)


def _light(scene: np.ndarray, fg: np.ndarray, light: Light) -> np.ndarray:
    """Room light as the camera sees it: exposure (auto-exposure compensates in part), white
    balance from the colour temperature, and a bright light behind the subject that the camera
    exposes for, darkening the face."""
    gain = float(np.clip((light.lux / REFERENCE_LUX) ** 0.6, 0.02, 2.5))
    back = light.backlight_lux / REFERENCE_LUX
    fg_gain = gain / (1.0 + back * 0.6)
    bg_gain = gain * (1.0 + back * 0.8)
    g = fg[..., None] * fg_gain + (1.0 - fg[..., None]) * bg_gain
    t = float(np.clip((light.cct_k - NEUTRAL_CCT_K) / 4000.0, -1.0, 1.0))
    wb = np.array([1.0 + 0.3 * t, 1.0, 1.0 - 0.3 * t], np.float32)  # B, G, R: warm light is red, cool is blue
    return np.clip(scene * g * wb, 0, 255).astype(np.uint8)


def _seed(d: Display) -> int:
    key = f"{d.mode}|{d.subject}|{d.image}|{d.condition}|{d.carer}".encode()
    if d.mode == "attack" and d.species != "print":  # prints keep the seeds they always had
        key += f"|{d.species}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")
