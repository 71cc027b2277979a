"""`facehil worker`: serves one rig's queue and runs each job on that rig.

A job, in order:
1. skip it if its row says it is finished (a re-delivered duplicate) or past its deadline;
2. take the rig's lease (waiting while another job holds it) and keep renewing it from a
   thread; when it is lost, or cannot be renewed before it runs out (the database refuses or
   does not answer), the suite's process tree is killed: a job never runs on a rig it does
   not hold;
3. the health check (`facehil run` of the health selection): on failure the rig is quarantined
   and the job finishes as 'quarantined', with the health run's id; a pass lifts a quarantine;
4. the suite itself: `facehil run SUITE --station FILE --record [-k EXPR]` (the database URL in
   FACEHIL_DB, never on a command line), as a subprocess, so a crashing suite cannot take the
   worker down and records take the usual path; a suite that lost records (exit 6) fails the
   job, naming them.
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
from logging.handlers import RotatingFileHandler
from pathlib import Path

import psutil

from harness.fleet import CAMPAIGN_JOB, RUN_JOB_TASK, BrokerSettings, make_app, rig_queue
from harness.fleet_db import TERMINAL_JOB_STATES, FleetDB, FleetError, worker_identity
from harness.commands.run import LOST_PREFIX
from harness.records import DB_ENV, utcnow

log = logging.getLogger(__name__)

DEFAULT_HEALTH_CHECK = "nightly -k test_health"
DEFAULT_LOG_DIR_MAX_BYTES = 500 * 1024 * 1024
WORKER_LOG_NAME = "worker.log"  # the worker's own log in its log folder, rotated
WORKER_LOG_MAX_BYTES = 10 * 1024 * 1024
WORKER_LOG_BACKUPS = 3
LEASE_KILL_MARGIN_S = 2.0  # the suite is killed this long (at most ttl/10) before its lease would run out
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
    suite_timeout_s: float = 3 * 3600.0  # also a campaign shard's
    max_attempts: int = 3
    log_dir: str = ""
    log_dir_max_bytes: int = DEFAULT_LOG_DIR_MAX_BYTES  # older jobs' logs are deleted beyond this

    def to_conf(self) -> dict:
        return asdict(self)

    @classmethod
    def from_conf(cls, conf: dict) -> WorkerConfig:
        conf = dict(conf)
        conf["broker"] = BrokerSettings(**conf["broker"])
        return cls(**conf)


def campaign_command(run_command: list[str]) -> list[str]:
    """`facehil campaign run` from the worker's `facehil run` command (a lab's wrapper kept)."""
    if run_command and run_command[-1] == "run":
        return [*run_command[:-1], "campaign", "run"]
    return [*run_command, "campaign", "run"]


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


def lost_scenarios(out_log: Path) -> list[str]:
    """The scenarios a `facehil run` named as not recorded (its "NOT RECORDED: " lines)."""
    try:
        text = out_log.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(LOST_PREFIX, 1)[1].strip() for line in text.splitlines() if LOST_PREFIX in line]


def job_log_dir(cfg: WorkerConfig) -> Path:
    return Path(cfg.log_dir or Path.home() / ".local" / "state" / "facehil" / "fleet")


def worker_log_handler(log_dir: Path, max_bytes: int = WORKER_LOG_MAX_BYTES,
                       backups: int = WORKER_LOG_BACKUPS) -> logging.Handler:
    """The worker's own log, `<log_dir>/worker.log`, rotated: at most (backups + 1) x max_bytes."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(log_dir / WORKER_LOG_NAME, maxBytes=max_bytes, backupCount=backups,
                                  encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"))
    return handler


def prune_logs(log_dir: Path, max_bytes: int, *, keep_prefix: str = "") -> list[Path]:
    """Delete the oldest job logs until the folder holds at most `max_bytes` (files of the
    running job, named `keep_prefix...`, are kept; the worker's own log rotates by itself);
    returns what was deleted."""
    files = []
    for path in log_dir.iterdir():
        if path.name.startswith(WORKER_LOG_NAME):
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        if path.is_file():
            files.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in files)
    deleted = []
    for _, size, path in sorted(files):
        if total <= max_bytes:
            break
        if keep_prefix and path.name.startswith(keep_prefix):
            continue
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        deleted.append(path)
    if deleted:
        log.info("deleted %d old log file(s) from %s (budget %d bytes)", len(deleted), log_dir, max_bytes)
    return deleted


