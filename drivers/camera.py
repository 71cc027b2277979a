"""Camera driver over OpenCV: a device index, a video file, an image sequence or a stream URL.

Live sources (a device, an HTTP MJPEG or RTSP URL) are read by a background thread that keeps
only the newest frame, so a consumer never sees frames that sat in a buffer; a drop is
followed by bounded reconnect attempts with exponential backoff. Files and image sequences
are read in order, one frame per ``read()``.

Every frame carries ``time.monotonic()`` at capture (the same clock in every process of the
host, so it can be compared with a presenter's send time). Recording a clip is opt-in: frames
are biometric data.
"""

from __future__ import annotations

import glob as globmod
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("http://", "https://", "rtsp://", "rtsps://", "rtmp://", "udp://", "tcp://")
_PRINTF_RE = re.compile(r"%0?\d*d")


# -- errors -------------------------------------------------------------------------------------
class CameraError(Exception):
    """Base of every camera error."""


class CameraUnavailable(CameraError):
    """The source cannot be opened (no device, no file, nothing listening at the URL)."""


class CameraDropped(CameraError):
    """A live source stopped delivering frames and could not be reconnected."""


class CameraTimeout(CameraError):
    """No new frame arrived within the wait."""


class CameraEnded(CameraError):
    """A file or image sequence has no more frames."""


# -- values -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR, uint8
    index: int  # frames delivered since open, from 0
    monotonic_s: float  # time.monotonic() when the frame was read from the source
    wall_s: float
    epoch: int = 0  # connection number: increments after each reconnect

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class CameraSource:
    kind: str  # "device", "file", "sequence", "url"
    target: str | int
    files: tuple[str, ...] = ()  # a glob sequence, expanded and sorted

    @property
    def live(self) -> bool:
        return self.kind in ("device", "url")

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"


def parse_source(spec: str | int) -> CameraSource:
    """``0`` / ``"camera:0"`` / ``/dev/video0`` -> device; ``http(s)://``, ``rtsp://`` ... -> url;
    a path with ``%04d`` or glob characters -> sequence; any other path -> file."""
    if isinstance(spec, int):
        return CameraSource("device", spec)
    text = str(spec).strip()
    if not text:
        raise CameraUnavailable("empty camera source")
    if text.isdigit():
        return CameraSource("device", int(text))
    if text.startswith("camera:") and text[7:].isdigit():
        return CameraSource("device", int(text[7:]))
    if text.startswith("/dev/video"):
        return CameraSource("device", text)
    if text.lower().startswith(STREAM_SCHEMES):
        return CameraSource("url", text)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if _PRINTF_RE.search(text):
        return CameraSource("sequence", text)
    if any(c in text for c in "*?["):
        return CameraSource("sequence", text, files=tuple(sorted(globmod.glob(text))))
    return CameraSource("file", text)


@dataclass(frozen=True)
class SettingResult:
    name: str
    requested: float | None
    accepted: float | None  # what the device reports after the request; None if it reports nothing
    applied: bool  # the backend took the request (False: unsupported, e.g. on a stream)


@dataclass
class Recording:
    path: Path
    frames: int = 0
    writer: cv2.VideoWriter | None = field(default=None, repr=False)
    fps: float = 10.0
    fourcc: str = "MJPG"


class Camera(Protocol):
    """What a scenario may ask of a camera."""

    def open(self) -> None: ...
    def read(self, timeout_s: float = 5.0) -> Frame: ...
    def latest(self) -> Frame | None: ...
    def start_recording(self, path: str | Path, fps: float | None = None) -> None: ...
    def stop_recording(self) -> Recording | None: ...
    def close(self) -> None: ...


# -- a list of image files behaving like a VideoCapture ---------------------------------------
class _FileListCapture:
    def __init__(self, files: tuple[str, ...]):
        self.files = files
        self.pos = 0

    def isOpened(self) -> bool:  # noqa: N802 - VideoCapture's spelling
        return bool(self.files)

    def read(self) -> tuple[bool, np.ndarray | None]:
        while self.pos < len(self.files):
            img = cv2.imread(self.files[self.pos], cv2.IMREAD_COLOR)
            self.pos += 1
            if img is not None:
                return True, img
            log.warning("skipping unreadable image %s", self.files[self.pos - 1])
        return False, None

    def set(self, prop: int, value: float) -> bool:
        if prop == cv2.CAP_PROP_POS_FRAMES:
            self.pos = int(value)
            return True
        return False

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(len(self.files))
        return 0.0

    def release(self) -> None:
        self.files = ()


