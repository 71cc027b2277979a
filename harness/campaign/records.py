"""Campaign records: the plan and schedule of a campaign run, and one row per transaction.

A campaign run is a row of ``runs`` (suite ``campaign``) plus a ``campaign_runs`` row holding
the plan, the seed and the whole schedule, so ``--resume RUN`` knows what is left. Each
transaction is committed on its own when it ends: a killed campaign loses at most the one in
flight. Rows hold labels, decisions, times and scores: never images or embeddings.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import (JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint, insert, select,
                        update)
from sqlalchemy.orm import Mapped, mapped_column

from harness.records import Base, RecordsError, RecordStore, Run, UTCDateTime, host_identity, utcnow

log = logging.getLogger(__name__)

SUITE = "campaign"
_JSON = JSON(none_as_null=True)


class CampaignRun(Base):
    __tablename__ = "campaign_runs"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seed: Mapped[int] = mapped_column(Integer)
    plan: Mapped[dict] = mapped_column(_JSON)
    schedule: Mapped[list] = mapped_column(_JSON)
    limits: Mapped[dict | None] = mapped_column(_JSON)
    stopped_by: Mapped[str | None] = mapped_column(String(32))  # done | count_budget | time_budget | interrupted
    resumed: Mapped[int] = mapped_column(Integer, default=0)


class CampaignTransaction(Base):
    __tablename__ = "campaign_transactions"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_campaign_transactions_run_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    card: Mapped[str] = mapped_column(String(100))
    holder: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))
    condition: Mapped[str] = mapped_column(String(64))
    species: Mapped[str | None] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))  # accept | reject | fta | error
    reason: Mapped[str | None] = mapped_column(String(200))
    attack_detected: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempt_events: Mapped[list | None] = mapped_column(_JSON)  # [{"outcome", "score", "t_ms"}]
    score: Mapped[float | None] = mapped_column(Float)  # best comparison score the reader reported
    transaction_ms: Mapped[float | None] = mapped_column(Float)  # face screen -> decision (reader clock)
    total_ms: Mapped[float | None] = mapped_column(Float)  # card placed -> decision (host clock)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)


COLUMNS = ("seq", "kind", "card", "holder", "subject", "condition", "species", "decision", "reason",
           "attack_detected", "attempts", "attempt_events", "score", "transaction_ms", "total_ms", "started_at",
           "error")


def create_campaign(store: RecordStore, run_id: int, *, seed: int, plan: dict, schedule: list[dict],
                    limits: dict | None) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(CampaignRun).values(run_id=run_id, seed=seed, plan=plan, schedule=schedule,
                                                limits=limits, resumed=0))


def record_transaction(store: RecordStore, run_id: int, row: dict[str, Any]) -> None:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise RecordsError(f"unknown campaign transaction field(s) {', '.join(sorted(unknown))}")
    with store.engine.begin() as conn:
        conn.execute(insert(CampaignTransaction).values(run_id=run_id, **row))
        conn.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))


def set_stopped_by(store: RecordStore, run_id: int, reason: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(CampaignRun).where(CampaignRun.run_id == run_id).values(stopped_by=reason))


def load_campaign(store: RecordStore, run_id: int) -> tuple[Run, CampaignRun, list[dict[str, Any]]]:
    """The run, its campaign row and its transactions (dicts, in schedule order)."""
    with store.session() as s:
        run = s.get(Run, run_id)
        camp = s.get(CampaignRun, run_id)
        if run is None or camp is None:
            raise RecordsError(f"run {run_id} is not a campaign run in {store.url}")
        rows = s.scalars(select(CampaignTransaction).where(CampaignTransaction.run_id == run_id)
                         .order_by(CampaignTransaction.seq)).all()
        s.expunge_all()
    return run, camp, [{c: getattr(r, c) for c in COLUMNS} for r in rows]


def claim_for_resume(store: RecordStore, run_id: int) -> None:
    """Take a stopped campaign run over: running again, owned by this process."""
    me = host_identity()
    now = utcnow()
    with store.engine.begin() as conn:
        status = conn.execute(select(Run.status).where(Run.id == run_id)).scalar_one_or_none()
        if status is None:
            raise RecordsError(f"no run {run_id}")
        if status == "running":
            owner = conn.execute(select(Run.host, Run.pid).where(Run.id == run_id)).one()
            raise RecordsError(f"run {run_id} is still running (host {owner.host}, pid {owner.pid})")
        conn.execute(update(Run).where(Run.id == run_id).values(
            status="running", ended_at=None, abort_reason=None, exit_status=None, heartbeat_at=now, host=me.host,
            host_boot_id=me.boot_id, pid=me.pid, pid_started_at=me.pid_started_at))
        conn.execute(update(CampaignRun).where(CampaignRun.run_id == run_id).values(
            resumed=CampaignRun.resumed + 1, stopped_by=None))


def merge_campaigns(store: RecordStore, run_ids: list[int], *, limits: dict | None = None, min_runs: int = 2,
                    plan_extra: dict | None = None) -> int:
    """One campaign run holding the transactions of several (shards run on several rigs, or one
    campaign in parts). They must have measured the same reader firmware; sequence numbers are
    renumbered in the order given, the source runs are left as they are. ``plan_extra`` goes into
    the merged plan (the fleet's shards, and which are missing; `harness.campaign.shard`)."""
    from harness.records import RunInfo

    if len(set(run_ids)) < min_runs or len(set(run_ids)) != len(run_ids):
        raise RecordsError(f"merging needs at least {'two' if min_runs == 2 else min_runs} different campaign "
                           f"runs, each named once")
    loaded = [load_campaign(store, r) for r in run_ids]
    firmware = {run.reader_firmware for run, _, _ in loaded}
    if len(firmware) != 1:
        raise RecordsError(f"runs {', '.join(map(str, run_ids))} measured different firmware "
                           f"({', '.join(sorted(str(f) for f in firmware))}): compare them instead")
    running = [run.id for run, _, _ in loaded if run.status == "running"]
    if running:
        raise RecordsError(f"run(s) {', '.join(map(str, running))} are still running")
    first_run, first_camp, _ = loaded[0]
    info = RunInfo(suite=SUITE, station_name=" + ".join(sorted({str(run.station_name) for run, _, _ in loaded})),
                   reader_firmware=first_run.reader_firmware, reader_features=first_run.reader_features,
                   extra={"merged_from": list(run_ids), "campaign_seed": first_camp.seed})
    new_id = store.start_run(info)
    schedule, rows, offset = [], [], 0
    for run, camp, done in loaded:
        schedule += [{**t, "seq": t["seq"] + offset} for t in camp.schedule]
        rows += [{**r, "seq": r["seq"] + offset} for r in done]
        offset += max([t["seq"] for t in camp.schedule] + [-1]) + 1
    with store.engine.begin() as conn:
        conn.execute(insert(CampaignRun).values(
            run_id=new_id, seed=first_camp.seed, schedule=schedule, resumed=0, stopped_by="merged",
            plan={"merged_from": list(run_ids), "plans": [camp.plan for _, camp, _ in loaded],
                  "seeds": [camp.seed for _, camp, _ in loaded], **(plan_extra or {})},
            limits=first_camp.limits if limits is None else limits))
        if rows:
            conn.execute(insert(CampaignTransaction), [{"run_id": new_id, **r} for r in rows])
    return new_id
