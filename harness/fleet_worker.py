"""`facehil worker`: serves one rig's queue and runs each job on that rig.

A job, in order:
1. skip it if its row says it is finished (a re-delivered duplicate) or past its deadline;
2. take the rig's lease (waiting while another job holds it) and keep renewing it from a
   thread; if a renewal fails, the suite is killed: a job never runs on a rig it does not hold;
3. the health check (`facehil run` of the health selection): on failure the rig is quarantined
   and the job finishes as 'quarantined', with the health run's id; a pass lifts a quarantine;
4. the suite itself: `facehil run SUITE --station FILE --db URL [-k EXPR]`, as a subprocess,
   so a crashing suite cannot take the worker down and records take the usual path.
   The subprocess dies with the pool process (PR_SET_PDEATHSIG), so a lost worker leaves no
   suite behind on the rig.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.fleet import RUN_JOB_TASK, BrokerSettings, make_app, rig_queue
from harness.fleet_db import TERMINAL_JOB_STATES, FleetDB, FleetError, worker_identity
from harness.records import utcnow

log = logging.getLogger(__name__)

DEFAULT_HEALTH_CHECK = "nightly -k test_health"
_PR_SET_PDEATHSIG = 1


@dataclass
class WorkerConfig:
    rig: str
    station_file: str
    db_url: str
    broker: BrokerSettings
    tags: list[str] = field(default_factory=list)
    run_command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "harness.cli", "run"])
    health_check: str = DEFAULT_HEALTH_CHECK  # `facehil run` arguments before --station
    lease_ttl_s: float = 60.0
    heartbeat_interval_s: float = 10.0
    health_timeout_s: float = 600.0
    suite_timeout_s: float = 3 * 3600.0
    max_attempts: int = 3
    log_dir: str = ""

    def to_conf(self) -> dict:
        return asdict(self)

    @classmethod
    def from_conf(cls, conf: dict) -> WorkerConfig:
        conf = dict(conf)
        conf["broker"] = BrokerSettings(**conf["broker"])
        return cls(**conf)


def station_name(path: Path) -> str:
    """The rig's default name: the station file's [station] name."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise FleetError(f"cannot read station file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"{path}: not valid TOML: {exc}") from None
    name = data.get("station", {}).get("name") if isinstance(data.get("station"), dict) else None
    if not name:
        raise FleetError(f"{path}: [station] name is missing; give the rig a name with --name")
    return str(name)


