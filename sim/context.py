"""The bottom of the simulated station: what every component shares, and nothing else.

* :class:`StationError`: the one exception a station part raises and its callers catch.
* :class:`SimContext`: what a component gets (state folder, pcscd, faces, options), how it
  spawns a tracked process, and the station file being built.
* :func:`wait_ready` / :func:`parse_ready`: the one reader of the ``READY k=v ...`` line every
  station process prints once it serves, from its log file or from a pipe.
* :data:`COMPONENTS`: each component's declared needs and provides (station-file sections),
  in start order. sim/station.py checks the order against them and imports each ``start``
  lazily, so no component imports another, nor the station.

Components import this module; this module imports no component.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sim.pcscd import process_started_at
from sim.reaping import register

if TYPE_CHECKING:
    from harness.facedata import FaceSource
    from sim.pcscd import PcscdInstance

PROCESSES_FILE = "processes.json"
LOGS_DIR = "logs"
TOKEN_FILE = "token"  # <state_dir>/token, mode 0600: the station's control-port secret
TOKEN_ENV = "FACEHIL_STATION_TOKEN"  # how the station's own processes get it (never argv: `ps` shows argv)
READY_TIMEOUT_S = 30.0
READY_PREFIX = "READY "


class StationError(RuntimeError):
    """The simulated station could not be started, or a part of it failed; the message names
    the part and, where there is one, its log."""


# -- the READY line ------------------------------------------------------------------------------
def parse_ready(line: str) -> dict[str, str] | None:
    """``READY k=v k2=v2`` -> ``{"k": "v", "k2": "v2"}``; None for any other line."""
    line = line.strip()
    if line != READY_PREFIX.strip() and not line.startswith(READY_PREFIX):
        return None
    return dict(tok.split("=", 1) for tok in line.split()[1:] if "=" in tok)


class LogLines:
    """New lines of a log file from a byte offset on (what this start wrote, not an earlier one)."""

    def __init__(self, path: Path, offset: int = 0):
        self.path = path
        self.offset = offset
        self._partial = b""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        return [raw.decode("utf-8", "replace") for raw in lines]

    def tail(self, n_chars: int = 800) -> str:
        try:
            return self.path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""


class PipeLines:
    """Lines of a process's stdout pipe, read without blocking past a short poll."""

    def __init__(self, stream):
        self.fd = stream.fileno()
        self._buf = b""
        self._seen = b""

    def new_lines(self) -> list[str]:
        ready, _, _ = select.select([self.fd], [], [], 0.05)
        if not ready:
            return []
        chunk = os.read(self.fd, 4096)
        self._seen = (self._seen + chunk)[-2000:]
        *lines, self._buf = (self._buf + chunk).split(b"\n")
        return [raw.decode("utf-8", "replace") for raw in lines]

    def tail(self, n_chars: int = 800) -> str:
        return self._seen.decode("utf-8", "replace")[-n_chars:]


def wait_ready(proc: subprocess.Popen, lines: LogLines | PipeLines, what: str,
               timeout_s: float = READY_TIMEOUT_S) -> dict[str, str]:
    """Wait for ``proc``'s READY line; its fields. Raises StationError naming ``what``, the
    exit status or the timeout, and the end of what the process wrote."""
    deadline = time.monotonic() + timeout_s
    while True:
        for line in lines.new_lines():
            fields = parse_ready(line)
            if fields is not None:
                return fields
        if proc.poll() is not None:
            for line in lines.new_lines():  # what it printed just before exiting
                if (fields := parse_ready(line)) is not None:
                    return fields
            state = f"exited with {proc.returncode}"
            break
        if time.monotonic() >= deadline:
            state = f"gave no READY line within {timeout_s:.0f} s"
            break
        if isinstance(lines, LogLines):
            time.sleep(0.05)
    where = f"; see {lines.path}" if isinstance(lines, LogLines) else ""
    raise StationError(f"{what} {state}{where}:\n{lines.tail()}")


# -- the station token ---------------------------------------------------------------------------
def new_station_token(state_dir: Path) -> str:
    """A fresh random token for one station, written to ``<state_dir>/token`` readable by its
    owner only (created 0600 under a temporary name, then renamed over any earlier one)."""
    token = secrets.token_hex(32)
    path = state_dir / TOKEN_FILE
    tmp = state_dir / f".{TOKEN_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


def read_station_token(state_dir: Path | str | None) -> str | None:
    """The token of the station in ``state_dir``, or None when it has none (or no state folder)."""
    if state_dir is None:
        return None
    try:
        return (Path(state_dir) / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


# -- tracked processes ---------------------------------------------------------------------------
@dataclass
class ProcessRecord:
    name: str
    pid: int
    argv: list[str]
    log_path: str
    started_at: float  # the process's own start time (psutil create_time): a reused PID differs
    kind: str = "process"  # "process" (its own session: stopped as a group) or "pcscd"


@dataclass
class Spawned:
    """A process ``SimContext.spawn`` started, and where its READY line will appear."""

    name: str
    proc: subprocess.Popen
    lines: LogLines

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self):
        return self.proc.poll()


