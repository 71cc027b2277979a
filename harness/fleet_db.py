"""The fleet's shared state in the records database: rigs, their leases, and fleet jobs.

Tables (Alembic revision 0002_fleet, on the records' `Base`):
- `fleet_rigs`: one row per rig (name, tags, host, station file, state, heartbeat, last run);
- `fleet_leases`: one row per rig; a lease is (holder, job_id, expires_at). A holder keeps it
  by renewing before it expires; a dead holder's lease simply expires (no stale locks);
- `fleet_jobs`: one row per enqueued suite on one rig, the source of truth for progress.

Every lease change is a single conditional UPDATE, so acquiring is atomic on PostgreSQL
(a concurrent UPDATE re-checks the WHERE clause on the committed row) and on SQLite
(writers are serialised). Times come from the database's clock, so hosts with skewed
clocks still agree on who holds a rig.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from harness.records import _JSON, Base, RecordStore, Run, UTCDateTime, utcnow

log = logging.getLogger(__name__)

RIG_STATES = ("online", "busy", "offline", "quarantined")
JOB_STATES = ("queued", "running", "passed", "failed", "quarantined", "aborted", "lost")
TERMINAL_JOB_STATES = frozenset({"passed", "failed", "quarantined", "aborted", "lost"})
OFFLINE_AFTER_BEATS = 3  # a rig is offline after this many missed heartbeats


class FleetError(RuntimeError):
    """A fleet operation cannot be done (unknown rig, bad state, ...)."""


class Rig(Base):
    __tablename__ = "fleet_rigs"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    tags: Mapped[list | None] = mapped_column(_JSON)
    host: Mapped[str | None] = mapped_column(String(255))
    station_file: Mapped[str | None] = mapped_column(Text)
    station_hash: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_interval_s: Mapped[float] = mapped_column(Float)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    quarantined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_job_id: Mapped[str | None] = mapped_column(String(36))
    last_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))


class Lease(Base):
    __tablename__ = "fleet_leases"

    rig: Mapped[str] = mapped_column(ForeignKey("fleet_rigs.name", ondelete="CASCADE"), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(255))
    job_id: Mapped[str | None] = mapped_column(String(36))
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Job(Base):
    __tablename__ = "fleet_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    batch: Mapped[str] = mapped_column(String(36), index=True)
    rig: Mapped[str] = mapped_column(String(100), index=True)
    suite: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict | None] = mapped_column(_JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    phase: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    health_run_id: Mapped[int | None] = mapped_column(Integer)
    run_ids: Mapped[list | None] = mapped_column(_JSON)
    exit_status: Mapped[int | None] = mapped_column(Integer)


@dataclass(frozen=True)
class LeaseInfo:
    rig: str
    holder: str | None
    job_id: str | None
    expires_at: datetime | None
    live: bool


@dataclass(frozen=True)
class RigStatus:
    """A rig as `fleet status` shows it: the effective state, derived from heartbeat and lease."""

    name: str
    state: str
    tags: list[str]
    host: str | None
    heartbeat_age_s: float | None
    lease: LeaseInfo
    quarantine_reason: str | None
    last_job: Job | None
    last_run: Run | None


def worker_identity(pid: int | None = None) -> str:
    """holder id of a process: host:pid."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


