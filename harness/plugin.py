"""facehil's pytest plugin (registered through the `pytest11` entry point).

Station fixtures (the plugs of a scenario), markers and the station's life cycle:

- ``--station FILE`` runs against the devices a station file describes. Without it the
  simulated station (private pcscd, temporary state folder) is started on first use of a
  device fixture and stopped at the end of the session; ``--faults NAME,...`` starts its
  reference reader with deliberate faults (to prove a suite catches them).
- Fixtures: ``station`` (harness.config.Station), ``cards`` (harness.deck.Deck), ``rig``,
  ``camera``, ``dut`` (the reader under test), ``card_reader`` (drivers.pcsc.PcscReader) and
  ``measure`` (from harness.recording). Device connections live for the session; after every
  test that used one, a teardown that always runs leaves the station safe: card back in the
  deck, subject display blank, lighting default, relay on, reader idle in face mode. The first
  such test gets the same safe state first (a station may be left with a card on the reader).
- Markers: ``requires("card_placer", "power_relay", ...)`` skips, naming the missing device,
  on a station without it, and ``requires("reader_events", ...)`` on a reader adapter that
  cannot tell it (drivers.reader.READER_CAPABILITIES: a screen adapter shows only screens); ``flow(name)`` names the reader flow (selection and reports);
  ``health`` marks the station health check: once a health test fails, every later
  non-health test is skipped; ``smoke`` marks the scenarios of the smoke suite;
  ``clause("N10", ...)`` cites the notice's clauses a scenario checks (harness/clauses.py).

Recording (``--db``/``--record``/``--suite``) and the ``measure`` fixture live in
harness/recording.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from drivers.reader import READER_CAPABILITIES
from drivers.station_auth import TOKEN_ENV as STATION_TOKEN_ENV

log = logging.getLogger(__name__)

PCSC_SOCKET_ENV = "PCSCLITE_CSOCK_NAME"
IDLE_SCREEN = "idle"
FACE_MODE = "face"
READER_IDLE_TIMEOUT_S = 15.0

# Device names for @pytest.mark.requires, and what each means on a station.
DEVICES: dict[str, str] = {
    "pcsc": "a PC/SC reader for the reader under test ([pcsc] reader)",
    "reference_reader": "a reference PC/SC reader ([pcsc] reference_reader)",
    "cards": "a card deck ([[cards]])",
    "rig": "a rig controller ([rig] url)",
    "card_placer": "a card placer on the rig (rig capability 'placer')",
    "power_relay": "a power relay on the rig (rig capability 'power')",
    "lighting": "controllable lighting on the rig (rig capability 'light')",
    "subject_display": "a subject display on the rig (rig capability 'display')",
    "camera": "a reference camera ([camera] url)",
    "dut": "the reader under test's control port ([dut] url)",
    "eligibility": "an eligibility service ([eligibility] url)",
}
RIG_CAPABILITIES = {"card_placer": "placer", "power_relay": "power", "lighting": "light",
                    "subject_display": "display"}

_SESSION_KEY: Any = pytest.StashKey["StationSession"]()


class StationUnavailable(RuntimeError):
    """The station could not be loaded or started; every device fixture reports this."""


class StationNotSafe(RuntimeError):
    """The teardown could not bring the station back to its safe state."""


# ---------------------------------------------------------------------------------------------
# Options and configuration


def pytest_addoption(parser):
    group = parser.getgroup("facehil")
    group.addoption("--station", action="store", default=None,
                    help="station file (TOML); without it the simulated station is started")
    group.addoption("--db", dest="facehil_db", action="store", default=None,
                    help="record the run into this database (SQLite path or URL, e.g. postgresql://...)")
    group.addoption("--record", dest="facehil_record", action="store_true", default=False,
                    help="record the run into FACEHIL_DB or the default SQLite file")
    group.addoption("--suite", dest="facehil_suite", action="store", default=None,
                    help="suite name stored with the recorded run (smoke, nightly, ...)")
    group.addoption("--faults", dest="facehil_faults", action="store", default=None,
                    help="simulated station only: start the reference reader with these faults (NAME,...)")
    group.addoption("--sim-firmware", dest="facehil_sim_firmware", action="store", default=None,
                    help="simulated station only: the reader firmware version to boot (default: the sim's)")
    group.addoption("--sim-adapter", dest="facehil_sim_adapter", action="store", default=None,
                    help="simulated station only: drive its reader through this adapter (screen: the camera on "
                         "its panel and the rig's finger; the control port serves only [staff])")
    group.addoption("--sim-state-dir", dest="facehil_sim_state_dir", action="store", default=None,
                    help="simulated station only: keep its state and logs in this folder (default: a temp folder, removed)")
    from harness import clauses  # the clause(...) marker: traceability to the notice

    clauses.addoption(parser)


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(*devices): skip unless the station has these devices "
                                       f"({', '.join(DEVICES)}) and its reader's adapter can tell these "
                                       f"({', '.join(READER_CAPABILITIES)})")
    config.addinivalue_line("markers", "flow(name): the reader flow a scenario exercises")
    config.addinivalue_line("markers", "health: the station health check; a failure skips every later scenario")
    config.addinivalue_line("markers", "smoke: part of the smoke suite")
    from harness import clauses
    from harness.recording import register  # the `measure` fixture, and run recording with --db/--record

    clauses.register(config)  # clause(*ids) marker, checked at collection; ids into JUnit XML and records
    register(config)
    _configure_station(config)


def _configure_station(config: pytest.Config) -> None:
    path = config.getoption("station", None)
    sim_only = {"--faults": config.getoption("facehil_faults", None),
                "--sim-firmware": config.getoption("facehil_sim_firmware", None),
                "--sim-state-dir": config.getoption("facehil_sim_state_dir", None),
                "--sim-adapter": config.getoption("facehil_sim_adapter", None)}
    if path:
        given = [k for k, v in sim_only.items() if v]
        if given:
            raise pytest.UsageError(f"{', '.join(given)} only apply to the simulated station; drop --station")
    elif sim_only["--faults"]:
        from sim.reader.flow import Faults  # the simulated reader's fault names (the sim station factory's)

        try:
            Faults.parse(sim_only["--faults"])
        except ValueError as exc:
            raise pytest.UsageError(f"--faults: {exc}") from None
    session = StationSession(config, station_path=Path(path) if path else None,
                             faults=sim_only["--faults"], firmware=sim_only["--sim-firmware"],
                             state_dir=sim_only["--sim-state-dir"])
    if path:
        try:
            session.load_file()
        except StationUnavailable as exc:
            raise pytest.UsageError(f"--station: {exc}") from None
    config.stash[_SESSION_KEY] = session
    config.pluginmanager.register(StationGate(session), "facehil-station-gate")
    config.add_cleanup(session.close)


def pytest_report_header(config):
    session = config.stash.get(_SESSION_KEY, None)
    if session is None:
        return None
    if session.station_path:
        return f"facehil station: {session.station_path}"
    faults = f", reader faults: {session.faults}" if session.faults else ""
    return f"facehil station: simulated (started on first use{faults})"


# ---------------------------------------------------------------------------------------------
# The station session: load or start, open devices lazily, make safe, stop


class StationSession:
    """Everything the fixtures share for one pytest session (no module-level state)."""

    def __init__(self, config: pytest.Config, *, station_path: Path | None, faults: str | None = None,
                 firmware: str | None = None, state_dir: str | None = None):
        self.config = config
        self.station_path = station_path
        self.faults = faults
        self.firmware = firmware
        self.keep_state_dir = Path(state_dir).resolve() if state_dir else None
        self.sim_state_dir: Path | None = None
        self._station = None
        self._deck = None
        self._failure: str | None = None
        self._rig = None
        self._rig_info = None
        self._dut = None
        self._annotated = False
        self._made_safe = False
        self._previous_socket_env: str | None = os.environ.get(PCSC_SOCKET_ENV)
        self._previous_token_env: str | None = os.environ.get(STATION_TOKEN_ENV)
        self._previous_sigterm: Any = None

    # -- the station --------------------------------------------------------------------------
    @property
    def simulated_here(self) -> bool:
        return self.sim_state_dir is not None

    def load_file(self) -> None:
        from harness.config import StationConfigError, load_station
        from harness.recording import set_station_limits

        assert self.station_path is not None
        try:
            station = load_station(self.station_path)
        except StationConfigError as exc:
            raise StationUnavailable(str(exc)) from None
        if station.pcsc is not None and station.pcsc.socket is not None:
            # libpcsclite reads this once per process: before any PC/SC call of this session
            os.environ[PCSC_SOCKET_ENV] = str(station.pcsc.socket)
        set_station_limits(self.config, station.limits, source=str(station.path))
        if station.station.simulated:
            from sim.station import TOKEN_ENV, StationError, read_station_token, reissue_disposable_cards

            token = read_station_token(station.station.state_dir)
            if token:  # the station's card control ports take it from here (sim/card/control.py)
                os.environ[TOKEN_ENV] = token
            try:
                reissue_disposable_cards(station.cards, station.station.state_dir)
            except StationError as exc:
                raise StationUnavailable(str(exc)) from None
        self._station = station

    def station(self):
        """The Station, starting the simulated one on first use."""
        if self._station is not None:
            return self._station
        if self._failure is not None:
            raise StationUnavailable(self._failure)
        try:
            self._start_sim()
        except StationUnavailable as exc:
            self._failure = str(exc)
            raise
        return self._station

    def _start_sim(self) -> None:
        from sim.station import sim_up  # the harness uses sim only as the sim station factory

        if self.keep_state_dir is not None:
            state_dir = self.keep_state_dir
        else:
            state_dir = Path(tempfile.mkdtemp(prefix="facehil-sim-"))
        self.sim_state_dir = state_dir
        # the `facehil sim up` station (deck in the rig's placer, reference card in the reference
        # reader), minus its demo card on the reader: the station a scenario expects
        options: dict[str, Any] = {"place_card": False}
        if self.faults:
            options["reader_faults"] = self.faults
        kwargs = {"firmware": self.firmware} if self.firmware else {}
        self._stop_on_sigterm()
        started = time.monotonic()
        try:
            path = sim_up(state_dir, private_pcscd=True, options=options, **kwargs)
        except Exception as exc:  # any part failing to start: one clear error for every fixture
            raise StationUnavailable(f"the simulated station did not start ({type(exc).__name__}: {exc}); "
                                     f"logs in {state_dir / 'logs'}") from exc
        log.info("simulated station up in %.1f s: %s", time.monotonic() - started, path)
        adapter = self.config.getoption("facehil_sim_adapter", None)
        if adapter == "screen":  # the same station, its reader seen and touched, not spoken to
            import tomllib

            import tomli_w

            from harness.commands.screens import screen_station

            screen_path = path.with_name("screen-station.toml")
            screen_path.write_text(tomli_w.dumps(screen_station(tomllib.loads(path.read_text()))))
            path = screen_path
        elif adapter not in (None, "reference"):
            raise StationUnavailable(f"--sim-adapter {adapter!r}: the simulated station offers reference or screen")
        self.station_path = path
        self.load_file()

    def _stop_on_sigterm(self) -> None:
        """SIGTERM ends the session like Ctrl-C, so the station we started is stopped, not orphaned
        (its processes run in sessions of their own)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        self._previous_sigterm = signal.signal(signal.SIGTERM, interrupt)

    def deck(self):
        if self._deck is None:
            from harness.deck import DeckError, load_deck

            try:
                self._deck = load_deck(self.station())
            except DeckError as exc:
                raise StationUnavailable(str(exc)) from None
        return self._deck

    # -- devices ------------------------------------------------------------------------------
    def _need(self, device: str):
        station = self.station()
        section = {"rig": station.rig, "dut": station.dut, "camera": station.camera,
                   "pcsc": station.pcsc}[device]
        if section is None or (device == "dut" and not station.dut.url):
            pytest.skip(f"station {station.path} lacks {device} ({DEVICES[device]})")
        return section

    def rig(self):
        if self._rig is None:
            from drivers.rig import RigController, RigError

            cfg = self._need("rig")
            rig = RigController(cfg.url.serial_url, baudrate=cfg.baudrate, timeout_s=cfg.timeout_s)
            try:
                self._rig_info = rig.open()
            except RigError as exc:
                raise StationUnavailable(f"rig controller at {cfg.url.text} does not answer: {exc}") from exc
            self._rig = rig
        return self._rig

    def dut(self):
        if self._dut is None:
            from drivers.reader import ReaderError, open_reader

            cfg = self._need("dut")
            try:
                self._dut = self._open_adapter(cfg)
            except ReaderError as exc:
                raise StationUnavailable(f"reader under test at {cfg.url} does not answer: {exc}") from exc
            self._annotate()
        return self._dut

    def _open_adapter(self, cfg):
        """An adapter with ``from_station`` (e.g. the screen adapter) takes the whole station file."""
        from drivers.reader import load_adapter, open_reader

        cls = load_adapter(cfg.adapter)
        if not hasattr(cls, "from_station"):
            return open_reader(cfg.url, cfg.adapter)
        dut = cls.from_station(self.station())
        dut.open()
        return dut

    def open_camera(self):
        cfg = self._need("camera")
        from drivers.camera import CameraError, OpenCVCamera

        cam = OpenCVCamera(cfg.source, width=cfg.width, height=cfg.height, fps=cfg.fps, exposure=cfg.exposure)
        try:
            cam.open()
        except CameraError as exc:
            raise StationUnavailable(f"camera {cfg.url.text} cannot be opened: {exc}") from exc
        return cam

    def card_reader(self):
        cfg = self._need("pcsc")
        from drivers.pcsc import PcscError, PcscReader

        try:
            return PcscReader(cfg.reader)
        except PcscError as exc:
            raise StationUnavailable(f"PC/SC reader {cfg.reader!r}: {exc}") from exc

    def capabilities(self) -> set[str]:
        """Which of DEVICES this station has (opens the rig to read its capabilities), and which
        READER_CAPABILITIES its reader's adapter has."""
        station = self.station()
        have = set()
        if station.pcsc is not None:
            have.add("pcsc")
            if station.pcsc.reference_reader:
                have.add("reference_reader")
        if station.cards:
            have.add("cards")
        if station.camera is not None:
            have.add("camera")
        if station.dut is not None and station.dut.url:
            have.add("dut")
            from drivers.reader import ReaderError, adapter_capabilities, load_adapter

            try:
                have |= adapter_capabilities(load_adapter(station.dut.adapter))
            except ReaderError as exc:
                raise StationUnavailable(f"[dut] adapter {station.dut.adapter!r}: {exc}") from exc
        if station.eligibility is not None:
            have.add("eligibility")
        if station.rig is not None:
            have.add("rig")
            caps = set(self.rig_info().caps)
            have |= {name for name, cap in RIG_CAPABILITIES.items() if cap in caps}
        return have

    def rig_info(self):
        self.rig()
        return self._rig_info

    def _annotate(self) -> None:
        """Complete the recorded run with the reader's firmware and the deck (once)."""
        if self._annotated or self._dut is None:
            return
        self._annotated = True
        from harness.recording import annotate_run

        try:
            info = self._dut.info()
            station = self.station()
            deck = [{"id": c.id, "profile": c.profile, "registered": c.registered} for c in self.deck()]
            fields: dict[str, Any] = {"reader_firmware": info.version, "reader_features": sorted(info.features),
                                      "card_deck": deck, "dataset_hash": self._dataset_hash()}
            if self.simulated_here:  # the run started without a station file: name the one we made
                fields["station_name"] = station.station.name
                fields["station_file_hash"] = hashlib.sha256(station.path.read_bytes()).hexdigest()
            annotate_run(self.config, **fields)
        except Exception as exc:  # metadata must never fail a run
            log.warning("could not annotate the run: %s", exc)

    def _dataset_hash(self) -> str | None:
        """A hash of the images of the station's subjects (not of a whole dataset: it may be huge)."""
        from harness.facedata import list_identities, tree_hash

        station = self.station()
        root = station.faces.dataset
        if root is None:
            return None
        wanted = {s.id for s in station.subjects} | {c.holder for c in self.deck() if c.holder}
        files = [p for ident in list_identities(root) if ident.name in wanted for p in ident.images]
        return tree_hash(files) if files else None

    # -- per-test safety ----------------------------------------------------------------------
    def prepare_dut(self) -> None:
        """Before a test: the reader is idle, and the test sees only its own events."""
        dut = self.dut()
        try:
            dut.wait_for_screen(IDLE_SCREEN, READER_IDLE_TIMEOUT_S)
        except Exception as exc:
            raise StationNotSafe(f"the reader under test is not idle before the test: {exc}") from exc
        dut.clear_events()

    def make_safe_first(self) -> None:
        """Before the first test that uses a device: the station as its last user left it may not be
        safe (`facehil sim up` leaves a card on the reader), so make it safe once, reader included."""
        if self._made_safe:
            return
        station = self.station()
        if station.dut is not None and station.dut.url:
            try:
                self.dut()
            except StationUnavailable as exc:  # the dut fixture reports it to the tests that use it
                log.warning("reader under test not reached for the initial safe state: %s", exc)
        self.make_safe()
        self._made_safe = True

    def make_safe(self) -> None:
        """After a test (always): card removed, subject blank, lighting default, relay on, reader idle."""
        problems: list[str] = []
        if self._station is None:
            return
        if self._station.rig is not None:
            problems += self._rig_safe()
        if self._dut is not None:
            problems += self._reader_idle()
        if problems:
            raise StationNotSafe("station not returned to a safe state: " + "; ".join(problems))

    def _rig_safe(self) -> list[str]:
        from drivers.rig import RigError

        try:
            rig = self.rig()
        except StationUnavailable as exc:
            return [str(exc)]
        problems = []
        try:
            rig.reset()  # card back to the deck, default lighting, blank display
        except RigError as exc:
            problems.append(f"rig reset failed: {exc}")
            for step in (rig.remove_card, rig.blank_display):
                try:
                    step()
                except RigError as exc2:
                    problems.append(f"rig {step.__name__} failed: {exc2}")
        try:
            if "power" in self._rig_info.caps and not rig.status().power_on:
                rig.power_on()
        except RigError as exc:
            problems.append(f"rig power on failed: {exc}")
        return problems

    def _reader_idle(self) -> list[str]:
        from drivers.reader import ReaderError

        dut = self._dut
        try:
            dut.wait_for_screen(IDLE_SCREEN, READER_IDLE_TIMEOUT_S)
            if dut.screen().mode != FACE_MODE:
                dut.staff_face_mode()  # what staff do after a visual check; the scenario judged it already
            return []
        except ReaderError as exc:
            return [f"the reader did not return to idle: {exc}"]

    # -- end of session -----------------------------------------------------------------------
    def close(self) -> None:
        # what this session put in the environment must not reach a later session of this process
        for name, before in ((PCSC_SOCKET_ENV, self._previous_socket_env),
                             (STATION_TOKEN_ENV, self._previous_token_env)):
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
        for name in ("_dut", "_rig"):
            dev = getattr(self, name)
            if dev is not None:
                try:
                    dev.close()
                except Exception as exc:
                    log.warning("closing %s: %s", name[1:], exc)
                setattr(self, name, None)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if self.sim_state_dir is not None:
            from sim.station import sim_down

            try:
                sim_down(self.sim_state_dir)
            finally:
                if self.keep_state_dir is None and self._failure is None:  # a failed start keeps its logs
                    shutil.rmtree(self.sim_state_dir, ignore_errors=True)
                self.sim_state_dir = None