@dataclass
class SimContext:
    state_dir: Path
    pcscd: PcscdInstance
    faces: FaceSource
    firmware: str = "1.4.0"
    options: dict = field(default_factory=dict)
    station: dict = field(default_factory=dict)
    processes: list[ProcessRecord] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # the station's control-port token (TOKEN_FILE); None: ports are open


    def env(self) -> dict[str, str]:
        """Environment for a station process: the right pcscd and the station token."""
        env = dict(os.environ)
        env.update(self.pcscd.client_env())
        env.update(self.extra_env)
        env.pop(TOKEN_ENV, None)
        if self.token:
            env[TOKEN_ENV] = self.token
        # Not unbuffered: unbuffered stdout writes print()'s text and its newline in two writes,
        # and a logging thread's line (stderr, same log file) can land between them, gluing the
        # READY line to a log line. Buffered print(..., flush=True) is one write; stderr is
        # line-buffered since Python 3.9, so logs still appear line by line.
        env.pop("PYTHONUNBUFFERED", None)
        return env

    def python(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Spawned:
        """Start a station process in its own session, logging to <state_dir>/logs/<name>.log
        (appended to: only what this process writes is searched for its READY line)."""
        logs = self.state_dir / LOGS_DIR
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env or self.env(), start_new_session=True, cwd=self.state_dir)
        register(proc.pid, group=True)
        self.processes.append(ProcessRecord(name=name, pid=proc.pid, argv=argv, log_path=str(log_path),
                                            started_at=process_started_at(proc.pid) or time.time()))
        self.save_processes()
        return Spawned(name, proc, LogLines(log_path, offset))

    def wait_ready(self, spawned: Spawned, timeout_s: float = READY_TIMEOUT_S) -> dict[str, str]:
        return wait_ready(spawned.proc, spawned.lines, spawned.name, timeout_s)

    def spawn_ready(self, name: str, argv: list[str], timeout_s: float = READY_TIMEOUT_S) -> dict[str, str]:
        """Spawn, then wait for its READY line; its fields."""
        return self.wait_ready(self.spawn(name, argv), timeout_s)

    def save_processes(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / PROCESSES_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(p) for p in self.processes], indent=2))
        os.replace(tmp, path)


# -- the components ------------------------------------------------------------------------------
BASE_PROVIDES = frozenset({"station", "pcsc", "faces"})  # what sim_up writes before any component


@dataclass(frozen=True)
class Component:
    """One part of the station: ``start(ctx)`` lives at ``entry`` ("module:function"); it needs
    these station-file sections from earlier parts and adds the ones it provides."""

    name: str
    entry: str
    needs: frozenset[str] = frozenset()
    provides: frozenset[str] = frozenset()

    def load(self) -> Callable[[SimContext], None]:
        import importlib

        module, _, func = self.entry.partition(":")
        return getattr(importlib.import_module(module), func)


COMPONENTS: tuple[Component, ...] = (
    Component("cards", "sim.card.station:start_cards", needs=frozenset({"pcsc"}),
              provides=frozenset({"cards", "pki"})),
    Component("camera", "sim.camera:start_camera", needs=frozenset({"faces"}), provides=frozenset({"camera"})),
    # the reader's supply address reaches the rig later, through a file (sim/rig.py SUPPLY_FILE)
    Component("rig", "sim.rig:start_rig", needs=frozenset({"cards", "camera"}), provides=frozenset({"rig"})),
    Component("eligibility", "sim.eligibility.station:start_eligibility", needs=frozenset({"pki"}),
              provides=frozenset({"eligibility"})),
    Component("reader", "sim.reader.station:start_reader", needs=frozenset({"cards", "camera", "eligibility"}),
              provides=frozenset({"dut"})),
    # the rig's screen camera on the reader's panel (issue 13); the rig's finger finds the touch port by file
    Component("screen", "sim.screen_camera:start_screen", needs=frozenset({"dut", "rig"}),
              provides=frozenset({"screen"})),
)


def check_order(components: tuple[Component, ...] | list[Component],
                available: frozenset[str] = BASE_PROVIDES) -> None:
    """Refuse an order in which a component starts before what it needs is provided."""
    have = set(available)
    for comp in components:
        missing = comp.needs - have
        if missing:
            raise StationError(f"component {comp.name} needs {', '.join(sorted(missing))}, which no "
                               f"component before it provides")
        have |= comp.provides
