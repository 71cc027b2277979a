"""Seeing a reader's touch screen through a camera (issue 13): capture, calibration, recognition.

* :class:`FrameGrabber` keeps the newest frame of any source ``cv2.VideoCapture`` opens (a
  device index, a file, an MJPEG URL), stamped with the host's monotonic clock on arrival.
* :func:`calibrate_bezel` finds the four ArUco markers on the fixture bezel and fits the
  homography camera -> panel pixels; its reprojection error is reported and held to a limit.
* :func:`fit_finger` fits fixture millimetres -> panel pixels from taps seen through the camera.
* :class:`ScreenRecognizer` names the screen shown: Tesseract ``jpn`` (kept loaded, through
  tesserocr) reads the panel, a closed vocabulary (the screen map's key phrases and button
  labels) scores every known screen, a template match against the reference frame confirms the
  winner, and a small margin over the runner-up means "ambiguous, wait", never "found".
* :class:`StableScreen` turns per-frame verdicts into shown screens: a screen counts only when
  it is the same over consecutive frames; its time is the capture time of its first frame.
"""

from __future__ import annotations

import logging
import threading
import time
import tomllib
import unicodedata
from collections import deque
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from drivers.reader import ReaderError

log = logging.getLogger(__name__)

TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata")
OCR_SCALE = 0.6  # the panel is read at 480x288: large text stays legible, Tesseract runs ~2x faster
BUTTON_OCR_SCALE = 0.8  # a label alone in its crop: larger reads better through a camera
BUTTON_MIN_CONTRAST = 40  # grey levels a button face is below the page (a moiré stripe through glare: ~20)
PHRASE_MIN_SIMILARITY = 0.8  # a key phrase counts as read when this much of it matches
PHRASE_SHADOW_SIMILARITY = 0.6  # ... and is read in part at this much: enough to explain a fuzzy phrase inside it
SHADOW_MARGIN = 0.05  # ... if read this much better than the phrase inside it alone would make it look
LABEL_MIN_SIMILARITY = 0.7  # a button's own crop: one misread glyph in four still finds its label
FOUND_MIN_SCORE = 0.75
FOUND_MIN_MARGIN = 0.15  # best minus second-best; less is "ambiguous, wait"
TEMPLATE_MIN_NCC = 0.55  # the rectified frame against the screen's reference frame
TEMPLATE_SIZE = (160, 96)  # (w, h) the template comparison runs at: layout, not glyphs
DARK_MEAN = 18.0  # a panel this dark is off (no backlight)
REPROJECTION_LIMIT_PX = 2.0  # panel pixels, RMS over the 16 marker corners
RECENT_FRAMES = 90  # 6 s at 15 fps: longer than one OCR pass on a loaded machine
CHANGE_SIZE = (320, 192)  # (w, h) changes are looked for at: one glyph (あと2回 -> あと1回) must show
CHANGE_BLOCK = 0.2  # the panel changed: some 8x8 block of the normalised change signature moved this much
# (camera noise between frames: <= 0.02; one glyph changed: >= 0.34; glare drifting for 2 s: 0.15)


class ScreenError(ReaderError):
    """The screen cannot be seen or understood (no frames, no markers, bad map)."""


class CalibrationError(ScreenError):
    """Calibration failed or is worse than its limit."""


# ---------------------------------------------------------------------------------------------
# Capture


