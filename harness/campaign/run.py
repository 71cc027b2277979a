"""Running a campaign: each scheduled transaction through the rig and the reader's normal flow.

One transaction: the presenter shows the subject (or the attack instrument), the card goes on
the reader, the patient chooses face authentication, and the reader decides under its own
retry policy (the ``auth`` event). The attempts are the reader's ``face`` events. Then the card
comes off and the reader must be idle again. Devices are used through ``drivers`` only, as the
scenarios use them; this module never imports ``sim``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.reader import ReaderError, ReaderTimeout, await_screens
from drivers.rig import RigError
from harness.campaign.plan import Trial

log = logging.getLogger(__name__)

SCREEN_TIMEOUT_S = 15.0
DECISION_TIMEOUT_S = 40.0  # the reader's face timeout (15 s) plus its retries and a loaded host
MAX_PLACEMENTS = 3
SETTLE_S = 3.0
COMPARED = ("match", "no_match", "attack")  # face outcomes where a comparison was made


class TransactionError(RuntimeError):
    """The station did not let the transaction finish (not a decision of the reader)."""


@dataclass
class Outcome:
    decision: str  # accept | reject | fta | error
    reason: str | None = None
    attack_detected: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    transaction_ms: float | None = None
    total_ms: float | None = None
    error: str | None = None

    @property
    def best_score(self) -> float | None:
        scores = [a["score"] for a in self.attempts if a.get("score") is not None]
        return max(scores) if scores else None


def _await_screen(dut, ids: tuple[str, ...], timeout_s: float = SCREEN_TIMEOUT_S):
    ev, seen = await_screens(dut, ids, timeout_s)
    if ev is None:
        raise TransactionError(f"the reader did not show {' or '.join(ids)} within {timeout_s:.0f} s "
                               f"(showed {' -> '.join(seen) or 'nothing new'})")
    return ev


def _await_auth(dut, timeout_s: float = DECISION_TIMEOUT_S):
    try:
        return dut.wait_for_event("auth", timeout_s, method="face")
    except ReaderTimeout:
        raise TransactionError(f"the reader gave no face-auth decision within {timeout_s:.0f} s") from None


def _placed(dut, rig, slot: int) -> None:
    """Card on the reader until it is read (a card that drops out mid-read is placed again)."""
    rig.place_card(slot)
    shown = _await_screen(dut, ("method_select", "place_again", "error"))
    placements = 1
    while shown.get("id") == "place_again" and placements < MAX_PLACEMENTS:
        try:
            shown = _await_screen(dut, ("method_select", "error"), SETTLE_S)
        except TransactionError:
            placements += 1
            rig.place_card(slot)
            shown = _await_screen(dut, ("method_select", "place_again", "error"))
    if shown.get("id") != "method_select":
        raise TransactionError(f"the reader could not read the card: {shown.get('id')}: {shown.get('msg')!r}")


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def decide(auth_fields: dict[str, str], attempts: list[dict[str, Any]]) -> tuple[str, str | None, bool]:
    """(decision, reason, attack_detected) from the reader's auth event and its face events."""
    if auth_fields.get("result") == "ok":
        return "accept", None, False
    reason = auth_fields.get("reason")
    if reason == "presentation_attack":
        return "reject", reason, True
    if reason == "no_match":
        return "reject", reason, False
    if reason == "timeout":
        compared = any(a["outcome"] in COMPARED for a in attempts)
        return ("reject" if compared else "fta"), reason, False
    return "error", reason, False  # camera failure, card photo unusable: not the matcher's decision


def run_transaction(dut, rig, trial: Trial) -> Outcome:
    """One transaction; the station is left with no card and the reader idle."""
    dut.wait_for_screen("idle", SCREEN_TIMEOUT_S)
    dut.clear_events()
    if trial.kind == "attack":
        rig.show_attack(trial.subject, species=trial.species)
    else:
        rig.show_subject(trial.subject, trial.condition)
    placed_s = time.monotonic()
    try:
        _placed(dut, rig, trial.slot)
        dut.press("face")
        face_screen = _await_screen(dut, ("face_auth", "visual_check", "staff_call", "pin_entry"))
        auth = _await_auth(dut) if face_screen.get("id") == "face_auth" else None
        if auth is None:  # the reader refused face auth before trying (e.g. no usable card photo)
            auth = next((e for e in reversed(dut.history()) if e.kind == "auth"), None)
            if auth is None:
                raise TransactionError(f"face auth did not start: {face_screen.get('id')}")
        events = dut.history()
        attempts = [{"outcome": e.get("outcome"), "score": _float(e.get("score")),
                     "t_ms": e.reader_ms - face_screen.reader_ms}
                    for e in events if e.kind == "face" and e.get("attempt")]
        decision, reason, attack = decide(auth.fields, attempts)
        return Outcome(decision, reason, attack, attempts,
                       transaction_ms=float(auth.reader_ms - face_screen.reader_ms),
                       total_ms=(auth.host_monotonic_s - placed_s) * 1000.0)
    finally:
        _clear(dut, rig)


def _clear(dut, rig) -> None:
    rig.remove_card()
    try:
        dut.wait_for_screen("idle", SCREEN_TIMEOUT_S)
    except ReaderError as exc:
        raise TransactionError(f"the reader did not return to idle after the card was taken: {exc}") from exc


@dataclass
class Budget:
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        self.started_s = time.monotonic()

    def exhausted(self) -> bool:
        return self.max_minutes is not None and time.monotonic() - self.started_s >= self.max_minutes * 60.0


def run_trials(dut, rig, trials: list[Trial], record: Callable[[Trial, Outcome], None], budget: Budget,
               progress: Callable[[int, Trial, Outcome], None] | None = None) -> str:
    """Run ``trials`` in order, recording each; returns why it stopped: done | time_budget.

    A transaction the station could not finish is recorded as ``error`` (with the reason) and
    the campaign goes on; a device that stops answering ends it (the exception propagates
    after the row is written).
    """
    for i, trial in enumerate(trials):
        if budget.exhausted():
            return "time_budget"
        try:
            outcome = run_transaction(dut, rig, trial)
        except (TransactionError, ReaderError, RigError) as exc:
            log.warning("transaction %d (%s, card %s) did not finish: %s", trial.seq, trial.kind, trial.card, exc)
            outcome = Outcome("error", "station", error=str(exc)[:2000])
            record(trial, outcome)
            if isinstance(exc, (ReaderError, RigError)) and not isinstance(exc, ReaderTimeout):
                raise
        else:
            record(trial, outcome)
        if progress:
            progress(i, trial, outcome)
    return "done"
