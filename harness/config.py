"""Station file (TOML) -> typed ``Station``. The reference is hardware.md, "Station file".

Every error is one ``StationConfigError`` naming the file, the key and what was expected.
Relative paths are resolved against the station file's folder. Devices are given by URL:
``pcsc:Virtual PCD 00 00``; ``serial:/dev/ttyUSB0``, a bare ``/dev/...`` path or
``socket://127.0.0.1:7001``; a camera URL (``http://.../stream.mjpg``, ``rtsp://...``), index
(``0``, ``camera:0``), file or image sequence. Keys this loader does not know are kept in
``extra`` and logged: other parts of the station may add their own.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

SUBJECT_ROLES = ("holder", "carer", "impostor")
SERIAL_SCHEMES = ("serial", "socket", "rfc2217", "loop")
CAMERA_SCHEMES = ("http", "https", "rtsp", "rtsps", "rtmp", "udp", "tcp")


class StationConfigError(ValueError):
    """A station file that cannot be used: the message names the file, the key and the expectation."""

    def __init__(self, path: Path | str, key: str, expected: str):
        where = f"{path}: {key}" if key else str(path)
        super().__init__(f"{where}: {expected}")
        self.path = Path(path)
        self.key = key
        self.expected = expected


# -- device URLs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceUrl:
    scheme: str  # pcsc, serial, socket, rfc2217, loop, camera, http, https, rtsp, file, sequence
    target: str  # reader name, device path, host:port, camera index, URL or path
    text: str  # as written in the station file

    @property
    def serial_url(self) -> str:
        """What ``serial.serial_for_url`` takes."""
        if self.scheme == "serial":
            return self.target
        return f"{self.scheme}://{self.target}"


_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-]+:[0-9]{1,5}([/?].*)?$|^\[[0-9a-fA-F:]+\]:[0-9]{1,5}([/?].*)?$")


def parse_device_url(text: str, kind: str) -> DeviceUrl:
    """Parse a device URL of ``kind`` ("pcsc", "serial" or "camera"). Raises ValueError saying what
    was expected (the loader adds the file and key)."""
    if kind == "pcsc":
        name = text[len("pcsc:"):] if text.startswith("pcsc:") else text
        if not name.strip():
            raise ValueError("a PC/SC reader name such as 'pcsc:Virtual PCD 00 00'")
        return DeviceUrl("pcsc", name, text)
    if kind == "serial":
        if text.startswith("/"):
            return DeviceUrl("serial", text, text)
        scheme, sep, rest = text.partition(":")
        if scheme == "serial" and rest and not rest.startswith("//"):
            return DeviceUrl("serial", rest, text)
        if sep and scheme in SERIAL_SCHEMES and rest.startswith("//"):
            target = rest[2:]
            if scheme in ("socket", "rfc2217") and not _HOSTPORT.match(target):
                raise ValueError(f"{scheme}://HOST:PORT, got {text!r}")
            return DeviceUrl(scheme, target, text)
        raise ValueError(f"'serial:/dev/ttyUSB0', a /dev path or 'socket://HOST:PORT', got {text!r}")
    if kind == "camera":
        if text.isdigit():
            return DeviceUrl("camera", text, text)
        if text.startswith("camera:"):
            if not text[7:].isdigit():
                raise ValueError(f"'camera:<index>', got {text!r}")
            return DeviceUrl("camera", text[7:], text)
        scheme, sep, rest = text.partition("://")
        if sep and scheme.lower() in CAMERA_SCHEMES:
            if not rest:
                raise ValueError(f"a host after {scheme}://")
            return DeviceUrl(scheme.lower(), text, text)
        if sep and scheme != "file":
            raise ValueError(f"a camera URL ({', '.join(CAMERA_SCHEMES)}), an index or a path, got {text!r}")
        path = rest if sep else text
        seq = "%" in path or any(c in path for c in "*?[")
        return DeviceUrl("sequence" if seq else "file", path, text)
    raise ValueError(f"unknown device kind {kind}")


# -- the station --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StationInfo:
    name: str
    simulated: bool = False
    state_dir: Path | None = None


@dataclass(frozen=True)
class PcscConfig:
    reader: str
    reference_reader: str | None = None
    socket: Path | None = None  # PCSCLITE_CSOCK_NAME for a private pcscd


@dataclass(frozen=True)
class FacesConfig:
    dataset: Path | None = None
    low_fidelity: bool = False


@dataclass(frozen=True)
class CardConfig:
    id: str
    persona: Path
    profile: str = "standard"
    placer_slot: int | None = None
    control: str | None = None  # simulated cards: the card process's control port
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RigConfig:
    url: DeviceUrl
    baudrate: int = 115200
    timeout_s: float = 2.0


@dataclass(frozen=True)
class CameraConfig:
    url: DeviceUrl
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    exposure: float | None = None
    control: str | None = None  # the simulated presenter's HTTP control

    @property
    def source(self) -> str | int:
        """What ``drivers.camera.OpenCVCamera`` takes."""
        return int(self.url.target) if self.url.scheme == "camera" else self.url.target


@dataclass(frozen=True)
class DutConfig:
    adapter: str = "reference"
    url: str | None = None
    # firmware features the lab declares the reader has (e.g. after the N7 update): a scenario
    # whose feature is declared here fails when the reader lacks it, instead of skipping
    expect_features: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EligibilityConfig:
    url: str


@dataclass(frozen=True)
class SubjectConfig:
    id: str  # identity name in the face dataset
    card: str | None = None  # the card whose photo shows this subject
    role: str = "holder"


@dataclass(frozen=True)
class Station:
    path: Path
    station: StationInfo
    pcsc: PcscConfig | None = None
    faces: FacesConfig = field(default_factory=FacesConfig)
    cards: tuple[CardConfig, ...] = ()
    rig: RigConfig | None = None
    camera: CameraConfig | None = None
    dut: DutConfig | None = None
    eligibility: EligibilityConfig | None = None
    subjects: tuple[SubjectConfig, ...] = ()
    limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def card(self, card_id: str) -> CardConfig:
        for c in self.cards:
            if c.id == card_id:
                return c
        raise KeyError(f"station {self.path} has no card {card_id!r}")

    def devices(self) -> set[str]:
        """Which device kinds this station has (for ``@pytest.mark.requires``)."""
        have = {"pcsc": self.pcsc, "rig": self.rig, "camera": self.camera, "dut": self.dut,
                "eligibility": self.eligibility, "cards": self.cards or None}
        return {k for k, v in have.items() if v is not None}


# -- loading ------------------------------------------------------------------------------------
class _Section:
    """Typed access to one table, with errors that name the file and the full key."""

    def __init__(self, path: Path, prefix: str, table: Any):
        self.path = path
        self.prefix = prefix
        if not isinstance(table, Mapping):
            raise StationConfigError(path, prefix, f"a table, got {_tname(table)}")
        self.table = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, expected: str) -> StationConfigError:
        return StationConfigError(self.path, self.key(name), expected)

    def get(self, name: str, types: type | tuple[type, ...], required: bool = False, default: Any = None,
            expected: str | None = None) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required:
                raise self.error(name, f"missing; expected {expected or _tdesc(types)}")
            return default
        value = self.table[name]
        types_t = types if isinstance(types, tuple) else (types,)
        if isinstance(value, bool) and bool not in types_t:
            raise self.error(name, f"expected {expected or _tdesc(types)}, got a boolean")
        if float in types_t and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, types_t):
            raise self.error(name, f"expected {expected or _tdesc(types)}, got {_tname(value)} {value!r}")
        return value

    def path_value(self, name: str, required: bool = False) -> Path | None:
        raw = self.get(name, str, required=required, expected="a path (relative to the station file's folder)")
        if raw is None:
            return None
        if not raw.strip():
            raise self.error(name, "a non-empty path")
        p = Path(raw).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def url(self, name: str, kind: str, required: bool = True) -> DeviceUrl | None:
        self.used.add(name)
        if name not in self.table:
            if required:
                raise self.error(name, f"missing; expected a {kind} device URL")
            return None
        raw = self.table[name]
        if kind == "camera" and isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str):
            raise self.error(name, f"expected a {kind} device URL string, got {_tname(raw)}")
        try:
            return parse_device_url(raw, kind)
        except ValueError as exc:
            raise self.error(name, f"expected {exc}") from None

    def extra(self) -> dict[str, Any]:
        rest = {k: v for k, v in self.table.items() if k not in self.used}
        for k in rest:
            log.info("%s: %s is not a key facehil's loader knows; kept as extra", self.path, self.key(k))
        return rest


def _tname(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _tdesc(types: type | tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table"}
    types_t = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in types_t)


def load_station(path: str | Path) -> Station:
    """Read and validate a station file. Raises StationConfigError."""
    path = Path(path).expanduser().resolve()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StationConfigError(path, "", f"cannot read the station file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise StationConfigError(path, "", "expected UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise StationConfigError(path, "", f"not valid TOML: {exc}") from None
    return parse_station(data, path)


def parse_station(data: Mapping[str, Any], path: Path) -> Station:
    """Validate an already-parsed station table (``path`` names it in errors, anchors relative paths)."""
    top = _Section(path, "", data)
    st = _Section(path, "station", top.get("station", dict, required=True, expected="a [station] table"))
    station = StationInfo(name=st.get("name", str, required=True), simulated=st.get("simulated", bool, default=False),
                          state_dir=st.path_value("state_dir"))
    _nonempty(st, "name", station.name)
    extra: dict[str, Any] = {}
    if st.extra():
        extra["station"] = st.extra()

    pcsc = None
    if "pcsc" in data:
        s = _Section(path, "pcsc", top.get("pcsc", dict))
        reader = s.url("reader", "pcsc")
        ref = s.url("reference_reader", "pcsc", required=False)
        pcsc = PcscConfig(reader=reader.target, reference_reader=ref.target if ref else None,
                          socket=s.path_value("socket"))
        _keep(extra, s)

    faces = FacesConfig()
    if "faces" in data:
        s = _Section(path, "faces", top.get("faces", dict))
        faces = FacesConfig(dataset=s.path_value("dataset"), low_fidelity=s.get("low_fidelity", bool, default=False))
        _keep(extra, s)

    cards = _cards(path, top)
    rig = None
    if "rig" in data:
        s = _Section(path, "rig", top.get("rig", dict))
        rig = RigConfig(url=s.url("url", "serial"), baudrate=_positive(s, "baudrate", int, 115200),
                        timeout_s=_positive(s, "timeout_s", float, 2.0))
        _keep(extra, s)

    camera = None
    if "camera" in data:
        s = _Section(path, "camera", top.get("camera", dict))
        url = s.url("url", "camera")
        if url.scheme in ("file", "sequence") and not Path(url.target).is_absolute():
            url = DeviceUrl(url.scheme, str((path.parent / url.target).resolve()), url.text)
        camera = CameraConfig(url=url, width=_positive(s, "width", int, None), height=_positive(s, "height", int, None),
                              fps=_positive(s, "fps", float, None), exposure=s.get("exposure", float),
                              control=s.get("control", str))
        _keep(extra, s)

    dut = None
    if "dut" in data:
        s = _Section(path, "dut", top.get("dut", dict))
        adapter, url = s.get("adapter", str, default="reference"), s.get("url", str)
        expected = "an array of feature names, e.g. [\"visual_check_registration\"]"
        features = s.get("expect_features", list, default=[], expected=expected)
        if not all(isinstance(f, str) and f.strip() for f in features):
            raise s.error("expect_features", f"{expected}, got {features!r}")
        dut = DutConfig(adapter=adapter, url=url, expect_features=tuple(features), extra=s.extra())

    eligibility = None
    if "eligibility" in data:
        s = _Section(path, "eligibility", top.get("eligibility", dict))
        eligibility = EligibilityConfig(url=s.get("url", str, required=True))
        _keep(extra, s)

    subjects = _subjects(path, top, {c.id for c in cards})
    limits = _limits(path, top)
    for k in top.extra():
        if k not in ("station", "pcsc", "faces", "cards", "rig", "camera", "dut", "eligibility", "subjects", "limits"):
            extra[k] = data[k]
    return Station(path=path, station=station, pcsc=pcsc, faces=faces, cards=cards, rig=rig, camera=camera,
                   dut=dut, eligibility=eligibility, subjects=subjects, limits=limits, extra=extra)


def _keep(extra: dict[str, Any], s: _Section) -> None:
    rest = s.extra()
    if rest:
        extra[s.prefix] = rest


def _nonempty(s: _Section, name: str, value: str) -> None:
    if not value.strip():
        raise s.error(name, "a non-empty string")


def _positive(s: _Section, name: str, typ: type, default):
    value = s.get(name, typ, default=default)
    if value is not None and value <= 0:
        raise s.error(name, f"expected a positive number, got {value!r}")
    return value


def _array_of_tables(path: Path, top: _Section, name: str) -> list[_Section]:
    items = top.get(name, list, default=[], expected=f"an array of tables ([[{name}]])")
    return [_Section(path, f"{name}[{i}]", item) for i, item in enumerate(items)]


def _cards(path: Path, top: _Section) -> tuple[CardConfig, ...]:
    out: list[CardConfig] = []
    ids: set[str] = set()
    slots: dict[int, str] = {}
    for s in _array_of_tables(path, top, "cards"):
        card_id = s.get("id", str, required=True)
        _nonempty(s, "id", card_id)
        if card_id in ids:
            raise s.error("id", f"a unique card id; {card_id!r} is used twice")
        ids.add(card_id)
        slot = s.get("placer_slot", int)
        if slot is not None:
            if slot < 0:
                raise s.error("placer_slot", f"a deck slot number >= 0, got {slot}")
            if slot in slots:
                raise s.error("placer_slot", f"a slot no other card uses; slot {slot} holds {slots[slot]!r}")
            slots[slot] = card_id
        control = s.get("control", (str, int))
        out.append(CardConfig(id=card_id, persona=s.path_value("persona", required=True),
                              profile=s.get("profile", str, default="standard"), placer_slot=slot,
                              control=None if control is None else str(control), extra=s.extra()))
    return tuple(out)


def _subjects(path: Path, top: _Section, card_ids: set[str]) -> tuple[SubjectConfig, ...]:
    out = []
    for s in _array_of_tables(path, top, "subjects"):
        sid = s.get("id", str, required=True, expected="an identity name from the face dataset")
        _nonempty(s, "id", sid)
        if any(c in sid for c in " =*"):
            raise s.error("id", "an identity name without spaces, '=' or '*' (it travels on the rig line)")
        card = s.get("card", str)
        if card is not None and card not in card_ids:
            raise s.error("card", f"the id of a [[cards]] entry ({', '.join(sorted(card_ids)) or 'none defined'})")
        role = s.get("role", str, default="holder" if card else "impostor")
        if role not in SUBJECT_ROLES:
            raise s.error("role", f"one of {', '.join(SUBJECT_ROLES)}, got {role!r}")
        s.extra()
        out.append(SubjectConfig(id=sid, card=card, role=role))
    return tuple(out)


def _limits(path: Path, top: _Section) -> dict[str, dict[str, Any]]:
    """``[limits.<name>]``, checked by harness.measure (the code that judges them)."""
    from harness.measure import MeasurementError, parse_limits

    table = top.get("limits", dict, default={}, expected="a table of [limits.<name>] tables")
    out: dict[str, dict[str, Any]] = {}
    for name, entry in table.items():
        try:
            out.update(parse_limits({name: entry}, source=str(path)))
        except MeasurementError as exc:
            msg = str(exc)
            for prefix in (f"{path}: ", f"limits.{name}"):
                msg = msg[len(prefix):] if msg.startswith(prefix) else msg
            key = f"limits.{name}"
            m = re.match(r"^\.([A-Za-z_]+)", msg)  # "limits.x.high must be ..." names a sub-key
            if m:
                key, msg = f"{key}.{m.group(1)}", msg[m.end():]
            raise StationConfigError(path, key, msg.lstrip(":. ") or "a valid limit") from None
    return out