_PROPS = {
    "width": cv2.CAP_PROP_FRAME_WIDTH,
    "height": cv2.CAP_PROP_FRAME_HEIGHT,
    "fps": cv2.CAP_PROP_FPS,
    "auto_exposure": cv2.CAP_PROP_AUTO_EXPOSURE,
    "exposure": cv2.CAP_PROP_EXPOSURE,
}


class OpenCVCamera:
    """The OpenCV backend of ``Camera``. Use ``open()``/``close()`` or a ``with`` block."""

    def __init__(self, source: str | int | CameraSource, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, exposure: float | None = None, auto_exposure: float | None = None,
                 open_timeout_s: float = 5.0, read_timeout_s: float = 5.0, reconnect: bool = True,
                 reconnect_attempts: int = 5, backoff_s: float = 0.25, loop: bool = False):
        self.source = source if isinstance(source, CameraSource) else parse_source(source)
        self.requested = {"width": width, "height": height, "fps": fps, "auto_exposure": auto_exposure,
                          "exposure": exposure}
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.reconnect = reconnect
        self.reconnect_attempts = reconnect_attempts
        self.backoff_s = backoff_s
        self.loop = loop
        self.settings: dict[str, SettingResult] = {}
        self.stats = {"frames": 0, "drops": 0, "reconnects": 0}
        self._cap = None
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._delivered_index = -1
        self._failure: CameraError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._epoch = 0
        self._index = 0
        self._recording: Recording | None = None
        self._rec_lock = threading.Lock()

    # -- open / close ---------------------------------------------------------------------
    def __enter__(self) -> "OpenCVCamera":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _new_capture(self):
        src = self.source
        if src.kind == "sequence" and src.files:
            return _FileListCapture(src.files)
        if src.kind == "sequence" and not _PRINTF_RE.search(str(src.target)):
            return None  # a glob that matched nothing
        if src.kind == "file" and not Path(str(src.target)).is_file():
            return None
        params: list[int] = []
        api = cv2.CAP_ANY
        if src.kind == "url":
            api = cv2.CAP_FFMPEG
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
        elif src.kind == "sequence":
            api = cv2.CAP_IMAGES
        cap = cv2.VideoCapture(src.target, api, params) if params else cv2.VideoCapture(src.target, api)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def open(self) -> None:
        if self._cap is not None:
            return
        cap = self._new_capture()
        if cap is None:
            raise CameraUnavailable(f"cannot open camera source {self.source}")
        self._cap = cap
        self._apply_settings(cap)
        self._stop.clear()
        self._failure = None
        if not self.source.live:
            return
        if self.source.kind == "device":
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where supported: fewer stale frames in the driver
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.source.kind}", daemon=True)
        self._thread.start()
        try:
            self._wait_newer(-1, self.open_timeout_s)
        except CameraError as exc:
            self.close()
            raise CameraUnavailable(f"camera source {self.source} opened but delivered no frame: {exc}") from exc

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.read_timeout_s + 2.0)
            self._thread = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self.stop_recording()

    def _apply_settings(self, cap) -> None:
        results = {}
        for name, prop in _PROPS.items():
            value = self.requested[name]
            applied = False
            if value is not None:
                try:
                    applied = bool(cap.set(prop, float(value)))
                except cv2.error:
                    applied = False
            try:
                got = float(cap.get(prop))
            except cv2.error:
                got = 0.0
            # OpenCV reports 0 (or -1) for properties a backend does not know.
            results[name] = SettingResult(name, value, None if got in (0.0, -1.0) else got, applied)
        self.settings = results
        unmet = [r for r in results.values() if r.requested is not None and not r.applied]
        if unmet:
            log.info("camera %s did not take: %s", self.source, ", ".join(f"{r.name}={r.requested}" for r in unmet))

    # -- live sources: the reader thread --------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            ok, img = self._cap.read() if self._cap is not None else (False, None)
            if self._stop.is_set():
                return
            if ok and img is not None:
                self._publish(img)
                continue
            self.stats["drops"] += 1
            log.warning("camera %s dropped (drop %d)", self.source, self.stats["drops"])
            if not self.reconnect or not self._reconnect():
                with self._cond:
                    self._failure = CameraDropped(
                        f"camera {self.source} stopped delivering frames" +
                        (f"; {self.reconnect_attempts} reconnect attempt(s) failed" if self.reconnect else ""))
                    self._cond.notify_all()
                return

    def _reconnect(self) -> bool:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        for attempt in range(self.reconnect_attempts):
            if self._stop.wait(self.backoff_s * (2 ** attempt)):
                return False
            cap = self._new_capture()
            if cap is not None:
                self._cap = cap
                self._apply_settings(cap)
                self._epoch += 1
                self.stats["reconnects"] += 1
                log.info("camera %s reconnected (attempt %d)", self.source, attempt + 1)
                return True
        return False

    def _publish(self, img: np.ndarray) -> Frame:
        frame = Frame(image=img, index=self._index, monotonic_s=time.monotonic(), wall_s=time.time(), epoch=self._epoch)
        self._index += 1
        self.stats["frames"] += 1
        with self._cond:
            self._latest = frame
            self._cond.notify_all()
        with self._rec_lock:  # never write to a writer that stop_recording() is releasing
            rec = self._recording
            if rec is not None:
                try:
                    self._record(rec, img)
                except CameraError as exc:
                    log.error("%s; recording stopped", exc)
                    self._recording = None
        return frame

    def _wait_newer(self, after_index: int, timeout_s: float) -> Frame:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._latest is not None and self._latest.index > after_index:
                    return self._latest
                if self._failure is not None:
                    raise self._failure
                if self._stop.is_set():
                    raise CameraUnavailable(f"camera {self.source} is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraTimeout(f"camera {self.source}: no new frame within {timeout_s:.1f}s")
                self._cond.wait(remaining)

    # -- reading --------------------------------------------------------------------------
    def read(self, timeout_s: float = 5.0) -> Frame:
        """The next frame: for a live source the newest one not yet returned (older ones are
        skipped), for a file or sequence the next in order."""
        if self._cap is None and self._thread is None:
            if self._failure is not None:
                raise self._failure
            raise CameraUnavailable(f"camera {self.source} is not open")
        if self.source.live:
            frame = self._wait_newer(self._delivered_index, timeout_s)
            self._delivered_index = frame.index
            return frame
        ok, img = self._cap.read()
        if not ok and self.loop:
            self._rewind()
            ok, img = self._cap.read()
        if not ok or img is None:
            raise CameraEnded(f"camera source {self.source} has no more frames")
        return self._publish(img)

    def _rewind(self) -> None:
        if isinstance(self._cap, _FileListCapture) or self.source.kind == "file":
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        else:  # OpenCV's image-sequence reader cannot seek back: reopen it
            self._cap.release()
            self._cap = self._new_capture()
            if self._cap is None:
                raise CameraUnavailable(f"cannot reopen camera source {self.source}")

    def latest(self) -> Frame | None:
        with self._cond:
            return self._latest

    # -- recording (opt-in) ---------------------------------------------------------------
    def start_recording(self, path: str | Path, fps: float | None = None, fourcc: str = "MJPG") -> None:
        """Write every frame read from now on to ``path`` (e.g. ``clip.avi``). Frames are
        biometric data: record only when asked to, and keep the clip out of shared reports."""
        accepted_fps = self.settings.get("fps")
        fps = fps or (accepted_fps.accepted if accepted_fps and accepted_fps.accepted else 10.0)
        rec = Recording(path=Path(path), fps=float(fps), fourcc=fourcc)
        rec.path.parent.mkdir(parents=True, exist_ok=True)
        with self._rec_lock:
            self._recording = rec
        log.info("recording camera %s to %s", self.source, rec.path)

    def stop_recording(self) -> Recording | None:
        with self._rec_lock:
            rec, self._recording = self._recording, None
            if rec is not None and rec.writer is not None:
                rec.writer.release()
                rec.writer = None
        return rec

    @staticmethod
    def _record(rec: Recording, img: np.ndarray) -> None:
        if rec.writer is None:
            h, w = img.shape[:2]
            rec.writer = cv2.VideoWriter(str(rec.path), cv2.VideoWriter_fourcc(*rec.fourcc), rec.fps, (w, h))
            if not rec.writer.isOpened():
                raise CameraError(f"cannot write a {rec.fourcc} clip to {rec.path}")
        rec.writer.write(img)
        rec.frames += 1
