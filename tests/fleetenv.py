"""A small fleet on one machine for the fleet tests and bench: simulated stations (each with its
own private pcscd), `facehil worker` processes serving them, and helpers to drive the CLI.

Each worker runs in its own session, as under systemd, so `kill()` (SIGKILL to the process
group) takes the worker, its pool process and the suite it runs, like a crashed rig host.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.fleet_db import FleetDB

LEASE_TTL_S = 6.0
HEARTBEAT_S = 1.0
VISIBILITY_TIMEOUT_S = 15.0  # short, so a killed worker's job comes back within the test
CLI = [sys.executable, "-m", "harness.cli"]
# a rig as the scenarios expect it (as harness.plugin starts it): every card in the placer, none on the reader
STATION_OPTIONS = {"deck": "placer"}


def cli_env(db_url: str | None = None) -> dict[str, str]:
    """The environment of a facehil command; the database URL (with its password) goes in
    FACEHIL_DB, as hardware.md tells a lab to pass it, never on a command line."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", TERM="dumb")
    for var in ("FACEHIL_DB", "FACEHIL_BROKER", "PCSCLITE_CSOCK_NAME"):
        env.pop(var, None)
    if db_url:
        env["FACEHIL_DB"] = db_url
    return env


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


@dataclass
class WorkerProc:
    rig: str
    station: Path
    broker_url: str
    db_url: str
    log_dir: Path
    tags: str = "sim"
    health: str | None = None  # `--health`: the worker's health-check selection
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> WorkerProc:
        with open(self.station, "rb") as fh:
            socket_path = tomllib.load(fh).get("pcsc", {}).get("socket")
        env = cli_env(self.db_url)
        if socket_path:  # what a rig host's environment gives its worker: its own pcscd
            env["PCSCLITE_CSOCK_NAME"] = socket_path
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = [*CLI, "worker", "--station", str(self.station), "--name", self.rig, "--tags", self.tags,
                "--broker", self.broker_url, "--lease-ttl", str(LEASE_TTL_S),
                "--heartbeat", str(HEARTBEAT_S), "--visibility-timeout", str(VISIBILITY_TIMEOUT_S),
                "--restore-interval", "1", "--log-dir", str(self.log_dir / self.rig)]
        if self.health:
            argv += ["--health", self.health]
        with open(self.log_dir / f"worker-{self.rig}.log", "ab") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_online(self, db: FleetDB, timeout_s: float = 60.0) -> None:
        def online():
            if not self.alive():
                raise AssertionError(f"worker {self.rig} exited with {self.proc.returncode}: {self.log_tail()}")
            return any(s.name == self.rig and s.state == "online" and (s.heartbeat_age_s or 99) < 3
                       and any(r.worker and r.worker.endswith(f":{self.pid}") for r in db.rigs() if r.name == self.rig)
                       for s in db.status())
        wait_until(online, timeout_s, f"worker {self.rig} to come online")

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM: Celery's warm shutdown (finishes the running job), as `systemctl stop` does."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL to the whole process group: worker, pool process and running suite."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def log_tail(self, n_chars: int = 3000) -> str:
        try:
            return (self.log_dir / f"worker-{self.rig}.log").read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""


def fleet_cli(*args: str, broker_url: str, db_url: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess:
    argv = [*CLI, "fleet", *args]
    if args and args[0] == "run":
        argv += ["--broker", broker_url]
    return subprocess.run(argv, capture_output=True, text=True, env=cli_env(db_url), timeout=timeout_s)


def fleet_run_popen(*args: str, broker_url: str, db_url: str, log_path: Path) -> subprocess.Popen:
    argv = [*CLI, "fleet", "run", *args, "--broker", broker_url]
    fh = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=cli_env(db_url))
    fh.close()
    return proc