def file_sha256(path: Path) -> str | None:
    """Same hash the records keep for a run's station file (how a job finds its runs)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# Running one job (in the Celery pool process)


_libc_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork


def _die_with_parent() -> None:
    _libc_prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LeaseKeeper(threading.Thread):
    """Renews the rig lease every ttl/3; on a failed renewal, kills the running suite."""

    def __init__(self, db: FleetDB, cfg: WorkerConfig, holder: str, job_id: str):
        super().__init__(name=f"lease-{cfg.rig}", daemon=True)
        self.db, self.cfg, self.holder, self.job_id = db, cfg, holder, job_id
        self.lost = threading.Event()
        self._halt = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.on_tick = None  # callable run after each renewal (run-id discovery)

    def run(self) -> None:
        while not self._halt.wait(self.cfg.lease_ttl_s / 3):
            try:
                ok = self.db.renew(self.cfg.rig, self.holder, self.job_id, self.cfg.lease_ttl_s)
            except Exception as exc:  # the DB is away: keep trying until the lease runs out
                log.warning("lease renewal for %s failed: %s", self.cfg.rig, exc)
                continue
            if not ok:
                log.error("lease on %s lost; stopping the suite", self.cfg.rig)
                self.lost.set()
                proc = self.proc
                if proc is not None and proc.poll() is None:
                    proc.kill()
                return
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except Exception as exc:
                    log.debug("progress update failed: %s", exc)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)


@dataclass
class StepResult:
    rc: int | None  # None: timed out
    run_ids: list[int]
    log_path: Path


class JobRunner:
    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        self.host = socket.gethostname()
        self.log_dir = Path(cfg.log_dir or Path.home() / ".local" / "state" / "facehil" / "fleet")

    def run(self, job_id: str) -> str:
        """Run one job; returns the job's final state (or the reason it was skipped)."""
        with FleetDB.open(self.cfg.db_url) as db:  # opening also marks dead runs aborted
            return self._run(db, job_id)

    def _run(self, db: FleetDB, job_id: str) -> str:
        cfg = self.cfg
        job = db.job(job_id)
        if job is None:
            log.error("job %s is not in the database; dropping the message", job_id)
            return "unknown"
        if job.rig != cfg.rig:
            db.finish_job(job_id, "failed", detail=f"delivered to rig {cfg.rig}, meant for {job.rig}")
            return "failed"
        if job.state in TERMINAL_JOB_STATES:
            log.info("job %s is already %s (re-delivered); nothing to do", job_id, job.state)
            return "duplicate"
        if job.deadline_at is not None and db.now() > job.deadline_at:  # e.g. a rig back after a night off
            db.finish_job(job_id, "lost", detail="delivered after its deadline; not run")
            return "lost"
        holder = worker_identity()
        if not self._wait_for_lease(db, job_id, holder, job.deadline_at):
            return db.job(job_id).state
        try:
            job = db.start_attempt(job_id, holder)
            if job is None:
                return "duplicate"
            if job.attempts > cfg.max_attempts:
                db.finish_job(job_id, "aborted", detail=f"gave up: the worker was lost {job.attempts - 1} times")
                return "aborted"
            if job.attempts > 1:
                log.warning("job %s: attempt %d (the previous worker was lost)", job_id, job.attempts)
            db.set_rig_state(cfg.rig, "busy")
            keeper = LeaseKeeper(db, cfg, holder, job_id)
            keeper.start()
            try:
                return self._health_then_suite(db, job, keeper)
            finally:
                keeper.stop()
        except Exception as exc:
            log.exception("job %s failed in the worker", job_id)
            db.finish_job(job_id, "failed", detail=f"worker error: {exc}")
            return "failed"
        finally:
            db.release(cfg.rig, holder, job_id)
            db.set_rig_state(cfg.rig, "online")

    def _wait_for_lease(self, db: FleetDB, job_id: str, holder: str, deadline_at) -> bool:
        """Take the lease, waiting for another job's lease to end (or a dead holder's to expire).

        A lease held for this very job is either a duplicate delivery (the job finishes and we
        skip it) or a lost worker's (its lease expires and we run the job again): wait either way."""
        cfg = self.cfg
        logged = False
        while not db.acquire(cfg.rig, holder, job_id, cfg.lease_ttl_s):
            info = db.lease(cfg.rig)
            if not logged:
                log.info("job %s waits for rig %s: lease held by %s for job %s until %s", job_id, cfg.rig,
                         info.holder, info.job_id, info.expires_at)
                logged = True
            if deadline_at is not None and db.now() > deadline_at:
                db.finish_job(job_id, "lost", detail=f"rig held by job {info.job_id} ({info.holder}) "
                                                     f"until past the deadline")
                return False
            if db.job(job_id).state in TERMINAL_JOB_STATES:
                return False
            time.sleep(min(1.0, cfg.lease_ttl_s / 4))
        return True

    def _health_then_suite(self, db: FleetDB, job, keeper: LeaseKeeper) -> str:
        cfg, job_id = self.cfg, job.id
        station = Path(cfg.station_file)
        station_hash = file_sha256(station)
        # health check first
        db.update_job(job_id, phase="health")
        health_args = shlex.split(cfg.health_check)
        health = self._step(job_id, job.attempts, "health", health_args, keeper, station_hash,
                            cfg.health_timeout_s, db, track_runs=False)
        health_run = health.run_ids[-1] if health.run_ids else None
        db.update_job(job_id, health_run_id=health_run)
        if keeper.lost.is_set():
            db.finish_job(job_id, "aborted", detail="lease lost during the health check")
            return "aborted"
        if health.rc != 0:
            what = "timed out" if health.rc is None else f"exited {health.rc}"
            reason = (f"health check {what} (run {health_run if health_run is not None else 'not recorded'}, "
                      f"log {health.log_path})")
            db.quarantine(cfg.rig, reason)
            db.set_last(cfg.rig, job_id, health_run)
            db.finish_job(job_id, "quarantined", detail=reason, exit_status=health.rc)
            log.error("rig %s quarantined: %s", cfg.rig, reason)
            return "quarantined"
        if db.clear_quarantine(cfg.rig, state="busy"):
            log.warning("rig %s passed its health check: quarantine lifted", cfg.rig)
        firmware = (job.args or {}).get("firmware")
        if firmware:
            seen = self._firmware_of(db, health_run)
            if seen is not None and seen != firmware:
                reason = f"rig runs reader firmware {seen}, the job asked for {firmware}"
                db.set_last(cfg.rig, job_id, health_run)
                db.finish_job(job_id, "failed", detail=reason)
                return "failed"
        # the suite
        db.update_job(job_id, phase="suite")
        args = [job.suite]
        keyword = (job.args or {}).get("keyword")
        suite_args = ["-k", keyword] if keyword else []
        result = self._step(job_id, job.attempts, "suite", args, keeper, station_hash,
                            cfg.suite_timeout_s, db, track_runs=True, extra=suite_args)
        last_run = result.run_ids[-1] if result.run_ids else None
        db.set_last(cfg.rig, job_id, last_run)
        if keeper.lost.is_set():
            db.finish_job(job_id, "aborted", detail="lease lost: the suite was stopped", exit_status=result.rc)
            return "aborted"
        if result.rc == 0:
            state, detail = "passed", None
        elif result.rc is None:
            state, detail = "failed", f"suite timed out after {cfg.suite_timeout_s:.0f} s (log {result.log_path})"
        elif result.rc < 0:
            state, detail = "aborted", f"suite killed by signal {-result.rc} (log {result.log_path})"
        else:
            state, detail = "failed", f"suite exited {result.rc} (log {result.log_path})"
        if last_run is None and state == "passed":
            state, detail = "failed", "the suite passed but recorded no run"
        db.finish_job(job_id, state, detail=detail, exit_status=result.rc)
        return state

    def _firmware_of(self, db: FleetDB, run_id: int | None) -> str | None:
        if run_id is None:
            return None
        from harness.records import Run

        with db.session() as s:
            run = s.get(Run, run_id)
            return run.reader_firmware if run else None

    def _step(self, job_id: str, attempt: int, phase: str, args: list[str], keeper: LeaseKeeper,
              station_hash: str | None, timeout_s: float, db: FleetDB, *, track_runs: bool,
              extra: tuple[str, ...] | list[str] = ()) -> StepResult:
        cfg = self.cfg
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{job_id}-{attempt}-{phase}"  # one log per attempt: a lost attempt's log stays
        pytest_log = self.log_dir / f"{stem}.pytest.log"
        out_log = self.log_dir / f"{stem}.log"
        argv = [*cfg.run_command, *args, "--station", cfg.station_file, "--db", cfg.db_url,
                "--log", str(pytest_log), *extra]
        since = utcnow()
        known: list[int] = []

        def discover() -> None:
            ids = db.runs_since(station_hash, since, self.host)
            if ids != known:
                known[:] = ids
                if track_runs:
                    db.update_job(job_id, run_ids=list(ids))

        keeper.on_tick = discover
        log.info("job %s %s: %s", job_id, phase, shlex.join(argv))
        env = dict(os.environ, PYTHONUNBUFFERED="1", TERM="dumb", COLUMNS="120")
        with open(out_log, "wb") as fh:
            # same process group as the worker: stopping the worker's unit stops the suite too
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, preexec_fn=_die_with_parent)
            keeper.proc = proc
            try:
                rc: int | None = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # let pytest tear the station down and finish the record
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                rc = None
            finally:
                keeper.proc = None
                keeper.on_tick = None
        discover()
        return StepResult(rc, list(known), out_log)