class FrameGrabber:
    """The newest frame of an OpenCV source, read by a background thread.

    ``latest()`` returns ``(frame_no, capture_monotonic_s, frame)``; the capture time is taken
    when the frame arrives here (the source's own clock is not trusted nor needed).
    """

    def __init__(self, source: str | int, *, open_timeout_s: float = 10.0):
        self.source = source
        self.open_timeout_s = open_timeout_s
        self._cap: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._frame_no = 0
        self._t_s = 0.0
        # the recent frames, so a watcher busy with OCR still sees every frame, with its own time
        self._recent: deque[tuple[int, float, np.ndarray]] = deque(maxlen=RECENT_FRAMES)
        self.frame_interval_s = 0.0  # measured: the mean spacing of recent frames

    def open(self) -> "FrameGrabber":
        if isinstance(self.source, str) and self.source.startswith(("http://", "https://")) \
                and self.source.endswith(".mjpg"):
            return self._open_mjpeg()
        deadline = time.monotonic() + self.open_timeout_s
        while True:
            cap = cv2.VideoCapture(self.source)
            if cap.isOpened():
                break
            cap.release()
            if time.monotonic() > deadline:
                raise ScreenError(f"screen camera {self.source!r} cannot be opened by OpenCV")
            time.sleep(0.2)
        self._cap = cap
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"screen-grab {self.source}", daemon=True)
        self._thread.start()
        self.wait_frame(0, timeout_s=self.open_timeout_s)
        return self

    def _open_mjpeg(self) -> "FrameGrabber":
        """An MJPEG stream read part by part: a part's ``X-Monotonic-S`` header (the exposure time
        on this host's clock, hardware.md 11.2) stamps its frame; without one, its arrival does.
        (OpenCV's reader hides part headers, and its queue makes arrival late when OCR is busy.)"""
        import urllib.request

        deadline = time.monotonic() + self.open_timeout_s
        while True:
            try:
                self._cap = urllib.request.urlopen(self.source, timeout=5.0)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise ScreenError(f"screen camera {self.source!r} cannot be opened: {exc}") from exc
                time.sleep(0.2)
        self._stop.clear()
        self._thread = threading.Thread(target=self._mjpeg_loop, name=f"screen-grab {self.source}", daemon=True)
        self._thread.start()
        self.wait_frame(0, timeout_s=self.open_timeout_s)
        return self

    def _mjpeg_loop(self) -> None:
        stream = self._cap
        last_s = None
        while not self._stop.is_set():
            try:
                headers: dict[str, str] = {}
                line = stream.readline()
                while line and line.strip() != b"" or not headers and line.strip().startswith(b"--"):
                    if b":" in line:
                        k, _, v = line.decode("latin-1").partition(":")
                        headers[k.strip().lower()] = v.strip()
                    line = stream.readline()
                if not line:
                    break  # the stream ended
                size = int(headers.get("content-length", "0"))
                if size <= 0:
                    continue
                data = stream.read(size)
            except (OSError, ValueError) as exc:
                log.warning("screen camera %s: stream broken: %s", self.source, exc)
                break
            now = time.monotonic()
            frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if frame is None:
                continue
            try:
                taken_s = float(headers["x-monotonic-s"])
            except (KeyError, ValueError):
                taken_s = now
            with self._cond:
                self._frame, self._t_s = frame, taken_s
                self._frame_no += 1
                self._recent.append((self._frame_no, taken_s, frame))
                if last_s is not None:
                    gap = taken_s - last_s
                    self.frame_interval_s = gap if not self.frame_interval_s else 0.9 * self.frame_interval_s + 0.1 * gap
                self._cond.notify_all()
            last_s = taken_s

    def _loop(self) -> None:
        last_s = None
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            now = time.monotonic()
            if not ok:
                time.sleep(0.02)
                continue
            with self._cond:
                self._frame, self._t_s = frame, now
                self._frame_no += 1
                self._recent.append((self._frame_no, now, frame))
                if last_s is not None:
                    gap = now - last_s
                    self.frame_interval_s = gap if not self.frame_interval_s else 0.9 * self.frame_interval_s + 0.1 * gap
                self._cond.notify_all()
            last_s = now

    def wait_frame(self, after_no: int, timeout_s: float = 5.0) -> tuple[int, float, np.ndarray]:
        """The first frame numbered above ``after_no``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._frame_no <= after_no:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ScreenError(f"no frame from screen camera {self.source!r} within {timeout_s:.1f} s")
                self._cond.wait(left)
            return self._frame_no, self._t_s, self._frame

    def frames_after(self, after_no: int, timeout_s: float = 5.0) -> list[tuple[int, float, np.ndarray]]:
        """Every frame still kept numbered above ``after_no``, oldest first (at least one)."""
        self.wait_frame(after_no, timeout_s)
        with self._cond:
            return [f for f in self._recent if f[0] > after_no]

    def latest(self) -> tuple[int, float, np.ndarray]:
        return self.wait_frame(0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._cap is not None:
            (self._cap.release if hasattr(self._cap, "release") else self._cap.close)()
            self._cap = None

    def __enter__(self) -> "FrameGrabber":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Calibration


@dataclass(frozen=True)
class Bezel:
    """The fixture's geometry (station file ``[screen]``): markers and panel in fixture mm.

    Origin: the centre of marker 0; x right, y down in the panel plane. Marker ids 0..3 sit at
    the top-left, top-right, bottom-right and bottom-left corners, printed upright.
    """

    marker_side_mm: float
    marker_centres_mm: dict[int, tuple[float, float]]
    panel_x_mm: float
    panel_y_mm: float
    pixel_pitch_mm: float
    panel_w_px: int = 800
    panel_h_px: int = 480
    aruco_dict: str = "DICT_4X4_50"

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> "Bezel":
        try:
            centres = table["marker_centres_mm"]
            ids = table.get("marker_ids", [0, 1, 2, 3])
            return cls(marker_side_mm=float(table["marker_side_mm"]),
                       marker_centres_mm={int(i): (float(c[0]), float(c[1])) for i, c in zip(ids, centres)},
                       panel_x_mm=float(table["panel_x_mm"]), panel_y_mm=float(table["panel_y_mm"]),
                       pixel_pitch_mm=float(table["pixel_pitch_mm"]),
                       panel_w_px=int(table.get("panel_w_px", 800)), panel_h_px=int(table.get("panel_h_px", 480)),
                       aruco_dict=str(table.get("aruco_dict", "DICT_4X4_50")))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ScreenError(f"[screen] fixture geometry is incomplete or malformed ({exc!r}); it needs "
                              "marker_side_mm, marker_centres_mm, panel_x_mm, panel_y_mm, pixel_pitch_mm") from None

    def mm_to_panel(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        return (x_mm - self.panel_x_mm) / self.pixel_pitch_mm, (y_mm - self.panel_y_mm) / self.pixel_pitch_mm

    def corner_points_panel(self, marker_id: int) -> np.ndarray:
        """The marker's 4 corners (ArUco order: TL, TR, BR, BL) in panel pixels (may lie outside it)."""
        cx, cy = self.marker_centres_mm[marker_id]
        h = self.marker_side_mm / 2
        return np.array([self.mm_to_panel(cx + dx, cy + dy) for dx, dy in ((-h, -h), (h, -h), (h, h), (-h, h))],
                        np.float32)


@dataclass(frozen=True)
class Calibration:
    """Camera pixels -> panel pixels."""

    homography: np.ndarray
    reprojection_px: float  # RMS over the marker corners, in panel pixels
    markers: int
    panel_size: tuple[int, int]

    def rectify(self, frame: np.ndarray) -> np.ndarray:
        """The panel as seen: a ``panel_w x panel_h`` image in panel pixels."""
        return cv2.warpPerspective(frame, self.homography, self.panel_size, flags=cv2.INTER_LINEAR)

    @classmethod
    def identity(cls, panel_size: tuple[int, int]) -> "Calibration":
        """For a source that already shows panel pixels (e.g. the panel's own video output)."""
        return cls(np.eye(3), 0.0, 0, panel_size)


