"""One campaign run against one station: devices, schedule, records, resume.

``start_campaign`` expands the plan into a schedule (seed recorded) and records it with a new
run; ``resume_campaign`` takes a stopped run over and runs what is left of its schedule.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.station_auth import TOKEN_ENV
from harness.campaign import records as crec
from harness.campaign.impostors import nearest_identities
from harness.campaign.limits import parse_campaign_limits
from harness.campaign.plan import Plan, PlanError, Trial, build_schedule, choose_cards
from harness.campaign.run import Budget, Outcome, run_trials
from harness.config import Station
from harness.records import RecordStore, RunInfo, utcnow


log = logging.getLogger(__name__)


class CampaignError(RuntimeError):
    """The campaign cannot start or go on (the message says what is missing)."""


@dataclass
class Devices:
    dut: Any
    rig: Any
    firmware: str | None = None
    features: list[str] | None = None


def _station_token(station: Station) -> str | None:
    """A simulated station's control-port token (``<state_dir>/token``, hardware.md 9.1), if any."""
    if not station.station.simulated or station.station.state_dir is None:
        return None
    try:
        return (Path(station.station.state_dir) / "token").read_text().strip() or None
    except OSError:
        return None


@contextmanager
def open_devices(station: Station):
    """The reader under test and the rig of a station, closed whatever happens."""
    if station.rig is None or station.dut is None or not station.dut.url:
        raise CampaignError(f"station {station.path} needs a [rig] and a [dut] with a url for a campaign")
    token = _station_token(station)
    with _station_token_in_env(token):
        yield from _open_devices(station, token)


@contextmanager
def _station_token_in_env(token: str | None):
    """The reader driver takes the station token from the environment (drivers/station_auth.py);
    put it there only while the devices are open, so no later station in this process inherits it."""
    before = os.environ.get(TOKEN_ENV)
    if token:
        os.environ[TOKEN_ENV] = token
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = before


def _open_devices(station: Station, token: str | None):
    from drivers.reader import ReaderError, open_reader
    from drivers.rig import RigController, RigError

    rig = RigController(station.rig.url.serial_url, baudrate=station.rig.baudrate, timeout_s=station.rig.timeout_s,
                        token=token)
    try:
        rig.open()
    except RigError as exc:
        raise CampaignError(f"rig controller at {station.rig.url.text} does not answer: {exc}") from exc
    try:
        try:
            dut = open_reader(station.dut.url, station.dut.adapter)
        except ReaderError as exc:
            raise CampaignError(f"reader under test at {station.dut.url} does not answer: {exc}") from exc
        try:
            info = dut.info()
            rig.reset()
            yield Devices(dut, rig, info.version, sorted(info.features))
        finally:
            try:
                rig.reset()
            except RigError as exc:
                log.warning("rig reset after the campaign failed: %s", exc)
            dut.close()
    finally:
        rig.close()


def _row(trial: Trial, outcome: Outcome) -> dict[str, Any]:
    return {"seq": trial.seq, "kind": trial.kind, "card": trial.card, "holder": trial.holder,
            "subject": trial.subject, "condition": trial.condition, "species": trial.species,
            "decision": outcome.decision, "reason": outcome.reason, "attack_detected": outcome.attack_detected,
            "attempts": len(outcome.attempts), "attempt_events": _compact(outcome.attempts), "score": outcome.best_score,
            "transaction_ms": outcome.transaction_ms, "total_ms": outcome.total_ms, "started_at": utcnow(),
            "error": outcome.error}


MAX_UNCOMPARED_EVENTS = 10  # a face timeout makes ~100 "no face" attempts: keep the first few