class FleetDB:
    """Rig registry, leases and jobs over an open RecordStore (which applied the migrations)."""

    def __init__(self, store: RecordStore):
        self.store = store

    @classmethod
    def open(cls, url: str, *, mark_stale: bool = True) -> FleetDB:
        return cls(RecordStore(url, mark_stale=mark_stale))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> FleetDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def session(self) -> Session:
        return self.store.session()

    def now(self, s: Session | None = None) -> datetime:
        """The database's clock (PostgreSQL) or this host's (SQLite, which is local anyway)."""
        if self.store.dialect != "postgresql":
            return utcnow()
        if s is not None:
            return s.execute(text("SELECT clock_timestamp()")).scalar_one()
        with self.session() as s2:
            return s2.execute(text("SELECT clock_timestamp()")).scalar_one()

    # -- rigs ---------------------------------------------------------------------------------

    def register_rig(self, name: str, *, tags: list[str], host: str, station_file: str,
                     station_hash: str | None, worker: str, heartbeat_interval_s: float) -> None:
        """Create or refresh a rig (and its lease row). A quarantined rig stays quarantined."""
        if not name or len(name) > 100:
            raise FleetError(f"rig name must be 1..100 characters, got {name!r}")
        with self.session() as s, s.begin():
            now = self.now(s)
            rig = s.get(Rig, name, with_for_update=True)
            if rig is None:
                s.add(Rig(name=name, tags=sorted(set(tags)), host=host, station_file=station_file,
                          station_hash=station_hash, state="online", worker=worker, heartbeat_at=now,
                          heartbeat_interval_s=heartbeat_interval_s, registered_at=now))
            else:
                rig.tags, rig.host, rig.station_file = sorted(set(tags)), host, station_file
                rig.station_hash, rig.worker, rig.heartbeat_at = station_hash, worker, now
                rig.heartbeat_interval_s = heartbeat_interval_s
                if rig.state != "quarantined":
                    rig.state = "online"
        try:
            with self.session() as s, s.begin():
                if s.get(Lease, name) is None:
                    s.add(Lease(rig=name))
        except IntegrityError:  # another worker created it meanwhile: fine
            pass

    def heartbeat(self, name: str, worker: str) -> bool:
        """Refresh the rig's heartbeat; False if the rig row is now another worker's."""
        with self.session() as s, s.begin():
            res = s.execute(update(Rig).where(Rig.name == name, Rig.worker == worker)
                            .values(heartbeat_at=self.now(s)))
        return res.rowcount == 1

    def set_rig_state(self, name: str, state: str, *, worker: str | None = None) -> None:
        """online|busy|offline; never lifts a quarantine (only a passing health check does)."""
        if state not in ("online", "busy", "offline"):
            raise FleetError(f"set_rig_state takes online, busy or offline, not {state!r}")
        q = update(Rig).where(Rig.name == name, Rig.state != "quarantined")
        if worker is not None:
            q = q.where(Rig.worker == worker)
        with self.session() as s, s.begin():
            s.execute(q.values(state=state))

    def quarantine(self, name: str, reason: str) -> None:
        with self.session() as s, s.begin():
            s.execute(update(Rig).where(Rig.name == name).values(
                state="quarantined", quarantine_reason=reason, quarantined_at=self.now(s)))

    def clear_quarantine(self, name: str, state: str = "online") -> bool:
        with self.session() as s, s.begin():
            res = s.execute(update(Rig).where(Rig.name == name, Rig.state == "quarantined").values(
                state=state, quarantine_reason=None, quarantined_at=None))
        return res.rowcount == 1

    def set_last(self, name: str, job_id: str, run_id: int | None) -> None:
        values: dict[str, Any] = {"last_job_id": job_id}
        if run_id is not None:
            values["last_run_id"] = run_id
        with self.session() as s, s.begin():
            s.execute(update(Rig).where(Rig.name == name).values(**values))

    def rigs(self) -> list[Rig]:
        with self.session() as s:
            return list(s.execute(select(Rig).order_by(Rig.name)).scalars().all())

    def select_rigs(self, selectors: list[str] | None) -> list[Rig]:
        """Rigs named by any selector or tagged with it; all rigs when there is none.
        A selector that matches no rig is an error (a typo must not silently skip a rig)."""
        rigs = self.rigs()
        if not selectors:
            return rigs
        chosen: dict[str, Rig] = {}
        for sel in selectors:
            hits = [r for r in rigs if r.name == sel or sel in (r.tags or [])]
            if not hits:
                known = ", ".join(r.name for r in rigs) or "none registered"
                raise FleetError(f"no rig is named or tagged {sel!r} (rigs: {known})")
            chosen.update((r.name, r) for r in hits)
        return [chosen[n] for n in sorted(chosen)]

    # -- leases -------------------------------------------------------------------------------

    def acquire(self, rig: str, holder: str, job_id: str, ttl_s: float) -> bool:
        """Take the rig's lease for this job if it is free or expired (or already ours)."""
        with self.session() as s, s.begin():
            now = self.now(s)
            res = s.execute(
                update(Lease)
                .where(Lease.rig == rig)
                .where((Lease.holder.is_(None)) | (Lease.expires_at < now)
                       | ((Lease.holder == holder) & (Lease.job_id == job_id)))
                .values(holder=holder, job_id=job_id, acquired_at=now, renewed_at=now,
                        expires_at=now + timedelta(seconds=ttl_s)))
            if res.rowcount == 0 and s.get(Lease, rig) is None:
                raise FleetError(f"rig {rig!r} is not registered (no lease row)")
        return res.rowcount == 1

    def renew(self, rig: str, holder: str, job_id: str, ttl_s: float) -> bool:
        """Extend our lease; False if it expired or is someone else's (then stop using the rig)."""
        with self.session() as s, s.begin():
            now = self.now(s)
            res = s.execute(
                update(Lease)
                .where(Lease.rig == rig, Lease.holder == holder, Lease.job_id == job_id,
                       Lease.expires_at >= now)
                .values(renewed_at=now, expires_at=now + timedelta(seconds=ttl_s)))
        return res.rowcount == 1

    def release(self, rig: str, holder: str, job_id: str) -> bool:
        with self.session() as s, s.begin():
            res = s.execute(
                update(Lease).where(Lease.rig == rig, Lease.holder == holder, Lease.job_id == job_id)
                .values(holder=None, job_id=None, acquired_at=None, renewed_at=None, expires_at=None))
        return res.rowcount == 1

    def lease(self, rig: str) -> LeaseInfo:
        with self.session() as s:
            now = self.now(s)
            row = s.get(Lease, rig)
        if row is None:
            raise FleetError(f"rig {rig!r} is not registered")
        live = row.holder is not None and row.expires_at is not None and row.expires_at >= now
        return LeaseInfo(rig, row.holder, row.job_id, row.expires_at, live)

    # -- jobs ---------------------------------------------------------------------------------

    def add_job(self, job_id: str, batch: str, rig: str, suite: str, args: dict | None,
                deadline_s: float) -> None:
        with self.session() as s, s.begin():
            now = self.now(s)
            s.add(Job(id=job_id, batch=batch, rig=rig, suite=suite, args=args or {}, state="queued",
                      attempts=0, enqueued_at=now, deadline_at=now + timedelta(seconds=deadline_s),
                      run_ids=[]))

    def job(self, job_id: str) -> Job | None:
        with self.session() as s:
            return s.get(Job, job_id)

    def jobs(self, batch: str) -> list[Job]:
        with self.session() as s:
            return list(s.execute(select(Job).where(Job.batch == batch).order_by(Job.rig)).scalars().all())

    def start_attempt(self, job_id: str, worker: str) -> Job | None:
        """Mark a queued (or re-delivered running) job as running by us; None if it is finished."""
        with self.session() as s, s.begin():
            now = self.now(s)
            res = s.execute(update(Job).where(Job.id == job_id, Job.state.in_(("queued", "running")))
                            .values(state="running", phase="lease", worker=worker, started_at=now,
                                    attempts=Job.attempts + 1, detail=None))
            if res.rowcount == 0:
                return None
            return s.get(Job, job_id)

    def update_job(self, job_id: str, **values: Any) -> None:
        with self.session() as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id).values(**values))

    def finish_job(self, job_id: str, state: str, *, detail: str | None = None,
                   exit_status: int | None = None, only_if_not_terminal: bool = True) -> bool:
        if state not in TERMINAL_JOB_STATES:
            raise FleetError(f"a job finishes as one of {sorted(TERMINAL_JOB_STATES)}, not {state!r}")
        q = update(Job).where(Job.id == job_id)
        if only_if_not_terminal:
            q = q.where(Job.state.notin_(list(TERMINAL_JOB_STATES)))
        with self.session() as s, s.begin():
            res = s.execute(q.values(state=state, phase=None, detail=detail, exit_status=exit_status,
                                     ended_at=self.now(s)))
        return res.rowcount == 1

    def runs_since(self, station_hash: str | None, since: datetime, host: str) -> list[int]:
        """Records runs of one station started by this host since a time (a job's attempt)."""
        if station_hash is None:
            return []
        with self.session() as s:
            return list(s.execute(select(Run.id).where(
                Run.station_file_hash == station_hash, Run.host == host, Run.started_at >= since)
                .order_by(Run.id)).scalars().all())

    # -- status -------------------------------------------------------------------------------

    def status(self) -> list[RigStatus]:
        out = []
        with self.session() as s:
            now = self.now(s)
            for rig in s.execute(select(Rig).order_by(Rig.name)).scalars().all():
                lease_row = s.get(Lease, rig.name)
                live = bool(lease_row and lease_row.holder and lease_row.expires_at
                            and lease_row.expires_at >= now)
                lease = LeaseInfo(rig.name, lease_row.holder if lease_row else None,
                                  lease_row.job_id if lease_row else None,
                                  lease_row.expires_at if lease_row else None, live)
                age = (now - rig.heartbeat_at).total_seconds() if rig.heartbeat_at else None
                last_job = s.get(Job, rig.last_job_id) if rig.last_job_id else None
                last_run = s.get(Run, rig.last_run_id) if rig.last_run_id else None
                out.append(RigStatus(rig.name, effective_state(rig, live, age), list(rig.tags or []), rig.host,
                                     age, lease, rig.quarantine_reason, last_job, last_run))
        return out


def effective_state(rig: Rig, lease_live: bool, heartbeat_age_s: float | None) -> str:
    """What a rig really is now: a dead worker cannot write 'offline', so a stale heartbeat is."""
    if rig.state == "quarantined":
        return "quarantined"
    if rig.state == "offline" or heartbeat_age_s is None \
            or heartbeat_age_s > OFFLINE_AFTER_BEATS * rig.heartbeat_interval_s:
        return "offline"
    if lease_live:
        return "busy"
    return "online"
