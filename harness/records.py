"""Run records: runs, scenarios, measurements and face-match scores in SQLAlchemy.

A SQLite file by default (WAL mode), any `postgresql://...` URL for a lab. The schema is
managed by the Alembic migrations in `harness/migrations`, applied when a store is opened.

Crash safety:
- each scenario is committed in its own transaction when it finishes, so a killed run keeps
  everything recorded before the kill;
- a run stores its host, boot id, pid (+ process start time) and a heartbeat. A run left
  'running' whose process is gone (same host) or whose heartbeat is older than
  `stale_after_s` (another host) is marked 'aborted' when a store is opened, or by
  `mark_stale_runs_aborted()`.
Face-match rows hold scores and labels only: never images or embeddings.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        TypeDecorator, create_engine, event, insert, select, text, update)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

log = logging.getLogger(__name__)

RUN_STATUSES = ("running", "passed", "failed", "aborted")
SCENARIO_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
DB_ENV = "FACEHIL_DB"
LONGREPR_MAX_CHARS = 4000
# A PostgreSQL URL gets a connect timeout (and a TCP user timeout, for writes whose packets are
# never acknowledged) unless its query string sets them: an unreachable or paused server must
# fail a connect in seconds, not hang a run for the kernel's TCP timeouts.
CONNECT_TIMEOUT_ENV = "FACEHIL_DB_CONNECT_TIMEOUT_S"
DEFAULT_CONNECT_TIMEOUT_S = 10
TCP_USER_TIMEOUT_MS = 30000


class RecordsError(RuntimeError):
    """The records database cannot be opened or used."""


_JSON = JSON(none_as_null=True)  # None is SQL NULL, not the JSON text 'null'


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    station_name: Mapped[str | None] = mapped_column(String(200))
    station_file_hash: Mapped[str | None] = mapped_column(String(64))
    reader_firmware: Mapped[str | None] = mapped_column(String(64))
    reader_features: Mapped[list | None] = mapped_column(_JSON)
    facehil_version: Mapped[str | None] = mapped_column(String(64))
    git_sha: Mapped[str | None] = mapped_column(String(64))
    card_deck: Mapped[list | None] = mapped_column(_JSON)
    dataset_hash: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    host: Mapped[str | None] = mapped_column(String(255))
    host_boot_id: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int | None] = mapped_column(Integer)
    pid_started_at: Mapped[float | None] = mapped_column(Float)
    exit_status: Mapped[int | None] = mapped_column(Integer)
    abort_reason: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict | None] = mapped_column(_JSON)


class Scenario(Base):
    __tablename__ = "scenarios"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    nodeid: Mapped[str] = mapped_column(Text)
    flow: Mapped[str | None] = mapped_column(String(100), index=True)
    params: Mapped[dict | None] = mapped_column(_JSON)
    outcome: Mapped[str] = mapped_column(String(16))
    measurement_outcome: Mapped[str | None] = mapped_column(String(16))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    longrepr: Mapped[str | None] = mapped_column(Text)


class MeasurementRow(Base):
    __tablename__ = "measurements"
    __table_args__ = (Index("ix_measurements_name_run", "name", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(8))
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(32))
    low: Mapped[float | None] = mapped_column(Float)
    high: Mapped[float | None] = mapped_column(Float)
    marginal_low: Mapped[float | None] = mapped_column(Float)
    marginal_high: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[float | None] = mapped_column(Float)
    errors: Mapped[int | None] = mapped_column(Integer)
    trials: Mapped[int | None] = mapped_column(Integer)
    bound_low: Mapped[float | None] = mapped_column(Float)
    bound_high: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    measured_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class FaceMatchRow(Base):
    __tablename__ = "face_matches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    accepted: Mapped[bool] = mapped_column(Boolean)
    genuine: Mapped[bool | None] = mapped_column(Boolean)
    condition: Mapped[str | None] = mapped_column(String(64))
    subject_id: Mapped[str | None] = mapped_column(String(128))


# ---------------------------------------------------------------------------------------------
# What callers hand in


@dataclass
class RunInfo:
    """What a run is: set at start, completed later by `annotate_run` (e.g. firmware once the
    reader has booted)."""

    suite: str = "adhoc"
    station_name: str | None = None
    station_file_hash: str | None = None
    reader_firmware: str | None = None
    reader_features: list[str] | None = None
    facehil_version: str | None = None
    git_sha: str | None = None
    card_deck: list[Any] | None = None
    dataset_hash: str | None = None
    extra: dict[str, Any] | None = None


ANNOTATABLE = ("suite", "station_name", "station_file_hash", "reader_firmware", "reader_features",
               "facehil_version", "git_sha", "card_deck", "dataset_hash", "extra")


@dataclass
class ScenarioResult:
    """One finished scenario. `measurements` and `face_matches` are the `as_record()` dicts of
    harness.measure.Measurement / FaceMatchScore."""

    nodeid: str
    outcome: str
    flow: str | None = None
    params: dict[str, Any] | None = None
    duration_ms: float | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    longrepr: str | None = None
    measurements: list[Mapping[str, Any]] = field(default_factory=list)
    face_matches: list[Mapping[str, Any]] = field(default_factory=list)


@dataclass
class RunData:
    """One run with everything recorded under it (detached ORM rows, safe to read after close)."""

    run: Run
    scenarios: list[Scenario]
    measurements: list[MeasurementRow]
    face_matches: list[FaceMatchRow]


@dataclass(frozen=True)
class HostIdentity:
    host: str
    boot_id: str | None
    pid: int
    pid_started_at: float | None


def host_identity(pid: int | None = None) -> HostIdentity:
    pid = os.getpid() if pid is None else pid
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        boot_id = None
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        started = None
    return HostIdentity(socket.gethostname(), boot_id, pid, started)


def _process_alive(pid: int | None, started_at: float | None) -> bool:
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # a different process that got the same pid later is not our run
        return started_at is None or abs(proc.create_time() - started_at) < 1.0
    except psutil.Error:
        return False


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------------------------
# URLs and engines


def default_db_url() -> str:
    """FACEHIL_DB if set, else a SQLite file in the user's data directory."""
    env = os.environ.get(DB_ENV)
    if env:
        return normalize_url(env)
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return normalize_url(str(base / "facehil" / "records.sqlite"))