def _aruco_detector(dict_name: str):
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dict_name))
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX  # sub-pixel corners: a tighter fit
    return cv2.aruco.ArucoDetector(dictionary, params)


def calibrate_bezel(frame: np.ndarray, bezel: Bezel, *, limit_px: float = REPROJECTION_LIMIT_PX) -> Calibration:
    """The homography from the bezel's four markers; raises CalibrationError naming what failed."""
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    corners, ids, _ = _aruco_detector(bezel.aruco_dict).detectMarkers(gray)
    found: dict[int, np.ndarray] = {}
    for i, c in zip(ids.ravel() if ids is not None else [], corners):
        c = c.reshape(4, 2)
        # a pattern in the panel's content may decode as a marker too: the bezel's are the largest
        if int(i) in bezel.marker_centres_mm and (int(i) not in found or cv2.arcLength(c, True) > cv2.arcLength(found[int(i)], True)):
            found[int(i)] = c
    missing = [i for i in bezel.marker_centres_mm if i not in found]
    if missing:
        raise CalibrationError(f"bezel markers {missing} not seen (found {sorted(found)}): check the camera's "
                               "view of the fixture, its focus and the lighting")
    cam = np.concatenate([found[i] for i in bezel.marker_centres_mm]).astype(np.float32)
    panel = np.concatenate([bezel.corner_points_panel(i) for i in bezel.marker_centres_mm])
    homography, _ = cv2.findHomography(cam, panel, 0)
    if homography is None:
        raise CalibrationError("the marker corners give no homography (degenerate view)")
    projected = cv2.perspectiveTransform(cam.reshape(-1, 1, 2), homography).reshape(-1, 2)
    rms = float(np.sqrt(np.mean(np.sum((projected - panel) ** 2, axis=1))))
    if rms > limit_px:
        raise CalibrationError(f"bezel calibration reprojection error {rms:.2f} px exceeds the limit "
                               f"{limit_px:.2f} px: the fixture geometry in the station file does not match "
                               "what the camera sees, or the view is too blurred")
    return Calibration(homography, rms, len(found), (bezel.panel_w_px, bezel.panel_h_px))