# A stand-in for `facehil run` (tests/test_fleet_worker.py, test_db_outage.py): it records a run
# the way the records plugin does (into FACEHIL_DB, as the worker passes it) and exits with the
# code the test asks for. FAKE_PID_FILE: where it writes its pid; FAKE_SUITE_SLEEP_S: how long
# the suite phase lasts; FAKE_LOST: node ids it reports as not recorded (exit 6).
FAKE_RUN = textwrap.dedent("""
    import argparse, hashlib, os, signal, socket, sys, time
    from harness.records import RecordStore, RunInfo
    p = argparse.ArgumentParser()
    p.add_argument("suite"); p.add_argument("-k"); p.add_argument("--station"); p.add_argument("--record",
    action="store_true"); p.add_argument("--log"); p.add_argument("--results")
    a = p.parse_args()
    phase = "health" if a.k == "test_health" else "suite"
    rc = int(os.environ.get(f"FAKE_{phase.upper()}_RC", "0"))
    if os.environ.get("FAKE_PID_FILE"):
        with open(os.environ["FAKE_PID_FILE"], "a") as fh:
            fh.write(f"{phase} {os.getpid()}\\n")
    with RecordStore(os.environ["FACEHIL_DB"]) as store:
        digest = hashlib.sha256(open(a.station, "rb").read()).hexdigest()
        run = store.start_run(RunInfo(suite=a.suite, station_file_hash=digest,
                                      reader_firmware=os.environ.get("FAKE_FIRMWARE", "1.4.0")))
        if phase == "suite" and os.environ.get("FAKE_STEAL"):
            from sqlalchemy import text
            with store.engine.begin() as c:
                c.execute(text("UPDATE fleet_leases SET holder='thief', job_id='other'"))
            time.sleep(30)
        if phase == "suite" and os.environ.get("FAKE_SELF_KILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        if phase == "suite":
            time.sleep(float(os.environ.get("FAKE_SUITE_SLEEP_S", "0")))
        lost = [n for n in os.environ.get("FAKE_LOST", "").split(",") if n] if phase == "suite" else []
        for nodeid in lost:
            print(f"NOT RECORDED: {nodeid}")
        rc = 6 if lost else rc
        store.finish_run(run, "passed" if rc == 0 else "failed", exit_status=rc)
    sys.exit(rc)
""")


BATCH_RE = re.compile(r"batch ([0-9a-f-]{36})")


def batch_id(output: str) -> str:
    m = BATCH_RE.search(output)
    assert m, f"no batch id in the output:\n{output[-2000:]}"
    return m.group(1)


class Fleet:
    """Simulated stations + their workers, sharing one broker and one database."""

    def __init__(self, root: Path, redis_server, db_url: str):
        self.root, self.redis, self.db_url = root, redis_server, db_url
        self.stations: dict[str, Path] = {}
        self.workers: dict[str, WorkerProc] = {}
        self._db: FleetDB | None = None

    def start(self, rigs: dict[str, str], health: str | None = None, options: dict | None = None) -> Fleet:
        """rigs: name -> tags; options: the stations' sim options beyond STATION_OPTIONS. Stops
        whatever it started if a part fails."""
        from sim.station import sim_up

        try:
            for rig in rigs:
                self.stations[rig] = sim_up(self.root / rig, private_pcscd=True,
                                            options={**STATION_OPTIONS, **(options or {})})
            for rig, tags in rigs.items():
                self.workers[rig] = WorkerProc(rig, self.stations[rig], self.redis.url, self.db_url,
                                               self.root / "logs", tags=tags, health=health).start()
            for w in self.workers.values():
                w.wait_online(self.db())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        from sim.station import sim_down

        for w in self.workers.values():
            w.stop(timeout_s=20)
        if self._db is not None:
            self._db.close()
            self._db = None
        for rig in self.stations:
            sim_down(self.root / rig)

    def db(self) -> FleetDB:
        if self._db is None:
            self._db = FleetDB.open(self.db_url)
        return self._db

    def cli(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess:
        return fleet_cli(*args, broker_url=self.redis.url, db_url=self.db_url, timeout_s=timeout_s)

    def diagnose(self) -> str:
        return "\n".join(f"--- worker {r}:\n{w.log_tail(1500)}" for r, w in self.workers.items())