def _session(request: pytest.FixtureRequest) -> StationSession:
    return request.config.stash[_SESSION_KEY]


def _unavailable(exc: Exception):
    pytest.fail(f"station unavailable: {exc}", pytrace=False)


def _device(get):
    """``get()``, or fail the test with the station's own message (and no chained traceback)."""
    try:
        return get()
    except (StationUnavailable, StationNotSafe) as exc:
        error = exc
    _unavailable(error)


# ---------------------------------------------------------------------------------------------
# Markers: requires, health


class StationGate:
    """Skips a test whose required devices the station lacks, or any test after a failed health check."""

    def __init__(self, session: StationSession):
        self.session = session
        self.health_failed: list[str] = []

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if self.health_failed and item.get_closest_marker("health") is None:
            pytest.skip(f"station health check failed ({self.health_failed[0]})")
        needed: list[str] = []
        for mark in item.iter_markers("requires"):
            needed += [str(a) for a in mark.args]
        if not needed:
            return
        known = DEVICES | READER_CAPABILITIES
        unknown = [d for d in needed if d not in known]
        if unknown:
            pytest.fail(f"requires() names unknown device(s) {', '.join(unknown)}; known: {', '.join(known)}",
                        pytrace=False)
        have = _device(self.session.capabilities)
        missing = [d for d in needed if d not in have and d in DEVICES]
        if missing:
            pytest.skip("station lacks " + "; ".join(f"{d} ({DEVICES[d]})" for d in missing))
        cannot = [d for d in needed if d not in have and d in READER_CAPABILITIES]
        if cannot:
            adapter = self.session.station().dut.adapter
            pytest.skip(f"the reader's {adapter!r} adapter cannot tell " + "; ".join(
                f"{d} ({READER_CAPABILITIES[d]})" for d in cannot))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        """What the reader's screen cannot tell (drivers.screen_reader.NotVisible) skips, saying what."""
        outcome = yield
        report = outcome.get_result()
        if call.excinfo is not None and report.failed and call.excinfo.typename == "NotVisible":
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0,
                               f"Skipped: not visible to a black-box run: {call.excinfo.value}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed and "health" in report.keywords:
            self.health_failed.append(report.nodeid)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def station(request: pytest.FixtureRequest):
    """The station (harness.config.Station); the simulated one is started on first use."""
    return _device(_session(request).station)