def normalize_url(url_or_path: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path (taken as a SQLite file)."""
    if "://" in url_or_path:
        try:
            make_url(url_or_path)
        except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
            raise RecordsError(f"not a database URL: {mask_url(url_or_path)!r} ({exc})") from None
        return url_or_path
    return f"sqlite:///{Path(url_or_path).expanduser().resolve()}"


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def mask_url(url: str) -> str:
    """A URL safe to show or record: its password replaced by ***."""
    try:
        u = make_url(url)
    except Exception:  # not a URL SQLAlchemy parses: hide anything that looks like user:password@
        return _URL_PASSWORD.sub(r"\1***@", url)
    return u.render_as_string(hide_password=True) if u.password else url


def _sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def _sqlite_wal(cur, timeout_s: float = 30.0) -> None:
    """Put the database in WAL mode. Converting needs the file to itself, and SQLite refuses it
    at once ("database is locked", no busy wait) while another process holds a lock: two runs that
    open a new records file together race here. Once in WAL, nothing is converted."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _create_engine(url: str) -> Engine:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _sqlite_wal(cur)  # readers never block the writer
            cur.execute("PRAGMA synchronous=NORMAL")  # durable against a killed process
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        defaults = {"connect_timeout": str(pg_connect_timeout_s()), "tcp_user_timeout": str(TCP_USER_TIMEOUT_MS)}
        query = make_url(url).query
        connect_args = {k: v for k, v in defaults.items() if k not in query}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def pg_connect_timeout_s() -> int:
    """FACEHIL_DB_CONNECT_TIMEOUT_S (whole seconds, libpq's unit; at least 2, libpq's minimum) or 10."""
    raw = os.environ.get(CONNECT_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_CONNECT_TIMEOUT_S
    try:
        value = int(float(raw))
    except ValueError:
        raise RecordsError(f"{CONNECT_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    return max(2, value)


def alembic_config(url: str, connection: Connection | None = None):
    """An Alembic Config pointing at the packaged migrations (works from an installed package)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def migrate(engine: Engine, url: str) -> None:
    """Bring the schema to the newest revision; concurrent openers wait for one another."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # transaction-scoped lock: released at commit; PostgreSQL DDL is transactional
            conn.execute(text("SELECT pg_advisory_xact_lock(7316402451)"))
            command.upgrade(alembic_config(url, conn), "head")
        return
    path = _sqlite_path(url) if engine.dialect.name == "sqlite" else None
    lock = _file_lock(path.with_name(path.name + ".migrate-lock")) if path else contextlib.nullcontext()
    with lock, engine.begin() as conn:
        command.upgrade(alembic_config(url, conn), "head")


# ---------------------------------------------------------------------------------------------
# The store


def _clean_float(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f  # SQLite turns NaN into NULL anyway; be the same everywhere


class RecordStore:
    """Opens (and migrates) a records database. Writers commit per call; readers get detached rows."""

    def __init__(self, url: str | None = None, *, mark_stale: bool = True, stale_after_s: float = 600.0):
        self.url = normalize_url(url) if url else default_db_url()
        self.stale_after_s = stale_after_s
        try:
            self.engine = _create_engine(self.url)
            migrate(self.engine, self.url)
        except RecordsError:
            raise
        except Exception as exc:
            raise RecordsError(f"cannot open records database {mask_url(self.url)}: "
                               f"{exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if mark_stale:
            aborted = self.mark_stale_runs_aborted()
            if aborted:
                log.warning("marked stale run(s) aborted: %s", ", ".join(map(str, aborted)))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self._sessions()

    # -- writing --------------------------------------------------------------------------------

    def start_run(self, info: RunInfo | None = None, *, identity: HostIdentity | None = None,
                  started_at: datetime | None = None) -> int:
        info = info or RunInfo()
        me = identity or host_identity()
        now = started_at or utcnow()
        run = Run(suite=info.suite, status="running", station_name=info.station_name,
                  station_file_hash=info.station_file_hash, reader_firmware=info.reader_firmware,
                  reader_features=info.reader_features, facehil_version=info.facehil_version,
                  git_sha=info.git_sha, card_deck=info.card_deck, dataset_hash=info.dataset_hash,
                  started_at=now, heartbeat_at=now, host=me.host, host_boot_id=me.boot_id, pid=me.pid,
                  pid_started_at=me.pid_started_at, extra=info.extra)
        with self.session() as s, s.begin():
            s.add(run)
        return run.id

    def annotate_run(self, run_id: int, **fields: Any) -> None:
        """Fill in run metadata known only later (reader firmware, features, deck, dataset hash)."""
        unknown = set(fields) - set(ANNOTATABLE)
        if unknown:
            raise RecordsError(f"cannot annotate run with {', '.join(sorted(unknown))}; "
                               f"allowed: {', '.join(ANNOTATABLE)}")
        if not fields:
            return
        with self.session() as s, s.begin():
            s.execute(update(Run).where(Run.id == run_id).values(**fields))

    def heartbeat(self, run_id: int) -> None:
        with self.session() as s, s.begin():
            s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))

    def record_scenario(self, run_id: int, result: ScenarioResult) -> int:
        """Commit one finished scenario with its measurements and face-match scores."""
        if result.outcome not in SCENARIO_OUTCOMES:
            raise RecordsError(f"unknown scenario outcome {result.outcome!r}")
        worst = None
        for m in result.measurements:
            o = m["outcome"]
            if worst is None or _OUTCOME_RANK[o] > _OUTCOME_RANK[worst]:
                worst = o
        longrepr = result.longrepr
        if longrepr and len(longrepr) > LONGREPR_MAX_CHARS:
            longrepr = longrepr[:LONGREPR_MAX_CHARS - 20] + "\n... (truncated)"
        # Core inserts in one transaction: a third of the ORM unit-of-work's cost per scenario
        with self.engine.begin() as conn:
            scenario_id = conn.execute(insert(Scenario).values(
                run_id=run_id, nodeid=result.nodeid, flow=result.flow, params=result.params,
                outcome=result.outcome, measurement_outcome=worst, duration_ms=result.duration_ms,
                started_at=result.started_at, ended_at=result.ended_at, longrepr=longrepr)).inserted_primary_key[0]
            if result.measurements:
                conn.execute(insert(MeasurementRow), [dict(
                    run_id=run_id, scenario_id=scenario_id, name=m["name"], kind=m.get("kind", "value"),
                    value=_clean_float(m.get("value")), unit=m.get("unit"), low=_clean_float(m.get("low")),
                    high=_clean_float(m.get("high")), marginal_low=_clean_float(m.get("marginal_low")),
                    marginal_high=_clean_float(m.get("marginal_high")),
                    confidence=_clean_float(m.get("confidence")), errors=m.get("errors"), trials=m.get("trials"),
                    bound_low=_clean_float(m.get("bound_low")), bound_high=_clean_float(m.get("bound_high")),
                    outcome=m["outcome"],
                    measured_at=datetime.fromtimestamp(m["measured_at"], timezone.utc) if m.get("measured_at")
                    else None,
                ) for m in result.measurements])
            if result.face_matches:
                conn.execute(insert(FaceMatchRow), [dict(
                    run_id=run_id, scenario_id=scenario_id, score=float(f["score"]), threshold=float(f["threshold"]),
                    accepted=bool(f["accepted"]), genuine=f.get("genuine"), condition=f.get("condition"),
                    subject_id=f.get("subject_id"),
                ) for f in result.face_matches])
            conn.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))
        return scenario_id

    def finish_run(self, run_id: int, status: str, exit_status: int | None = None,
                   reason: str | None = None) -> None:
        if status not in RUN_STATUSES or status == "running":
            raise RecordsError(f"a run finishes as passed, failed or aborted, not {status!r}")
        now = utcnow()
        with self.session() as s, s.begin():
            s.execute(update(Run).where(Run.id == run_id).values(
                status=status, ended_at=now, heartbeat_at=now, exit_status=exit_status, abort_reason=reason))

    def mark_stale_runs_aborted(self, stale_after_s: float | None = None,
                                now: datetime | None = None) -> list[int]:
        """Mark 'running' runs whose process is gone as 'aborted'; returns their ids.

        Same host and boot: the recorded pid (with its start time) must still be alive.
        Another host (or the same host after a reboot, whose pids mean nothing): the heartbeat
        must be younger than `stale_after_s`.
        """
        stale_after_s = self.stale_after_s if stale_after_s is None else stale_after_s
        now = now or utcnow()
        me = host_identity()
        with self.session() as s:
            running = s.execute(select(Run.id, Run.host, Run.host_boot_id, Run.pid, Run.pid_started_at,
                                       Run.heartbeat_at, Run.started_at).where(Run.status == "running")).all()
        aborted = []
        for rid, host, boot_id, pid, pid_started, heartbeat, started in running:
            last = heartbeat or started
            if host == me.host and boot_id == me.boot_id:
                if _process_alive(pid, pid_started):
                    continue
                reason = f"process {pid} on {host} is gone"
            else:
                age_s = (now - last).total_seconds()
                if age_s <= stale_after_s:
                    continue
                reason = f"no heartbeat from {host} for {age_s:.0f} s"
            with self.session() as s, s.begin():
                # conditional: a run that finished meanwhile keeps its own status
                res = s.execute(update(Run).where(Run.id == rid, Run.status == "running").values(
                    status="aborted", ended_at=last, abort_reason=reason))
            if res.rowcount:
                aborted.append(rid)
        return aborted

    # -- reading --------------------------------------------------------------------------------

    def latest_run_id(self, suite: str | None = None) -> int | None:
        q = select(Run.id).order_by(Run.id.desc()).limit(1)
        if suite:
            q = q.where(Run.suite == suite)
        with self.session() as s:
            return s.execute(q).scalar()

    def list_runs(self, last: int = 30, suite: str | None = None,
                  statuses: Sequence[str] | None = None) -> list[Run]:
        """The newest `last` runs, oldest first."""
        q = select(Run).order_by(Run.id.desc()).limit(last)
        if suite:
            q = q.where(Run.suite == suite)
        if statuses:
            q = q.where(Run.status.in_(list(statuses)))
        with self.session() as s:
            return list(reversed(s.execute(q).scalars().all()))

    def load_run(self, run_id: int) -> RunData:
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise RecordsError(f"no run {run_id} in {mask_url(self.url)}")
            scenarios = s.execute(select(Scenario).where(Scenario.run_id == run_id)
                                  .order_by(Scenario.id)).scalars().all()
            measurements = s.execute(select(MeasurementRow).where(MeasurementRow.run_id == run_id)
                                     .order_by(MeasurementRow.id)).scalars().all()
            matches = s.execute(select(FaceMatchRow).where(FaceMatchRow.run_id == run_id)
                                .order_by(FaceMatchRow.id)).scalars().all()
        return RunData(run, list(scenarios), list(measurements), list(matches))

    def measurements_for_runs(self, run_ids: Sequence[int]) -> list[MeasurementRow]:
        if not run_ids:
            return []
        with self.session() as s:
            return list(s.execute(select(MeasurementRow).where(MeasurementRow.run_id.in_(list(run_ids)))
                                  .order_by(MeasurementRow.run_id, MeasurementRow.id)).scalars().all())

    def scenario_counts(self, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """{run_id: {outcome: count}} for the given runs."""
        from sqlalchemy import func

        out: dict[int, dict[str, int]] = {rid: {} for rid in run_ids}
        if not run_ids:
            return out
        with self.session() as s:
            rows = s.execute(select(Scenario.run_id, Scenario.outcome, func.count())
                             .where(Scenario.run_id.in_(list(run_ids)))
                             .group_by(Scenario.run_id, Scenario.outcome)).all()
        for rid, outcome, n in rows:
            out[rid][outcome] = n
        return out


_OUTCOME_RANK = {"PASS": 0, "MARGINAL": 1, "FAIL": 2}


class Heartbeat:
    """Keeps a run's heartbeat fresh while long scenarios run (its own thread and connection)."""

    def __init__(self, store: RecordStore, run_id: int, interval_s: float = 30.0):
        self._store, self._run_id, self._interval_s = store, run_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"facehil-heartbeat-{run_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._store.heartbeat(self._run_id)
            except Exception as exc:  # a missed beat is not worth killing the run for
                log.warning("run %s heartbeat failed: %s", self._run_id, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
