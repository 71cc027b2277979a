"""Splitting a campaign over the fleet's rigs (one shard per rig) and merging the shards back.

A shard is the same plan restricted to some of the cards (``[campaign] cards``), with the seed
fixed: every transaction of a card (its holder's genuine conditions, its impostors, its attacks)
stays on one rig, so each subject's conditions stay together and balanced as in one run. Cards
are dealt round-robin after a shuffle by the seed: shards differ by at most one card, and the
same plan and seed give the same split. A count budget is shared in proportion to the cards.

Merging (`merge_shards`) makes one campaign run of the shards that finished; a shard that did
not (its rig quarantined, lost, or its run stopped) is recorded in the merged run's plan as
missing, which makes its verdicts INCONCLUSIVE at best (`metrics.summarize_run`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from random import Random
from typing import Any

import tomli_w
from sqlalchemy import func, select

from harness.campaign.plan import _SCHEMA, Plan
from harness.records import RecordsError, RecordStore

log = logging.getLogger(__name__)

FINISHED = ("done", "count_budget", "time_budget")  # a shard run that stopped by itself


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int
    rig: str
    cards: tuple[str, ...]
    plan: Plan

    @property
    def label(self) -> str:
        return f"shard {self.index + 1}/{self.count}"


def deal_cards(cards: Sequence[str], n: int, seed: int) -> list[list[str]]:
    """``cards`` dealt to at most ``n`` shards, round-robin after a shuffle by ``seed`` (each
    shard's cards in deck order). No shard is empty: fewer cards than rigs give fewer shards."""
    if n < 1:
        raise ValueError("at least one shard")
    order = sorted(set(cards))
    Random(seed).shuffle(order)
    hands: list[list[str]] = [[] for _ in range(min(n, len(order)))]
    for i, card in enumerate(order):
        hands[i % len(hands)].append(card)
    return [sorted(h) for h in hands]


def _share(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder; sums to ``total``)."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    out = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: (out[i] - exact[i], i))[:total - sum(out)]:
        out[i] += 1
    return out


def shard_plan(plan: Plan, cards: Sequence[str], rigs: Sequence[str], seed: int) -> list[Shard]:
    """One shard per rig (in the order given) for the campaign over ``cards`` (the plan's cards,
    or the deck's usable ones). The time budget applies to each shard (they run side by side)."""
    if not rigs:
        raise ValueError("no rigs to shard the campaign over")
    if len(set(rigs)) != len(rigs):
        raise ValueError(f"a rig is named twice: {', '.join(rigs)}")
    hands = deal_cards(cards, len(rigs), seed)
    if not hands:
        raise ValueError("the campaign has no cards to shard")
    budgets = (_share(plan.max_transactions, [len(h) for h in hands])
               if plan.max_transactions is not None else [None] * len(hands))
    return [Shard(i, len(hands), rig, tuple(hand),
                  replace(plan, seed=seed, cards=tuple(hand), max_cards=None, max_transactions=budget))
            for i, (rig, hand, budget) in enumerate(zip(rigs, hands, budgets))]


def plan_toml(plan: Plan) -> str:
    """The plan as a plan file (`campaign run --plan`); `plan.load_plan` reads it back equal."""
    values = plan.as_dict()
    doc: dict[str, dict[str, Any]] = {}
    for section, keys in _SCHEMA.items():
        for key, (name, _types, _check) in keys.items():
            if values.get(name) is not None:
                doc.setdefault(section, {})[key] = values[name]
    return tomli_w.dumps(doc)


# -- after the jobs ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardResult:
    shard: Shard
    job_id: str
    job_state: str  # the fleet job's final state
    detail: str | None
    run_id: int | None  # the shard's campaign run, if it started one

    def as_dict(self) -> dict[str, Any]:
        return {"shard": self.shard.index + 1, "of": self.shard.count, "rig": self.shard.rig,
                "cards": list(self.shard.cards), "job": self.job_id, "job_state": self.job_state,
                "detail": self.detail, "run": self.run_id}


@dataclass
class Merged:
    run_id: int | None  # None: no shard finished
    complete: list[ShardResult]
    missing: list[ShardResult]
    reasons: dict[str, str]  # job id -> why its shard is missing


def _missing_reason(store: RecordStore, r: ShardResult) -> str | None:
    """Why the shard's transactions cannot stand for its cards; None when it finished."""
    from harness.campaign.records import load_campaign

    if r.job_state != "passed":
        return f"job {r.job_state}: {r.detail or 'no detail'}"
    if r.run_id is None:
        return "the job recorded no campaign run"
    try:
        run, camp, _ = load_campaign(store, r.run_id)
    except RecordsError as exc:
        return str(exc)
    if run.status not in ("passed", "failed") or camp.stopped_by not in FINISHED:
        return f"run {r.run_id} is {run.status}, stopped by {camp.stopped_by}"
    return None


def merge_shards(store: RecordStore, results: Sequence[ShardResult]) -> Merged:
    """One campaign run of the finished shards (in shard order), its plan naming every shard and
    the missing ones; its status is 'failed' with the reason when a shard is missing."""
    from harness.campaign.metrics import summarize_run
    from harness.campaign.records import merge_campaigns, set_stopped_by

    complete, missing, reasons = [], [], {}
    for r in sorted(results, key=lambda r: r.shard.index):
        why = _missing_reason(store, r)
        if why is None:
            complete.append(r)
        else:
            missing.append(r)
            reasons[r.job_id] = why
    if not complete:
        return Merged(None, complete, missing, reasons)
    shards = {"shards": [{**r.as_dict(), "missing": reasons.get(r.job_id)} for r in results],
              "missing_shards": [{**r.as_dict(), "missing": reasons[r.job_id]} for r in missing]}
    run_id = merge_campaigns(store, [r.run_id for r in complete], min_runs=1, plan_extra=shards)
    summary = summarize_run(store, run_id)
    failed = any(v["verdict"] == "FAIL" for v in summary["verdicts"])
    if missing:
        what = "; ".join(f"{r.shard.label} ({r.shard.rig}, cards {', '.join(r.shard.cards)}): {reasons[r.job_id]}"
                         for r in missing)
        set_stopped_by(store, run_id, "incomplete")
        store.finish_run(run_id, "failed", reason=f"shard(s) missing: {what}"[:2000], exit_status=1)
    else:
        store.finish_run(run_id, "failed" if failed else "passed", exit_status=1 if failed else 0)
    return Merged(run_id, complete, missing, reasons)


def transaction_counts(store: RecordStore, run_ids: Sequence[int]) -> dict[int, int]:
    """Transactions recorded so far per campaign run (the dispatcher's progress)."""
    from harness.campaign.records import CampaignTransaction

    if not run_ids:
        return {}
    with store.session() as s:
        rows = s.execute(select(CampaignTransaction.run_id, func.count()).where(
            CampaignTransaction.run_id.in_(list(run_ids))).group_by(CampaignTransaction.run_id)).all()
    return {run_id: n for run_id, n in rows}


def scheduled_counts(store: RecordStore, run_ids: Sequence[int]) -> dict[int, int]:
    from harness.campaign.records import CampaignRun

    if not run_ids:
        return {}
    with store.session() as s:
        rows = s.execute(select(CampaignRun.run_id, CampaignRun.schedule).where(
            CampaignRun.run_id.in_(list(run_ids)))).all()
    return {run_id: len(schedule or []) for run_id, schedule in rows}