@pytest.fixture(scope="session")
def cards(request: pytest.FixtureRequest):
    """The card deck with each card's persona data (harness.deck.Deck)."""
    return _device(_session(request).deck)


@pytest.fixture
def _facehil_safe(request: pytest.FixtureRequest):
    """Set up first, torn down last by every device fixture: the station's safe state, always."""
    session = _session(request)
    _device(session.make_safe_first)
    yield session
    session.make_safe()


@pytest.fixture
def rig(_facehil_safe: StationSession):
    """The rig controller (drivers.rig.RigController)."""
    return _device(_facehil_safe.rig)


@pytest.fixture
def dut(_facehil_safe: StationSession):
    """The reader under test (drivers.reader.ReaderUnderTest), idle, with its event history cleared."""
    _device(_facehil_safe.prepare_dut)
    return _facehil_safe.dut()


@pytest.fixture
def camera(_facehil_safe: StationSession):
    """The reference camera (drivers.camera.OpenCVCamera), open for this test only."""
    cam = _device(_facehil_safe.open_camera)
    try:
        yield cam
    finally:
        cam.close()


@pytest.fixture
def card_reader(_facehil_safe: StationSession):
    """The PC/SC reader of the reader under test (drivers.pcsc.PcscReader)."""
    return _device(_facehil_safe.card_reader)