# ---------------------------------------------------------------------------------------------
# Running one job (in the Celery pool process)


_libc_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork


def _die_with_parent() -> None:
    _libc_prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a suite and everything it started (pytest, a simulated station): the suite may not
    go on driving a rig it no longer holds, and nothing of it may outlive it."""
    try:
        top = psutil.Process(proc.pid)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        procs = []
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    if proc.poll() is None:
        proc.kill()


class LeaseKeeper(threading.Thread):
    """Renews the rig lease every ttl/3 and holds the suite to it.

    The suite is killed when the lease is lost (someone else holds it) and when it cannot be
    renewed before it runs out: the database refuses connections, or hangs (a paused server
    answers nothing, so each renewal runs in its own thread and the keeper goes by its own
    clock). The lease is counted from the start of the last successful renewal, which is no
    later than the database's own count, so the suite stops before any other job can take
    the rig."""

    def __init__(self, db: FleetDB, cfg: WorkerConfig, holder: str, job_id: str, *,
                 acquired_monotonic: float | None = None):
        super().__init__(name=f"lease-{cfg.rig}", daemon=True)
        self.db, self.cfg, self.holder, self.job_id = db, cfg, holder, job_id
        self.lost = threading.Event()
        self.reason: str | None = None
        self._halt = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.on_tick = None  # callable run after each renewal (run-id discovery)
        ttl_s = cfg.lease_ttl_s
        self.valid_until = (time.monotonic() if acquired_monotonic is None else acquired_monotonic) + ttl_s
        # stop the suite this long before the lease would expire (the kill itself takes a moment)
        self.kill_margin_s = min(LEASE_KILL_MARGIN_S, ttl_s / 10)
        self._box: dict | None = None  # the renewal call in flight (or the last one)

    def run(self) -> None:
        ttl_s = self.cfg.lease_ttl_s
        wait_s = ttl_s / 3
        while not self._halt.wait(wait_s):
            outcome, detail, started = self._renew(deadline=self.valid_until - self.kill_margin_s)
            if outcome is True:
                self.valid_until = started + ttl_s
                wait_s = ttl_s / 3
                continue
            if outcome is False:
                self._stop_suite(f"lease on {self.cfg.rig} is no longer ours (expired or taken)")
                return
            remaining_s = self.valid_until - self.kill_margin_s - time.monotonic()
            if remaining_s <= 0:
                self._stop_suite(f"lease on {self.cfg.rig} could not be renewed before it ran out ({detail})")
                return
            log.warning("lease renewal for %s failed (%s); %.1f s left", self.cfg.rig, detail, remaining_s)
            wait_s = min(ttl_s / 10, remaining_s)  # try again soon

    def _renew(self, deadline: float) -> tuple[bool | None, str, float]:
        """(True: renewed, False: the lease is not ours, None: an error or no answer by the
        deadline; the reason; when the call started)."""
        box = self._box
        if box is None or box["done"].is_set():  # else the previous call still hangs: wait for it
            box = self._box = {"done": threading.Event(), "started": time.monotonic()}
            threading.Thread(target=self._call, args=(box,), name=f"lease-renew-{self.cfg.rig}",
                             daemon=True).start()
        if not box["done"].wait(max(0.0, deadline - time.monotonic())):
            return None, "the database did not answer", box["started"]
        if "error" in box:
            return None, (str(box["error"]).strip().splitlines() or ["error"])[0], box["started"]
        return bool(box["ok"]), "", box["started"]

    def _call(self, box: dict) -> None:
        try:
            box["ok"] = self.db.renew(self.cfg.rig, self.holder, self.job_id, self.cfg.lease_ttl_s)
        except Exception as exc:  # the database is away
            box["error"] = exc
        box["done"].set()
        if box.get("ok") and self.on_tick is not None:
            try:
                self.on_tick()
            except Exception as exc:
                log.debug("progress update failed: %s", exc)

    def _stop_suite(self, reason: str) -> None:
        self.reason = reason
        log.error("%s; stopping the suite", reason)
        self.lost.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            kill_tree(proc)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)


@dataclass
class StepResult:
    rc: int | None  # None: timed out
    run_ids: list[int]
    log_path: Path
    lost: list[str] = field(default_factory=list)  # finished scenarios the suite could not record


class JobRunner:
    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        self.host = socket.gethostname()
        self.log_dir = job_log_dir(cfg)

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
        acquired = self._wait_for_lease(db, job_id, holder, job.deadline_at)
        if acquired is None:
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
            keeper = LeaseKeeper(db, cfg, holder, job_id, acquired_monotonic=acquired)
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
            try:
                db.release(cfg.rig, holder, job_id)
                db.set_rig_state(cfg.rig, "online")
            except Exception as exc:  # the database is away: the lease runs out by itself
                log.error("could not release rig %s: %s", cfg.rig, exc)

    def _wait_for_lease(self, db: FleetDB, job_id: str, holder: str, deadline_at) -> float | None:
        """Take the lease, waiting for another job's lease to end (or a dead holder's to expire);
        returns the monotonic time the successful attempt started (the lease counts from there),
        None if the job ended meanwhile.

        A lease held for this very job is either a duplicate delivery (the job finishes and we
        skip it) or a lost worker's (its lease expires and we run the job again): wait either way."""
        cfg = self.cfg
        logged = False
        while True:
            attempt_at = time.monotonic()
            if db.acquire(cfg.rig, holder, job_id, cfg.lease_ttl_s):
                return attempt_at
            info = db.lease(cfg.rig)
            if not logged:
                log.info("job %s waits for rig %s: lease held by %s for job %s until %s", job_id, cfg.rig,
                         info.holder, info.job_id, info.expires_at)
                logged = True
            if deadline_at is not None and db.now() > deadline_at:
                db.finish_job(job_id, "lost", detail=f"rig held by job {info.job_id} ({info.holder}) "
                                                     f"until past the deadline")
                return None
            if db.job(job_id).state in TERMINAL_JOB_STATES:
                return None
            time.sleep(min(1.0, cfg.lease_ttl_s / 4))

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
            db.finish_job(job_id, "aborted", detail=f"lease lost during the health check: {keeper.reason}")
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
        if job.suite == CAMPAIGN_JOB:
            return self._campaign(db, job, keeper, station_hash)
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
            db.finish_job(job_id, "aborted", detail=f"lease lost: the suite was stopped ({keeper.reason})",
                          exit_status=result.rc)
            return "aborted"
        if result.rc == 0:
            state, detail = "passed", None
        elif result.rc is None:
            state, detail = "failed", f"suite timed out after {cfg.suite_timeout_s:.0f} s (log {result.log_path})"
        elif result.rc < 0:
            state, detail = "aborted", f"suite killed by signal {-result.rc} (log {result.log_path})"
        elif result.lost:
            shown = ", ".join(result.lost[:10]) + (", ..." if len(result.lost) > 10 else "")
            state, detail = "failed", (f"suite exited {result.rc}: {len(result.lost)} scenario(s) not recorded in "
                                       f"the database: {shown} (log {result.log_path})")
        else:
            state, detail = "failed", f"suite exited {result.rc} (log {result.log_path})"
        if last_run is None and state == "passed":
            state, detail = "failed", "the suite passed but recorded no run"
        db.finish_job(job_id, state, detail=detail, exit_status=result.rc)
        return state

    def _campaign(self, db: FleetDB, job, keeper: LeaseKeeper, station_hash: str | None) -> str:
        """A campaign shard (`facehil fleet campaign`): `facehil campaign run --station FILE --plan
        SHARD.toml`, its run recorded through FACEHIL_DB like a suite's. A shard whose earlier
        attempt was lost is resumed (`--resume RUN`), so no transaction runs twice."""
        cfg, job_id = self.cfg, job.id
        db.update_job(job_id, phase="campaign")
        command = campaign_command(cfg.run_command)
        prior = self._resumable(db, job.run_ids or [])
        if prior is not None:
            log.warning("job %s: resuming campaign run %d of the lost attempt", job_id, prior)
            argv = [*command, "--station", cfg.station_file, "--resume", str(prior)]
        else:
            plan_text = (job.args or {}).get("plan_toml")
            if not plan_text:  # an empty plan would run the default one over every card
                db.finish_job(job_id, "failed", detail="campaign job without a plan (plan_toml)")
                return "failed"
            self.log_dir.mkdir(parents=True, exist_ok=True)
            plan_path = self.log_dir / f"{job_id}-{job.attempts}-campaign.plan.toml"
            plan_path.write_text(plan_text, encoding="utf-8")
            argv = [*command, "--station", cfg.station_file, "--plan", str(plan_path)]
        result = self._step(job_id, job.attempts, "campaign", [], keeper, station_hash, cfg.suite_timeout_s, db,
                            track_runs=True, argv=argv, prior_runs=[prior] if prior is not None else [])
        last_run = result.run_ids[-1] if result.run_ids else None
        db.set_last(cfg.rig, job_id, last_run)
        if keeper.lost.is_set():
            db.finish_job(job_id, "aborted", detail=f"lease lost: the campaign was stopped ({keeper.reason})",
                          exit_status=result.rc)
            return "aborted"
        # exit 1 is a shard whose own verdict FAILed: it measured, and the merged run is judged
        if result.rc in (0, 1) and last_run is not None:
            state, detail = "passed", None
        elif result.rc in (0, 1):
            state, detail = "failed", f"the campaign exited {result.rc} but recorded no run (log {result.log_path})"
        elif result.rc is None:
            state, detail = "failed", f"campaign timed out after {cfg.suite_timeout_s:.0f} s (log {result.log_path})"
        elif result.rc < 0:
            state, detail = "aborted", f"campaign killed by signal {-result.rc} (log {result.log_path})"
        else:
            state, detail = "failed", f"campaign exited {result.rc} (log {result.log_path})"
        db.finish_job(job_id, state, detail=detail, exit_status=result.rc)
        return state

    def _resumable(self, db: FleetDB, run_ids: list[int]) -> int | None:
        """The lost attempt's campaign run, if it stopped before its schedule was done."""
        if not run_ids:
            return None
        from harness.campaign.records import CampaignRun
        from harness.records import Run

        with db.session() as s:
            run, camp = s.get(Run, run_ids[-1]), s.get(CampaignRun, run_ids[-1])
            if run is None or camp is None or run.status == "running":
                return None
            return run.id if camp.stopped_by in (None, "interrupted") else None

    def _firmware_of(self, db: FleetDB, run_id: int | None) -> str | None:
        if run_id is None:
            return None
        from harness.records import Run

        with db.session() as s:
            run = s.get(Run, run_id)
            return run.reader_firmware if run else None

    def _step(self, job_id: str, attempt: int, phase: str, args: list[str], keeper: LeaseKeeper,
              station_hash: str | None, timeout_s: float, db: FleetDB, *, track_runs: bool,
              extra: tuple[str, ...] | list[str] = (), argv: list[str] | None = None,
              prior_runs: list[int] | tuple[int, ...] = ()) -> StepResult:
        cfg = self.cfg
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{job_id}-{attempt}-{phase}"  # one log per attempt: a lost attempt's log stays
        pytest_log = self.log_dir / f"{stem}.pytest.log"
        out_log = self.log_dir / f"{stem}.log"
        results = self.log_dir / f"{stem}.results.jsonl"
        prune_logs(self.log_dir, cfg.log_dir_max_bytes, keep_prefix=f"{job_id}-")
        # the database URL (and its password) goes through the environment: never on a command
        # line that `ps` shows or this log records
        if argv is None:
            argv = [*cfg.run_command, *args, "--station", cfg.station_file, "--record", "--log", str(pytest_log),
                    "--results", str(results), *extra]
        since = utcnow()
        known: list[int] = list(prior_runs)

        def discover() -> None:
            ids = [*prior_runs, *(i for i in db.runs_since(station_hash, since, self.host) if i not in prior_runs)]
            if ids != known:
                known[:] = ids
                if track_runs:
                    db.update_job(job_id, run_ids=list(ids))

        keeper.on_tick = discover
        log.info("job %s %s: %s", job_id, phase, shlex.join(argv))
        env = dict(os.environ, PYTHONUNBUFFERED="1", TERM="dumb", COLUMNS="120", **{DB_ENV: cfg.db_url})
        if keeper.lost.is_set():  # the lease ran out between two steps: do not start on the rig
            return StepResult(None, [], out_log)
        with open(out_log, "wb") as fh:
            # same process group as the worker: stopping the worker's unit stops the suite too
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, preexec_fn=_die_with_parent)
            keeper.proc = proc
            if keeper.lost.is_set():  # lost while the suite was starting
                kill_tree(proc)
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
        return StepResult(rc, list(known), out_log, lost_scenarios(out_log))


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
    own_log = worker_log_handler(job_log_dir(cfg))

    def _log_to_file(logger=None, **_kw) -> None:  # beside Celery's own handler (stderr: the journal)
        logger.addHandler(own_log)

    signals.after_setup_logger.connect(_log_to_file, weak=False)
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
