"""Start and stop the whole simulated station (`facehil sim up|status|down`).

Each part of the station is a *component* (sim/context.py ``COMPONENTS``): a function
``start(ctx)`` that spawns its processes through ``ctx.spawn`` (so they are tracked by PID and
start time) and adds its sections to the station file being built in ``ctx.station``. The
components declare what they need and provide; the order is checked against that before
anything starts, and each start is checked to have provided what it declared. If one fails,
every process already started is stopped again.

The processes file (``<state_dir>/processes.json``) is the single source of truth for
``sim status`` and ``sim down``: a crashed part shows there as dead. Each ``sim up`` starts
fresh logs (the previous up's are kept in ``logs.previous/``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tomli_w

from sim.context import (BASE_PROVIDES, COMPONENTS, LOGS_DIR, PROCESSES_FILE, Component, ProcessRecord,
                         TOKEN_ENV, TOKEN_FILE, SimContext, StationError, check_order, new_station_token,
                         read_station_token)
from sim.pcscd import PcscdError, ensure_system_pcscd, pid_alive, process_started_at, start_private_pcscd

__all__ = ["PROCESSES_FILE", "STATION_FILE", "TOKEN_ENV", "SimContext", "StationError", "default_state_dir",
           "read_station_token", "running_station", "sim_down", "sim_status", "sim_up", "reissue_disposable_cards"]

log = logging.getLogger(__name__)

STATION_FILE = "station.toml"
PREVIOUS_LOGS_DIR = "logs.previous"


def default_state_dir() -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "facehil" / "sim"


def start_components(ctx: SimContext, components: tuple[Component, ...] = COMPONENTS) -> None:
    """Start each component in order, after checking the order against their declarations."""
    check_order(components, BASE_PROVIDES | frozenset(ctx.station))
    for comp in components:
        log.info("starting %s", comp.name)
        comp.load()(ctx)
        missing = comp.provides - set(ctx.station)
        if missing:
            raise StationError(f"component {comp.name} did not provide {', '.join(sorted(missing))}")


def _fresh_logs(state_dir: Path) -> None:
    """Keep the last up's logs apart, so this up's logs hold only what its processes write."""
    logs = state_dir / LOGS_DIR
    if logs.is_dir():
        previous = state_dir / PREVIOUS_LOGS_DIR
        shutil.rmtree(previous, ignore_errors=True)
        logs.rename(previous)


def sim_up(state_dir: Path | None = None, *, private_pcscd: bool = False, firmware: str = "1.4.0",
           dataset: str | None = None, options: dict | None = None) -> Path:
    """Start every part of the simulated station; returns the station file's path."""
    from harness.facedata import FaceDataError, resolve_faces

    state_dir = (state_dir or default_state_dir()).resolve()
    if (state_dir / PROCESSES_FILE).exists() and any(s["alive"] for s in sim_status(state_dir)):
        raise StationError(f"a simulated station is already running from {state_dir}; run `facehil sim down` first")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        _fresh_logs(state_dir)
        token = new_station_token(state_dir)  # a new one per up: an old one opens nothing
        faces = resolve_faces(dataset)
        pcscd = (start_private_pcscd() if private_pcscd
                 else ensure_system_pcscd(log_path=state_dir / LOGS_DIR / "pcscd.log"))
    except (FaceDataError, PcscdError, OSError) as exc:
        raise StationError(str(exc)) from exc
    ctx = SimContext(state_dir=state_dir, pcscd=pcscd, faces=faces, firmware=firmware,
                     options=dict(options or {}), token=token)
    if pcscd.pid is not None:
        ctx.processes.append(ProcessRecord(name="pcscd", pid=pcscd.pid, argv=["pcscd"],
                                           log_path=str(pcscd.log_path or ""),
                                           started_at=process_started_at(pcscd.pid) or time.time(), kind="pcscd"))
    ctx.station = {
        "station": {"name": f"sim-{os.uname().nodename}", "simulated": True, "state_dir": str(state_dir)},
        "pcsc": {"reader": pcscd.reader_names[0], "reference_reader": pcscd.reader_names[1]},
        "faces": {"dataset": str(faces.root), "low_fidelity": faces.low_fidelity},
    }
    if pcscd.private:
        ctx.station["pcsc"]["socket"] = str(pcscd.socket_path)
    ctx.save_processes()
    path = state_dir / STATION_FILE
    try:
        start_components(ctx)
        _place_demo_card(ctx)
        path.write_text(tomli_w.dumps(ctx.station))
    except BaseException as exc:
        sim_down(state_dir)
        if isinstance(exc, (OSError, ValueError)):  # a part's files: one exception type for callers
            raise StationError(f"{type(exc).__name__}: {exc}") from exc
        raise
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
        with RigController(ctx.station["rig"]["url"], timeout_s=5.0, token=ctx.token) as rig:
            rig.place_card(slot)
    except RigError as exc:
        raise StationError(f"the rig could not place deck card {slot} on the reader: {exc}") from exc
    card = next(c for c in ctx.station["cards"] if c.get("placer_slot") == slot)
    if not wait_powered(CardControl.from_address(card["control"], token=ctx.token)):
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
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StationError(f"cannot read the station's processes file {path}: {exc}") from exc


def _alive(rec: dict) -> bool:
    """The recorded process is still running, and is still the one we started (same start time)."""
    return pid_alive(rec["pid"], rec.get("started_at"))


def sim_status(state_dir: Path | None = None) -> list[dict]:
    """Each tracked process with ``alive``; a dead one is a crashed (or stopped) part, and so is
    one whose PID now belongs to another program."""
    state_dir = state_dir or default_state_dir()
    return [{**rec, "alive": _alive(rec)} for rec in _load_processes(state_dir)]


def sim_down(state_dir: Path | None = None, timeout_s: float = 5.0) -> list[str]:
    """Stop every process the station started, newest first; returns their names. A recorded
    PID is signalled only while it still has the start time recorded for it: after a crash or a
    reboot that PID may belong to another program, which is left alone."""
    state_dir = state_dir or default_state_dir()
    stopped = []
    for rec in reversed(_load_processes(state_dir)):
        pid = rec["pid"]
        if not _alive(rec):
            if pid_alive(pid):
                log.warning("PID %d (%s) now belongs to another program; not stopping it", pid, rec["name"])
            continue
        group = rec.get("kind") != "pcscd"  # station processes lead their own session
        try:
            os.killpg(pid, signal.SIGTERM) if group else os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout_s
        while _alive(rec) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _alive(rec):
            try:
                os.killpg(pid, signal.SIGKILL) if group else os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(pid)
        stopped.append(rec["name"])
    for name in (PROCESSES_FILE, TOKEN_FILE):  # the token opens nothing any more
        (state_dir / name).unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def reissue_disposable_cards(cards, state_dir: Path | None = None) -> list[str]:
    """Before a run on a simulated station, re-issue the cards scenarios may lock (``disposable``):
    a lab re-issues a locked test card; a long-lived simulated station (a fleet rig) must too, or
    the second nightly would find the card still locked. ``state_dir`` holds the station's token.
    Returns the ids re-issued."""
    from sim.card.control import CardControl, ControlError

    token = read_station_token(state_dir)
    done = []
    for card in cards:
        if not card.extra.get("disposable") or not card.control:
            continue
        try:
            CardControl.from_address(card.control, token=token).reissue()
        except (ControlError, OSError) as exc:
            raise StationError(f"could not re-issue disposable card {card.id} at {card.control}: {exc}") from exc
        done.append(card.id)
    return done