def run_job_task(task, job_id: str) -> str:
    """The Celery task body: the worker's configuration travels in the app's conf."""
    cfg = WorkerConfig.from_conf(task.app.conf.facehil_worker)
    state = JobRunner(cfg).run(job_id)
    log.info("job %s on %s: %s", job_id, cfg.rig, state)
    return state


# ---------------------------------------------------------------------------------------------
# The worker process


class RigHeartbeat(threading.Thread):
    """Keeps the rig row's heartbeat fresh (the main worker process, between and during jobs)."""

    def __init__(self, db: FleetDB, rig: str, worker: str, interval_s: float):
        super().__init__(name=f"heartbeat-{rig}", daemon=True)
        self.db, self.rig, self.worker, self.interval_s = db, rig, worker, interval_s
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval_s):
            try:
                if not self.db.heartbeat(self.rig, self.worker):
                    log.error("rig %s is now served by another worker; this one should stop", self.rig)
            except Exception as exc:
                log.warning("rig heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)


def serve(cfg: WorkerConfig, *, loglevel: str = "INFO") -> None:
    """Register the rig, then consume its queue until told to stop (SIGTERM: warm shutdown)."""
    from celery import signals

    station = Path(cfg.station_file)
    db = FleetDB.open(cfg.db_url)
    me = worker_identity()
    db.register_rig(cfg.rig, tags=cfg.tags, host=socket.gethostname(), station_file=str(station.resolve()),
                    station_hash=file_sha256(station), worker=me, heartbeat_interval_s=cfg.heartbeat_interval_s)

    def _forget_parent_pool(**_kw) -> None:
        # the pool process must not reuse (or close) the parent's database connections
        db.store.engine.dispose(close=False)

    signals.worker_process_init.connect(_forget_parent_pool, weak=False)
    heartbeat = RigHeartbeat(db, cfg.rig, me, cfg.heartbeat_interval_s)
    heartbeat.start()
    app = make_app(cfg.broker)
    app.conf.facehil_worker = cfg.to_conf()
    app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)(run_job_task)
    try:
        app.worker_main(["worker", f"--loglevel={loglevel}", "-Q", rig_queue(cfg.rig), "-c", "1",
                         "--prefetch-multiplier=1", "-n", f"{cfg.rig}@{socket.gethostname()}",
                         "--without-gossip", "--without-mingle", "--without-heartbeat", "-P", "prefork"])
    finally:
        heartbeat.stop()
        try:
            db.set_rig_state(cfg.rig, "offline", worker=me)
        finally:
            db.close()