@dataclass(frozen=True)
class FingerMap:
    """Fixture millimetres <-> panel pixels for the finger, fitted from observed taps (affine)."""

    mm_to_px: np.ndarray  # 2x3
    residual_px: float  # RMS of the taps against the fit
    taps: int

    def to_px(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        x, y = self.mm_to_px @ np.array([x_mm, y_mm, 1.0])
        return float(x), float(y)

    def to_mm(self, x_px: float, y_px: float) -> tuple[float, float]:
        a, t = self.mm_to_px[:, :2], self.mm_to_px[:, 2]
        x, y = np.linalg.solve(a, np.array([x_px, y_px]) - t)
        return float(x), float(y)


def fit_finger(taps_mm: list[tuple[float, float]], seen_px: list[tuple[float, float]],
               *, limit_px: float = 6.0) -> FingerMap:
    """Affine fit of where taps landed on the panel against where the finger was sent (>= 4 taps)."""
    if len(taps_mm) < 4 or len(taps_mm) != len(seen_px):
        raise CalibrationError(f"the finger fit needs at least 4 observed taps, got {len(seen_px)}")
    src = np.asarray(taps_mm, np.float64)
    dst = np.asarray(seen_px, np.float64)
    design = np.hstack([src, np.ones((len(src), 1))])
    sol, *_ = np.linalg.lstsq(design, dst, rcond=None)  # least squares: every tap counts
    m = sol.T
    residual = float(np.sqrt(np.mean(np.sum((design @ sol - dst) ** 2, axis=1))))
    if residual > limit_px:
        raise CalibrationError(f"finger fit residual {residual:.1f} px exceeds {limit_px:.1f} px: a tap was "
                               "misread or the finger slipped")
    return FingerMap(m, residual, len(src))


def locate_touch(before: np.ndarray, during: np.ndarray, *, min_area_px: int = 12) -> tuple[float, float] | None:
    """Where a stylus rests on the panel: the largest new dark blob between two rectified frames
    (a stylus tip is dark rubber; its shadow is lighter and is left out), its centroid."""
    g0 = cv2.cvtColor(before, cv2.COLOR_BGR2GRAY) if before.ndim == 3 else before
    g1 = cv2.cvtColor(during, cv2.COLOR_BGR2GRAY) if during.ndim == 3 else during
    diff = cv2.absdiff(g0, g1)
    mask = ((diff > 60) & (g1 < 60)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask)
    if n <= 1:
        return None
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[big, cv2.CC_STAT_AREA] < min_area_px:
        return None
    return float(centroids[big][0]), float(centroids[big][1])


# ---------------------------------------------------------------------------------------------
# The screen map


@dataclass(frozen=True)
class ScreenSpec:
    id: str
    phrases: tuple[str, ...]  # any one of them read means "this screen may be shown"
    buttons: dict[str, str]  # button id -> label, in display order
    also: tuple[str, ...] = ()  # phrases the screen may show besides (reported in its message)
    keypad: dict[str, str] = field(default_factory=dict)  # panel-local keys (a PIN pad): located, not scored
    keypad_grid: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (column, row)
    pin_length: int = 0  # how many digits the keypad takes (0: any)


@dataclass
class ScreenMap:
    model: str
    screens: dict[str, ScreenSpec]
    path: Path | None = None
    reference_dir: Path | None = None
    off_screen: str = "off"

    @classmethod
    def load(cls, path: str | Path) -> "ScreenMap":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ScreenError(f"screen map {path}: {exc}") from None
        screens: dict[str, ScreenSpec] = {}
        for sid, t in (data.get("screens") or {}).items():
            if not isinstance(t, dict) or not isinstance(t.get("phrases", []), list):
                raise ScreenError(f"screen map {path}: [screens.{sid}] needs phrases = [...]")
            buttons = t.get("buttons", {})
            if not isinstance(buttons, dict):
                raise ScreenError(f"screen map {path}: [screens.{sid}] buttons must be a table id = label")
            if not t.get("phrases"):
                raise ScreenError(f"screen map {path}: [screens.{sid}] has no key phrases")
            screens[sid] = ScreenSpec(sid, tuple(map(str, t["phrases"])), {str(k): str(v) for k, v in buttons.items()},
                                      tuple(map(str, t.get("also", []))),
                                      {str(k): str(v) for k, v in (t.get("keypad") or {}).items()},
                                      {str(k): (int(v[0]), int(v[1])) for k, v in (t.get("keypad_grid") or {}).items()},
                                      int(t.get("pin_length", 0)))
        if not screens:
            raise ScreenError(f"screen map {path} defines no [screens.<id>]")
        ref = data.get("reference_frames")
        return cls(model=str(data.get("model", path.stem)), screens=screens, path=path,
                   reference_dir=(path.parent / ref) if ref else None)

    def labels(self) -> dict[str, set[str]]:
        """Every button label -> the screens that show it."""
        out: dict[str, set[str]] = {}
        for s in self.screens.values():
            for label in [*s.buttons.values(), *s.keypad.values()]:
                out.setdefault(label, set()).add(s.id)
        return out


# ---------------------------------------------------------------------------------------------
# OCR


VOICING_MARKS = {"\u3099", "\u309a"}  # combining (han)dakuten: で = て + U+3099


def normalise(text: str) -> str:
    """NFKC, no whitespace (Japanese has no spaces to trust, and OCR inserts some), and no
    dakuten or handakuten: through blur or glare Tesseract drops them (選んでください read as
    選んてくたさい), and no two phrases of a screen map differ by them alone."""
    plain = "".join(unicodedata.normalize("NFKC", text).split())
    return unicodedata.normalize("NFC", "".join(ch for ch in unicodedata.normalize("NFD", plain)
                                                if ch not in VOICING_MARKS))


def _letters(text: str) -> str:
    """Letters, digits and ・ only: the brackets and bars OCR makes of a button's edge go."""
    return "".join(ch for ch in text if ch == "・" or unicodedata.category(ch)[0] in "LN")


def partial_similarity(phrase: str, text: str) -> tuple[float, int]:
    """How well ``phrase`` occurs in ``text`` (1.0: verbatim) and where (start index)."""
    if not phrase:
        return 0.0, 0
    if phrase in text:
        return 1.0, text.index(phrase)
    n = len(phrase)
    best, where = 0.0, 0
    sm = SequenceMatcher(autojunk=False)
    sm.set_seq2(phrase)
    for start in range(0, max(1, len(text) - n + 1)):
        sm.set_seq1(text[start:start + n])
        if sm.real_quick_ratio() <= best or sm.quick_ratio() <= best:
            continue
        r = sm.ratio()
        if r > best:
            best, where = r, start
    return best, where


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: tuple[int, int, int, int]  # x, y, w, h in panel pixels
    confidence: float
    symbols: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()  # each glyph read and its box

    def normalised(self) -> tuple[str, list[tuple[int, int, int, int]]]:
        """The line without spaces, and one box per character of it."""
        chars, boxes = [], []
        for sym, box in self.symbols:
            for ch in normalise(sym):
                chars.append(ch)
                boxes.append(box)
        return "".join(chars), boxes


class JapaneseOcr:
    """Tesseract ``jpn`` through tesserocr, loaded once and reused (loading costs ~0.3 s)."""

    def __init__(self, lang: str = "jpn", tessdata: str | None = None):
        try:
            import tesserocr
        except ImportError as exc:
            raise ScreenError("tesserocr is not installed (pip install tesserocr; Debian tesseract-ocr-jpn)") from exc
        self._tesserocr = tesserocr
        path = tessdata or next((d for d in TESSDATA_DIRS if Path(d, f"{lang}.traineddata").exists()), None)
        if path is None:
            raise ScreenError(f"no {lang}.traineddata under {', '.join(TESSDATA_DIRS)}: install Debian tesseract-ocr-{lang}")
        self._api = tesserocr.PyTessBaseAPI(path=path, lang=lang, psm=tesserocr.PSM.SPARSE_TEXT)
        self._api.SetVariable("preserve_interword_spaces", "1")  # else CJK gets spaces between glyphs
        self._line_api = tesserocr.PyTessBaseAPI(path=path, lang=lang, psm=tesserocr.PSM.SINGLE_LINE)
        self._line_api.SetVariable("preserve_interword_spaces", "1")
        self._lock = threading.Lock()

    @staticmethod
    def prepare(panel_bgr: np.ndarray, scale: float = OCR_SCALE) -> np.ndarray:
        """Dark text on white wherever it was drawn: light text on a dark button is inverted
        (judged by the local background, a median that ignores the strokes), then the grey
        levels are stretched so a button's face turns white and only its text stays dark."""
        gray = cv2.cvtColor(panel_bgr, cv2.COLOR_BGR2GRAY) if panel_bgr.ndim == 3 else panel_bgr
        if scale != 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        background = cv2.medianBlur(gray, 31)
        dark_text = np.where(background < 150, 255 - gray, gray)
        return np.clip((dark_text.astype(np.int32) - 60) * 255 // 140, 0, 255).astype(np.uint8)

    def read(self, panel_bgr: np.ndarray, scale: float = OCR_SCALE) -> list[OcrLine]:
        from PIL import Image

        img = self.prepare(panel_bgr, scale)
        tess = self._tesserocr
        lines: list[OcrLine] = []

        def px(box) -> tuple[int, int, int, int]:
            x0, y0, x1, y1 = box
            return int(x0 / scale), int(y0 / scale), max(1, int((x1 - x0) / scale)), max(1, int((y1 - y0) / scale))

        with self._lock:
            self._api.SetImage(Image.fromarray(img))
            self._api.Recognize()
            it = self._api.GetIterator()
            line_level, sym_level = tess.RIL.TEXTLINE, tess.RIL.SYMBOL
            current: list = []  # [text, box, confidence, symbols]
            while not it.Empty(sym_level):
                if it.IsAtBeginningOf(line_level):
                    if current and current[0].strip():
                        lines.append(OcrLine(current[0].strip(), current[1], current[2], tuple(current[3])))
                    current = [it.GetUTF8Text(line_level) or "", px(it.BoundingBox(line_level)),
                               it.Confidence(line_level), []]
                sym = it.GetUTF8Text(sym_level)
                if sym and current:
                    current[3].append((sym, px(it.BoundingBox(sym_level))))
                if not it.Next(sym_level):
                    break
            if current and current[0].strip():
                lines.append(OcrLine(current[0].strip(), current[1], current[2], tuple(current[3])))
        return lines

    def read_buttons(self, panel_bgr: np.ndarray, scale: float = BUTTON_OCR_SCALE) -> list[OcrLine]:
        """The text on each button-like shape (a large filled box, wider than tall), read alone as
        one line: a label in its own crop reads far better than in the whole panel."""
        from PIL import Image

        gray = cv2.cvtColor(panel_bgr, cv2.COLOR_BGR2GRAY) if panel_bgr.ndim == 3 else panel_bgr
        h_px, w_px = gray.shape
        page = float(np.percentile(gray, 75))  # the page is most of the panel
        # filled, clearly darker than the page: a moiré or a glare gradient on the page is a few tens
        # of grey levels, and must not join the buttons into one band
        mask = (cv2.medianBlur(gray, 15) < page - BUTTON_MIN_CONTRAST).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        out: list[OcrLine] = []
        for x, y, w, h, area in (map(int, row) for row in stats[1:]):
            if h < 0.08 * h_px or w < 1.2 * h or area < 0.6 * w * h or w > 0.95 * w_px:
                continue  # not a button: too thin, too tall, hollow, or a full-width band
            dy, dx = max(4, h // 8), max(6, h // 5)  # inside the rounded corners and the edge
            crop = gray[y + dy:y + h - dy, x + dx:x + w - dx]
            if crop.shape[0] < 8 or crop.shape[1] < 8:
                continue
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if float(np.median(crop)) < 150:  # light text on a dark button: make it dark on light
                crop = 255 - crop
            # Otsu: glyphs black, the face white (a moiré or a glare gradient drops out)
            _, crop = cv2.threshold(cv2.GaussianBlur(crop, (3, 3), 0), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            crop = cv2.copyMakeBorder(crop, 8, 8, 8, 8, cv2.BORDER_CONSTANT, value=255)
            with self._lock:
                self._line_api.SetImage(Image.fromarray(crop))
                text = (self._line_api.GetUTF8Text() or "").strip()
                conf = float(self._line_api.MeanTextConf())
                bx = self._line_api.GetComponentImages(self._tesserocr.RIL.TEXTLINE, True)
            if not text:
                continue
            if bx:
                b = bx[0][1]
                box = (x + dx + int((b["x"] - 8) / scale), y + dy + int((b["y"] - 8) / scale),
                       int(b["w"] / scale), int(b["h"] / scale))
            else:
                box = (int(x), int(y), int(w), int(h))
            out.append(OcrLine(_letters(text), box, conf))
        return out

    def close(self) -> None:
        self._api.End()
        self._line_api.End()


# ---------------------------------------------------------------------------------------------
# Recognition


@dataclass(frozen=True)
class Verdict:
    """One frame's answer: ``state`` is "found", "ambiguous" (wait) or "unknown"."""

    state: str
    screen: str | None
    score: float
    runner_up: str | None
    margin: float
    template_ncc: float
    message: str = ""  # the key phrases read, spelled as the map spells them, joined by LF
    buttons: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # id -> box (panel px)
    elapsed_ms: float = 0.0
    unread_buttons: int = 0  # button shapes seen whose label could not be read

    @property
    def found(self) -> bool:
        return self.state == "found"


def template_signature(panel_bgr: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(panel_bgr, cv2.COLOR_BGR2GRAY) if panel_bgr.ndim == 3 else panel_bgr
    return cv2.resize(gray, TEMPLATE_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


class ScreenRecognizer:
    """Names the screen a rectified panel frame shows, from a screen map and its reference frames."""

    def __init__(self, screen_map: ScreenMap, ocr: JapaneseOcr | None = None,
                 references: dict[str, np.ndarray] | None = None):
        self.map = screen_map
        self.ocr = ocr or JapaneseOcr()
        self.references: dict[str, list[np.ndarray]] = {}
        for sid, img in (references or {}).items():
            self.add_reference(sid, img)
        if references is None and screen_map.reference_dir is not None:
            self.load_references(screen_map.reference_dir)

    def add_reference(self, screen_id: str, panel_bgr: np.ndarray) -> None:
        self.references.setdefault(screen_id, []).append(template_signature(panel_bgr))

    def load_references(self, folder: Path) -> None:
        for png in sorted(Path(folder).glob("*.png")):
            sid = png.stem.split("@")[0]  # <screen>.png or <screen>@<variant>.png
            img = cv2.imread(str(png))
            if img is not None and sid in self.map.screens:
                self.add_reference(sid, img)

    def template_score(self, screen_id: str, signature: np.ndarray) -> float:
        refs = self.references.get(screen_id)
        if not refs:
            return float("nan")  # no reference frame: nothing to confirm against (reported, and refused)
        return max(ncc(signature, r) for r in refs)

    def recognise(self, panel_bgr: np.ndarray, button_scale: float = BUTTON_OCR_SCALE) -> Verdict:
        started = time.perf_counter()
        if float(np.mean(panel_bgr)) < DARK_MEAN:
            return Verdict("found", self.map.off_screen, 1.0, None, 1.0, 1.0,
                           elapsed_ms=(time.perf_counter() - started) * 1000)
        lines = self.ocr.read(panel_bgr)
        buttons = self.ocr.read_buttons(panel_bgr, scale=button_scale)
        verdict = self.judge(lines, template_signature(panel_bgr), buttons)
        return Verdict(**{**verdict.__dict__, "elapsed_ms": (time.perf_counter() - started) * 1000})

    def judge(self, lines: list[OcrLine], signature: np.ndarray | None,
              button_lines: list[OcrLine] | None = None) -> Verdict:
        text = normalise("".join(line.text for line in lines))
        # every phrase of the map read at least in part, with where: (screen, phrase, similarity, start, end)
        reads: list[tuple[str, str, float, int, int]] = []
        for spec in self.map.screens.values():
            for phrase in dict.fromkeys(spec.phrases + spec.also):
                p = normalise(phrase)
                sim, start = partial_similarity(p, text)
                if sim >= PHRASE_SHADOW_SIMILARITY:
                    reads.append((spec.id, phrase, sim, start, start + len(p)))
        key_phrases = {(spec.id, phrase) for spec in self.map.screens.values() for phrase in spec.phrases}
        hits = [r for r in reads if (r[0], r[1]) in key_phrases and r[2] >= PHRASE_MIN_SIMILARITY]
        kept = [h for h in hits if not any(_explains(o, h) for o in reads)]
        labels_seen = self._labels_seen(lines if button_lines is None else button_lines)
        keys = {label for spec in self.map.screens.values() for label in spec.keypad.values()}
        scored_labels = set(labels_seen) - keys  # a keypad is located, not evidence for a screen
        scores: dict[str, float] = {}
        for spec in self.map.screens.values():
            phrase = max((h[2] for h in kept if h[0] == spec.id), default=0.0)
            want = set(spec.buttons.values())
            union = want | scored_labels
            buttons = len(want & scored_labels) / len(union) if union else 1.0
            scores[spec.id] = 0.7 * phrase + 0.3 * buttons
        ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        (best, best_s), (second, second_s) = ranked[0], ranked[1] if len(ranked) > 1 else (None, 0.0)
        margin = best_s - second_s
        tmpl = self.template_score(best, signature) if signature is not None else float("nan")
        spec = self.map.screens[best]
        message = "\n".join(h[1] for h in sorted(kept, key=lambda h: h[3])
                            if h[0] == best or h[1] in spec.also)
        # the screen's "also" phrases read, the likeliest one where two cover the same words
        # (あと2回 / あと1回: one glyph apart, and the one that differs is the news)
        also_read = [(r[2], r[3], r[4], r[1]) for r in reads
                     if r[0] == best and r[1] in spec.also and r[2] >= PHRASE_MIN_SIMILARITY]
        chosen: list[tuple[float, int, int, str]] = []
        for hit in sorted(also_read, reverse=True):
            rivals = [o for o in also_read if o is not hit and hit[1] < o[2] and o[1] < hit[2]]
            if not any(hit[1] < c[2] and c[1] < hit[2] for c in chosen) \
                    and all(_reads_what_differs(hit[3], o[3], text, hit[1]) for o in rivals):
                chosen.append(hit)
        message = "\n".join(dict.fromkeys([message] + [c[3] for c in sorted(chosen, key=lambda c: c[1])]))
        boxes = {bid: labels_seen[label] for bid, label in {**spec.buttons, **spec.keypad}.items() if label in labels_seen}
        if button_lines is not None and len(boxes) < len(spec.buttons):
            boxes.update(_by_display_order(spec, button_lines, labels_seen, boxes))
        if spec.keypad:
            boxes.update(_keypad_boxes(spec, lines, boxes))
        shapes = [b for b in (button_lines or []) if _letters(b.text) not in keys]
        unread = sum(1 for b in shapes if not any(_overlap(b.box, box) > 0.5 for box in boxes.values()))
        if best_s < FOUND_MIN_SCORE:
            state = "unknown"
        elif margin < FOUND_MIN_MARGIN or not (tmpl >= TEMPLATE_MIN_NCC):
            state = "ambiguous"
        else:
            state = "found"
        return Verdict(state, best, best_s, second, margin, tmpl, message.strip("\n"), boxes, unread_buttons=unread)

    def _labels_seen(self, lines: list[OcrLine]) -> dict[str, tuple[int, int, int, int]]:
        """Button labels read, with the boxes they were read in: each line goes to the label it is
        most like (so 同意しない never counts as 同意する), if it is like it enough."""
        labels = {label: normalise(label) for label in self.map.labels()}
        found: list[tuple[float, str, tuple[int, int, int, int]]] = []
        for line in lines:
            got = normalise(line.text)
            if not got:
                continue
            ratios = {lb: SequenceMatcher(None, want, got, autojunk=False).ratio() for lb, want in labels.items()}
            label, ratio = max(ratios.items(), key=lambda kv: kv[1])
            if ratio >= LABEL_MIN_SIMILARITY:
                found.append((ratio, label, line.box))
        seen: dict[str, tuple[int, int, int, int]] = {}
        for _, label, box in sorted(found, reverse=True):
            seen.setdefault(label, box)
        return seen


def _explains(o: tuple[str, str, float, int, int], h: tuple[str, str, float, int, int]) -> bool:
    """Is phrase read ``h`` explained by ``o``, a longer phrase of another screen read where it is
    (e.g. N16's reminder, which holds マイナンバーカードを...てください)? Only if ``o`` is read better
    than ``h``'s own words would make it look (so its extra glyphs are there: 以外の診療 is not read
    on the surgery consent), and a verbatim ``h`` only by an ``o`` read verbatim too: a fuzzy long
    phrase does not overrule a verbatim short one, but 操作がなかったため終了しま… half glared is
    not done's 終了しました."""
    if o is h or o[0] == h[0] or o[4] - o[3] <= h[4] - h[3] or not (o[3] <= h[3] + 1 and h[4] <= o[4] + 1):
        return False
    if h[2] >= 1.0 and o[2] < 1.0:
        return False
    return o[2] > _resemblance(o[1], h[1]) + SHADOW_MARGIN


@lru_cache(maxsize=4096)
def _resemblance(longer: str, shorter: str) -> float:
    """How well ``longer`` seems read in a text that holds only ``shorter``."""
    return partial_similarity(normalise(longer), normalise(shorter))[0]


def _by_display_order(spec: ScreenSpec, shapes: list[OcrLine], labels_seen: dict[str, tuple[int, int, int, int]],
                      found: dict[str, tuple[int, int, int, int]]) -> dict[str, tuple[int, int, int, int]]:
    """A button whose label was misread: when the screen has exactly as many button shapes as the
    map lists buttons, and the labels that were read sit in the map's order, the rest follow it."""
    keys = set(spec.keypad.values())
    row = sorted((b for b in shapes if _letters(b.text) not in keys), key=lambda b: (b.box[0], b.box[1]))
    if len(row) != len(spec.buttons):
        return {}
    ids = list(spec.buttons)
    for i, shape in enumerate(row):  # every label read must be where the map's order puts it
        label = spec.buttons[ids[i]]
        if label in labels_seen and _overlap(labels_seen[label], shape.box) < 0.5:
            return {}
    return {ids[i]: row[i].box for i in range(len(ids)) if ids[i] not in found}


def _reads_what_differs(phrase: str, rival: str, text: str, start: int) -> bool:
    """Is each glyph where ``phrase`` differs from an overlapping ``rival`` (あと2回 / あと1回) read as
    ``phrase`` has it, with its neighbours? A fuzzy match may not decide the one glyph that is the
    news: あと0回, in no phrase of the map, is neither of them."""
    p, r = normalise(phrase), normalise(rival)
    if len(p) != len(r):
        return True  # not one phrase with a glyph changed: similarity decides
    window = text[max(0, start - 2):start + len(p) + 2]
    return all(p[max(0, i - 1):i + 2] in window for i in range(len(p)) if p[i] != r[i])


def _keypad_boxes(spec: ScreenSpec, lines: list[OcrLine],
                  found: dict[str, tuple[int, int, int, int]]) -> dict[str, tuple[int, int, int, int]]:
    """A keypad's keys: single glyphs read anywhere on the panel; with the map's grid, every key is
    then placed on the grid fitted to those reads (Theil-Sen: a glyph misread as another key, e.g. 7
    read as 1, is an outlier and cannot move a key; a key a glare hid is placed like the rest)."""
    by_label = {label: key for key, label in spec.keypad.items()}
    reads = [(k, b) for k, b in found.items() if k in spec.keypad]
    for line in lines:
        for sym, box in line.symbols:
            key = by_label.get(normalise(sym))
            if key is not None and len(line.normalised()[0]) <= 2:
                reads.append((key, box))
    out: dict[str, tuple[int, int, int, int]] = {}
    for k, b in reads:
        out.setdefault(k, b)
    placed = [(spec.keypad_grid[k], b) for k, b in reads if k in spec.keypad_grid]
    if len({g[0] for g, _ in placed}) < 2 or len({g[1] for g, _ in placed}) < 2:
        return out
    centres = [((g[0], g[1]), (b[0] + b[2] / 2, b[1] + b[3] / 2)) for g, b in placed]
    ax, bx = _theil_sen([(g[0], c[0]) for g, c in centres])
    ay, by = _theil_sen([(g[1], c[1]) for g, c in centres])
    w = int(np.median([b[2] for _, b in placed]))
    h = int(np.median([b[3] for _, b in placed]))
    for key, (col, row) in spec.keypad_grid.items():
        out[key] = (int(ax * col + bx - w / 2), int(ay * row + by - h / 2), max(w, 10), max(h, 10))
    return out


def _theil_sen(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Robust line fit y = a x + b: the median of pairwise slopes, then the median intercept."""
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1:] if x2 != x1]
    a = float(np.median(slopes))
    return a, float(np.median([y - a * x for x, y in points]))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over the smaller box."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(1, min(a[2] * a[3], b[2] * b[3]))


# ---------------------------------------------------------------------------------------------
# Stability over frames


@dataclass(frozen=True)
class Shown:
    """A screen that is shown: stable over ``frames`` frames since ``since_s`` (capture time)."""

    screen: str
    since_s: float
    frame_no: int
    verdict: Verdict


def change_signature(panel_bgr: np.ndarray) -> np.ndarray:
    """The panel small, zero mean and unit contrast (an exposure drift is no change; a dark, off
    panel is left as is), for ``panel_changed``."""
    gray = cv2.cvtColor(panel_bgr, cv2.COLOR_BGR2GRAY) if panel_bgr.ndim == 3 else panel_bgr
    sig = cv2.resize(gray, CHANGE_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    std = float(sig.std())
    return (sig - sig.mean()) / std if std > 5.0 else sig / 50.0


def panel_changed(a: np.ndarray, b: np.ndarray) -> bool:
    """A change somewhere, not noise everywhere: the largest 8x8-block mean of the difference."""
    h, w = a.shape
    blocks = cv2.resize(np.abs(a - b), (w // 8, h // 8), interpolation=cv2.INTER_AREA)
    return float(blocks.max()) > CHANGE_BLOCK


class StableScreen:
    """Per-frame verdicts in, shown screens out.

    A frame whose panel has not changed (``panel_changed``: no block of the exposure-normalised
    ``change_signature`` moved) reuses the last verdict: OCR runs once per change. A new screen is shown once ``frames``
    consecutive frames agree; its time is the capture time of the first frame of the change.
    A panel that does not differ from one shown before (a screen seen again under the same light)
    takes that panel's verdict, without OCR. A found screen with a button shape whose label was not read (a glare on it) is read again
    up to ``REREADS`` times before it is shown, the buttons of every read merged: what a screen
    offers is judged on its buttons, so one glared label must not hide one.
    """

    REREADS = 3
    # a reread of a glared label at the same scale mostly misreads it the same way (the glare moves
    # slowly); at a larger scale it reads (顔認証を行う read as 馴婦証を行う at 0.8, right at 1.0)
    REREAD_BUTTON_SCALES = (1.0, 1.2, BUTTON_OCR_SCALE)
    KNOWN = 64  # panels shown before, kept with their verdicts: one seen again is named without OCR

    def __init__(self, recognizer: ScreenRecognizer, frames: int = 2):
        self.recognizer = recognizer
        self.frames = frames
        self._last_sig: np.ndarray | None = None
        self._last_verdict: Verdict | None = None
        self._change_s: float | None = None
        self._change_no = 0
        self._run = 0
        self.shown: Shown | None = None
        self.ocr_runs = 0
        self.recalls = 0  # changes named from a panel shown before (no OCR)
        self._known: deque[tuple[np.ndarray, Verdict]] = deque(maxlen=self.KNOWN)
        self.waits = 0  # verdicts that were not "found": read again
        self._rereads = 0
        self._read_buttons: dict[str, tuple[int, int, int, int]] = {}  # merged over this change's rereads

    def feed(self, frame_no: int, capture_s: float, panel_bgr: np.ndarray) -> Shown | None:
        """Returns a newly shown screen, else None."""
        sig = change_signature(panel_bgr)
        changed = self._last_sig is None or panel_changed(sig, self._last_sig)
        if changed:
            self._change_s, self._change_no = capture_s, frame_no
            self._run = 0
            self._last_sig = sig
            self._last_verdict = None
            self._rereads, self._read_buttons = 0, {}
        self._run += 1
        if self._run < self.frames:
            return None  # still moving (or first sight): wait before spending OCR on it
        if self._last_verdict is None:
            self._last_verdict = self._recall(sig)
            if self._last_verdict is None:
                scale = self.REREAD_BUTTON_SCALES[self._rereads - 1] if self._rereads else BUTTON_OCR_SCALE
                self._last_verdict = self.recognizer.recognise(panel_bgr, button_scale=scale)
                self.ocr_runs += 1
        v = self._last_verdict
        if v.found and v.unread_buttons:
            missed = v.unread_buttons - len(set(self._read_buttons) - set(v.buttons))
            self._read_buttons.update(v.buttons)
            if missed > 0 and self._rereads < self.REREADS:
                self._rereads += 1
                self._last_verdict, self._run = None, 0  # read again a few frames on (a glare moves)
                return None
            v = self._last_verdict = replace(v, buttons=dict(self._read_buttons), unread_buttons=max(0, missed))
        if not v.found:
            # ambiguous or unknown (a glare, a half-drawn frame): read again a few frames on; the
            # change keeps the time of its first frame
            self._last_verdict, self._run = None, 0
            self.waits += 1
            return None
        self._remember(sig, v)
        if self.shown is not None and self.shown.screen == v.screen and self.shown.verdict.message == v.message:
            return None
        self.shown = Shown(v.screen, self._change_s or capture_s, self._change_no, v)
        return self.shown

    def _recall(self, sig: np.ndarray) -> Verdict | None:
        """The verdict of a panel shown before that this one does not differ from, by the same
        test that tells one frame from the next (``panel_changed``), so a one-glyph change
        (あと2回 / あと1回) is never recalled as the other; the newest such panel first."""
        for known_sig, verdict in reversed(self._known):
            if not panel_changed(sig, known_sig):
                self.recalls += 1
                return verdict
        return None

    def _remember(self, sig: np.ndarray, verdict: Verdict) -> None:
        if not verdict.unread_buttons and not any(v is verdict for _, v in self._known):
            self._known.append((sig, verdict))