def _compact(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every attempt that compared faces, and the first few that did not (the count is in ``attempts``)."""
    out, uncompared = [], 0
    for a in attempts:
        if a.get("score") is None and a["outcome"] not in ("match", "no_match", "attack"):
            uncompared += 1
            if uncompared > MAX_UNCOMPARED_EVENTS:
                continue
        out.append(a)
    return out


def make_schedule(plan: Plan, station: Station, deck, *, cache_dir=None) -> tuple[int, list[Trial]]:
    from harness.facedata import list_identities

    if station.faces.dataset is None:
        raise CampaignError(f"station {station.path} names no [faces] dataset: impostors cannot be drawn")
    identities = list_identities(station.faces.dataset)
    try:
        cards = choose_cards(plan, deck)
    except PlanError as exc:
        raise CampaignError(str(exc)) from None
    # the seed is fixed before the hard impostors are searched: their candidate pool depends on it
    seed = plan.seed if plan.seed is not None else secrets.randbelow(2 ** 31)
    hard = nearest_identities(identities, {c.id: c.holder for c in cards}, plan.hard_per_card, plan.hard_pool,
                              seed, cache_dir=cache_dir, exclude=[c.holder for c in deck if c.holder])
    schedule = build_schedule(plan, cards, [i.name for i in identities], hard, seed)
    return schedule.seed, schedule.trials


def start_campaign(store: RecordStore, station: Station, plan: Plan, deck, devices: Devices, *,
                   progress: Callable[[int, Trial, Outcome], None] | None = None, cache_dir=None) -> int:
    limits = parse_campaign_limits(station)  # a misspelt limit fails before anything runs
    seed, trials = make_schedule(plan, station, deck, cache_dir=cache_dir)
    info = RunInfo(suite=crec.SUITE, station_name=station.station.name,
                   station_file_hash=hashlib.sha256(station.path.read_bytes()).hexdigest(),
                   reader_firmware=devices.firmware, reader_features=devices.features,
                   card_deck=[{"id": c.id, "profile": c.profile, "registered": c.registered} for c in deck],
                   extra={"campaign_seed": seed})
    run_id = store.start_run(info)
    crec.create_campaign(store, run_id, seed=seed, plan=plan.as_dict(), schedule=[t.as_dict() for t in trials],
                         limits={k: v.as_dict() for k, v in limits.items()})
    log.info("campaign run %d: %d transactions, seed %d", run_id, len(trials), seed)
    _execute(store, run_id, plan, trials, devices, progress)
    return run_id


def resume_campaign(store: RecordStore, run_id: int, devices: Devices, *,
                    progress: Callable[[int, Trial, Outcome], None] | None = None) -> int:
    run, camp, done = crec.load_campaign(store, run_id)
    if run.reader_firmware and devices.firmware and run.reader_firmware != devices.firmware:
        raise CampaignError(f"run {run_id} measured firmware {run.reader_firmware}; the reader now runs "
                            f"{devices.firmware}: start a new campaign instead")
    crec.claim_for_resume(store, run_id)
    seen = {r["seq"] for r in done}
    left = [Trial(**t) for t in camp.schedule if t["seq"] not in seen]
    log.info("resuming campaign run %d: %d of %d transactions left", run_id, len(left), len(camp.schedule))
    _execute(store, run_id, Plan.from_dict(camp.plan), left, devices, progress)
    return run_id


def _execute(store: RecordStore, run_id: int, plan: Plan, trials: list[Trial], devices: Devices, progress) -> None:
    from harness.campaign.metrics import summarize_run

    def record(trial: Trial, outcome: Outcome) -> None:
        crec.record_transaction(store, run_id, _row(trial, outcome))

    try:
        stopped = run_trials(devices.dut, devices.rig, trials, record, Budget(plan.max_minutes), progress)
    except BaseException as exc:
        crec.set_stopped_by(store, run_id, "interrupted")
        store.finish_run(run_id, "aborted", reason=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    crec.set_stopped_by(store, run_id, stopped)
    summary = summarize_run(store, run_id)
    failed = any(v["verdict"] == "FAIL" for v in summary["verdicts"])
    store.finish_run(run_id, "failed" if failed else "passed", exit_status=1 if failed else 0)
