"""Dispatch of suites to rig hosts on Celery with a Redis broker; the records DB holds the state.

One queue per rig (`facehil.rig.<name>`), consumed by that rig's `facehil worker` alone with
concurrency 1, prefetch 1 and late acks: a message is acknowledged only when its job is over,
so a killed worker's job stays in Redis and is delivered again (after the broker's visibility
timeout; at once if only the pool process died, `task_reject_on_worker_lost`).

Redelivery can duplicate a job, so the job row in the database is the truth and the worker
is idempotent: a finished job is never run again, and a rig is used only under its lease
(`harness.fleet_db`). Celery stores no results: `facehil fleet run` follows the job rows.
The worker side is `harness.fleet_worker`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from celery import Celery

from harness.fleet_db import TERMINAL_JOB_STATES, FleetDB, FleetError, Job

log = logging.getLogger(__name__)

RUN_JOB_TASK = "facehil.fleet.run_job"
CAMPAIGN_JOB = "campaign"  # the job kind of a campaign shard (`facehil fleet campaign`); others are suites
QUEUE_PREFIX = "facehil.rig."
BROKER_ENV = "FACEHIL_BROKER"
DEFAULT_VISIBILITY_TIMEOUT_S = 1800.0  # longer than a nightly: a live job is rarely re-delivered
DEFAULT_RESTORE_INTERVAL_S = 10.0


def rig_queue(rig: str) -> str:
    return f"{QUEUE_PREFIX}{rig}"


@dataclass(frozen=True)
class BrokerSettings:
    url: str
    visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S
    restore_interval_s: float = DEFAULT_RESTORE_INTERVAL_S


def make_app(broker: BrokerSettings) -> Celery:
    """The Celery app for both sides; `harness.fleet_worker` registers the task body."""
    if not broker.url.startswith(("redis://", "rediss://", "redis+socket://")):
        raise FleetError(f"--broker must be a redis:// URL, got {broker.url!r}")
    app = Celery("facehil", broker=broker.url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="facehil.default",
        task_create_missing_queues=True,
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits out a broker restart
        # a job already running keeps running when the broker goes away; its late ack is then
        # lost and the message comes back, which the job row turns into a no-op
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 1.0,
                                   "interval_max": 3.0},
        broker_transport_options={
            "visibility_timeout": broker.visibility_timeout_s,
            "unacked_restore_interval": broker.restore_interval_s,
            "unacked_restore_throttle": 1,
            "socket_timeout": 30,
            "socket_connect_timeout": 10,
        },
        worker_send_task_events=False,
        worker_enable_remote_control=False,  # no pidbox/fanout queues: one plain list per rig
    )
    return app


# ---------------------------------------------------------------------------------------------
# The dispatching side (`facehil fleet run`)


@dataclass(frozen=True)
class Batch:
    id: str
    suite: str
    jobs: list[tuple[str, str]]  # (rig, job id); a rig named twice gets two jobs, run one after the other
    deadline_s: float

    @property
    def rigs(self) -> list[str]:
        return [rig for rig, _ in self.jobs]


def enqueue(app: Celery, db: FleetDB, suite: str, rigs: list[str], *, keyword: str | None = None,
            firmware: str | None = None, deadline_s: float = 3600.0) -> Batch:
    """One job per rig, each onto that rig's own queue. A job that cannot be published is
    finished as 'lost' with the reason (reported, never dropped)."""
    args = {"keyword": keyword, "firmware": firmware}
    return enqueue_jobs(app, db, suite, [(rig, args) for rig in rigs], deadline_s=deadline_s)


def enqueue_jobs(app: Celery, db: FleetDB, suite: str, jobs_args: list[tuple[str, dict]], *,
                 deadline_s: float = 3600.0) -> Batch:
    """One job per (rig, args), each onto its rig's queue; ``suite`` is the job kind (a suite
    name, or CAMPAIGN_JOB with the shard in its args)."""
    if not jobs_args:
        raise FleetError("no rigs to run on: start `facehil worker` on the rig hosts first, or check --rigs")
    batch = str(uuid.uuid4())
    jobs = []
    for rig, args in jobs_args:
        job_id = str(uuid.uuid4())
        db.add_job(job_id, batch, rig, suite, args, deadline_s)
        jobs.append((rig, job_id))
        try:
            app.send_task(RUN_JOB_TASK, args=[job_id], queue=rig_queue(rig))
        except Exception as exc:  # broker unreachable after retries
            log.error("cannot enqueue %s on %s: %s", suite, rig, exc)
            db.finish_job(job_id, "lost", detail=f"not enqueued: {exc}")
    return Batch(batch, suite, jobs, deadline_s)


@dataclass(frozen=True)
class Snapshot:
    jobs: list[Job]
    now: datetime
    done: bool


def follow(db: FleetDB, batch: Batch, *, poll_s: float = 0.5,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[Snapshot]:
    """Yield the batch's jobs until all are finished or the deadline passes. At the deadline,
    every unfinished job is finished as 'lost' (its rig never reported)."""
    while True:
        jobs = db.jobs(batch.id)
        now = db.now()
        if all(j.state in TERMINAL_JOB_STATES for j in jobs):
            yield Snapshot(jobs, now, True)
            return
        overdue = [j for j in jobs if j.state not in TERMINAL_JOB_STATES and j.deadline_at and now > j.deadline_at]
        if overdue:
            for j in overdue:
                why = "never started" if j.state == "queued" else f"stopped reporting during {j.phase or 'the job'}"
                db.finish_job(j.id, "lost", detail=f"{why} before the deadline ({batch.deadline_s:.0f} s)")
            continue
        yield Snapshot(jobs, now, False)
        sleep(poll_s)


def batch_passed(jobs: list[Job]) -> bool:
    return bool(jobs) and all(j.state == "passed" for j in jobs)
