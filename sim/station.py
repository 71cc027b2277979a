"""Start and stop the whole simulated station (`facehil sim up|status|down`).

Each part of the station is a *component*: a function ``start(ctx)`` that spawns its
processes through ``ctx.spawn`` (so they are tracked by PID) and adds its section to the
station file being built in ``ctx.station``. Components run in order; if one fails, every
process already started is stopped again.

The processes file (``<state_dir>/processes.json``) is the single source of truth for
``sim status`` and ``sim down``: a crashed part shows there as dead.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import tomli_w

from harness.facedata import FaceSource, resolve_faces
from sim.pcscd import PcscdInstance, ensure_system_pcscd, pid_alive, start_private_pcscd

log = logging.getLogger(__name__)

STATION_FILE = "station.toml"
PROCESSES_FILE = "processes.json"


def default_state_dir() -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return base / "facehil" / "sim"


class StationError(RuntimeError):
    """The simulated station could not be started, or a part of it failed."""


@dataclass
class ProcessRecord:
    name: str
    pid: int
    argv: list[str]
    log_path: str
    started_at: float
    kind: str = "process"  # "process" or "pcscd"


@dataclass
class SimContext:
    state_dir: Path
    pcscd: PcscdInstance
    faces: FaceSource
    firmware: str = "1.4.0"
    options: dict = field(default_factory=dict)
    station: dict = field(default_factory=dict)
    processes: list[ProcessRecord] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Environment for a station process: the right pcscd, unbuffered logs."""
        env = dict(os.environ)
        env.update(self.pcscd.client_env())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a station process in its own session, logging to <state_dir>/logs/<name>.log."""
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        fh = open(log_path, "ab")
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env or self.env(), start_new_session=True, cwd=self.state_dir)
        fh.close()
        self.processes.append(ProcessRecord(name=name, pid=proc.pid, argv=argv, log_path=str(log_path),
                                            started_at=time.time()))
        self.save_processes()
        return proc

    def python(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def save_processes(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / PROCESSES_FILE).write_text(
            json.dumps([asdict(p) for p in self.processes], indent=2))


Component = Callable[[SimContext], None]


def _components() -> list[tuple[str, Component]]:
    """The station's parts, in start order. Imported lazily: each lives with its simulator."""
    from sim.camera import start_camera
    from sim.card.station import start_cards
    from sim.eligibility.station import start_eligibility
    from sim.reader.station import start_reader
    from sim.rig import start_rig

    return [
        ("cards", start_cards),
        ("camera", start_camera),
        ("rig", start_rig),
        ("eligibility", start_eligibility),
        ("reader", start_reader),
    ]


def sim_up(state_dir: Path | None = None, *, private_pcscd: bool = False, firmware: str = "1.4.0",
           dataset: str | None = None, options: dict | None = None) -> Path:
    """Start every part of the simulated station; returns the station file's path."""
    state_dir = (state_dir or default_state_dir()).resolve()
    if (state_dir / PROCESSES_FILE).exists() and any(s["alive"] for s in sim_status(state_dir)):
        raise StationError(f"a simulated station is already running from {state_dir}; run `facehil sim down` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    faces = resolve_faces(dataset)
    pcscd = start_private_pcscd() if private_pcscd else ensure_system_pcscd()
    ctx = SimContext(state_dir=state_dir, pcscd=pcscd, faces=faces, firmware=firmware,
                     options=dict(options or {}))
    if pcscd.pid is not None:
        ctx.processes.append(ProcessRecord(name="pcscd", pid=pcscd.pid, argv=["pcscd"],
                                           log_path=str(pcscd.log_path or ""), started_at=time.time(),
                                           kind="pcscd"))
    ctx.station = {
        "station": {"name": f"sim-{os.uname().nodename}", "simulated": True, "state_dir": str(state_dir)},
        "pcsc": {"reader": pcscd.reader_names[0], "reference_reader": pcscd.reader_names[1]},
        "faces": {"dataset": str(faces.root), "low_fidelity": faces.low_fidelity},
    }
    if pcscd.private:
        ctx.station["pcsc"]["socket"] = str(pcscd.socket_path)
    ctx.save_processes()
    try:
        for name, start in _components():
            log.info("starting %s", name)
            start(ctx)
        _place_demo_card(ctx)
    except BaseException:
        sim_down(state_dir)
        raise
    path = state_dir / STATION_FILE
    path.write_text(tomli_w.dumps(ctx.station))
    return path


def _place_demo_card(ctx: SimContext) -> None:
    """With every part up, the rig places a deck card on the reader (sim/card/station.py
    ``demo_card_slot``), so that `facehil card read` shows one there; a test run puts it back first."""
    from drivers.rig import RigController, RigError
    from sim.card.control import CardControl
    from sim.card.station import demo_card_slot, wait_powered

    slot = demo_card_slot(ctx)
    if slot is None or "rig" not in ctx.station:
        return
    try:
        with RigController(ctx.station["rig"]["url"], timeout_s=5.0) as rig:
            rig.place_card(slot)
    except RigError as exc:
        raise StationError(f"the rig could not place deck card {slot} on the reader: {exc}") from exc
    card = next(c for c in ctx.station["cards"] if c.get("placer_slot") == slot)
    if not wait_powered(CardControl.from_address(card["control"])):
        log.warning("pcscd has not powered the placed deck card %s", card["id"])


@contextmanager
def running_station(state_dir: Path, **options) -> Iterator[Path]:
    """``sim_up`` for as long as the block runs, then ``sim_down`` whatever happened in it;
    yields the station file. For tests, benches and tools that hold a station for a while."""
    path = sim_up(state_dir, **options)
    try:
        yield path
    finally:
        sim_down(state_dir)


def _load_processes(state_dir: Path) -> list[dict]:
    path = state_dir / PROCESSES_FILE
    if not path.exists():
        return []
    return json.loads(path.read_text())


def sim_status(state_dir: Path | None = None) -> list[dict]:
    """Each tracked process with ``alive``; a dead one is a crashed (or stopped) part."""
    state_dir = state_dir or default_state_dir()
    out = []
    for rec in _load_processes(state_dir):
        out.append({**rec, "alive": pid_alive(rec["pid"])})
    return out


def sim_down(state_dir: Path | None = None, timeout_s: float = 5.0) -> list[str]:
    """Stop every process the station started, by PID, newest first. Returns their names."""
    state_dir = state_dir or default_state_dir()
    stopped = []
    for rec in reversed(_load_processes(state_dir)):
        pid = rec["pid"]
        if not pid_alive(pid):
            continue
        try:
            os.killpg(pid, signal.SIGTERM) if rec.get("kind") != "pcscd" else os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(pid)
        stopped.append(rec["name"])
    path = state_dir / PROCESSES_FILE
    if path.exists():
        path.unlink()
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def reissue_disposable_cards(cards) -> list[str]:
    """Before a run on a simulated station, re-issue the cards scenarios may lock (``disposable``):
    a lab re-issues a locked test card; a long-lived simulated station (a fleet rig) must too, or
    the second nightly would find the card still locked. Returns the ids re-issued."""
    from sim.card.control import CardControl, ControlError

    done = []
    for card in cards:
        if not card.extra.get("disposable") or not card.control:
            continue
        try:
            CardControl.from_address(card.control).reissue()
        except (ControlError, OSError) as exc:
            raise StationError(f"could not re-issue disposable card {card.id} at {card.control}: {exc}") from exc
        done.append(card.id)
    return done
