"""Steps the scenario files share: one patient's visit to the reader, driven through its interfaces.

Everything here talks to the reader under test through ``drivers.reader`` (screens, buttons,
staff actions, events) and to the rig through ``drivers.rig``: never through ``sim``. Screen ids,
button ids and event kinds are the reference control protocol's (hardware.md, "Reader control
port"); a vendor adapter maps its reader onto them.

Latencies come from the reader's own event stamps (``reader_ms``, one clock) where both ends are
reader events, and from the host's monotonic clock where one end is a host action.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from dataclasses import dataclass, field

import pytest

from drivers.reader import ReaderEvent, ReaderTimeout, adapter_capabilities, await_screens
from drivers.rig import CardPose
from harness.deck import Deck, DeckCard, NoSuchCard
from harness.measure import Limit

SCREEN_TIMEOUT_S = 15.0
FACE_TIMEOUT_S = 30.0  # the reader's own face timeout (15 s) plus its retries' margin

# Default limits; a station file's [limits.<name>] replaces them.
LIMITS = {
    "presence_detect_ms": Limit(high=1500, marginal=1000),
    "card_read_ms": Limit(high=4000, marginal=2500),
    "face_auth_latency_ms": Limit(high=3000, marginal=1500),
    "visual_mode_switch_ms": Limit(high=1000, marginal=500),
    "eligibility_query_ms": Limit(high=4000, marginal=2500),
    "session_ms": Limit(high=20000, marginal=12000),
    "pin_verify_ms": Limit(high=2000, marginal=1000),
    "card_placements_count": Limit(high=2, marginal=1),  # a second placement is marginal, a third fails
}
MAX_PLACEMENTS = 3
SETTLE_S = 3.0


def pick(deck: Deck, profile: str | None = None, **want) -> DeckCard:
    """A deck card with these properties, or skip the scenario saying which card is missing."""
    try:
        return deck.pick(profile, **want)
    except NoSuchCard as exc:
        pytest.skip(str(exc))


def other_person(deck: Deck, card: DeckCard, role: str = "impostor") -> str:
    try:
        return deck.other_person(card, role)
    except NoSuchCard as exc:
        pytest.skip(str(exc))


def await_screen(dut, *screen_ids: str, timeout_s: float = SCREEN_TIMEOUT_S) -> ReaderEvent:
    """Consume events until the reader shows one of ``screen_ids``; fail naming what it showed instead."""
    ev, seen = await_screens(dut, screen_ids, timeout_s)
    if ev is not None:
        return ev
    now = dut.screen()
    if now.id in screen_ids:  # shown before we started listening
        return ReaderEvent(seq=0, kind="screen", reader_ms=-1, host_monotonic_s=time.monotonic(),
                           fields={"id": now.id, "msg": now.message, "buttons": ",".join(now.buttons)})
    raise AssertionError(f"the reader did not show {' or '.join(screen_ids)} within {timeout_s:.0f} s; "
                         f"it showed {' -> '.join(seen) or 'nothing new'} (now {now.id}: {now.message!r})")


def await_event(dut, kind: str, timeout_s: float = SCREEN_TIMEOUT_S, **fields: str) -> ReaderEvent:
    try:
        return dut.wait_for_event(kind, timeout_s, **fields)
    except ReaderTimeout as exc:
        raise AssertionError(str(exc)) from None


PRESENCE = Limit(high=1500, marginal=1000)
PRESENCE_TIMEOUT_S = 10.0


def place_and_time_presence(rig, card_reader, card, measure, dut):
    """Place the card on an empty reader and time PC/SC's presence report (less the placer's own
    travel), then let the reader under test finish its read (its APDUs and ours must not interleave).
    Returns the settled card's insertion event (with its ATR)."""
    # pcscd polls every ~400 ms: after the previous visit it may still report the old card present,
    # which would make the presence time 0 and hand us a card that is about to vanish.
    card_reader.wait_for_removal(timeout_s=PRESENCE_TIMEOUT_S)
    sent_s = time.monotonic()
    placement = rig.place_card(card.slot)
    event = card_reader.wait_for_insertion(timeout_s=PRESENCE_TIMEOUT_S)
    measure("pcsc_presence_ms", max(0.0, (event.monotonic_s - sent_s) * 1000.0 - placement.moved_ms),
            limit=PRESENCE)
    shown = await_read(dut, rig, card.slot, measure=measure)
    assert shown.get("id") == "method_select", f"the reader could not read {card.id}: {shown.get('msg')!r}"
    return card_reader.wait_for_insertion(timeout_s=PRESENCE_TIMEOUT_S)


def await_read(dut, rig, slot: int, pose: CardPose = CardPose(), expect: tuple[str, ...] = ("method_select",),
               measure=None) -> ReaderEvent:
    """After a placement: wait for the screen that follows the reader's read of the card.

    A card lowered through the edge of the field may drop out mid-read and get "place the card
    again": it may settle and be read by itself, else the patient places it again, as a real one
    would (at most MAX_PLACEMENTS in all; the count is measured, a second placement is marginal).
    """
    shown = await_screen(dut, *expect, "place_again", "error")
    attempts = 1
    while shown.get("id") == "place_again" and "place_again" not in expect and attempts < MAX_PLACEMENTS:
        try:
            shown = await_screen(dut, *expect, "error", timeout_s=SETTLE_S)
        except AssertionError:
            attempts += 1
            rig.place_card(slot, pose)
            shown = await_screen(dut, *expect, "place_again", "error")
    if measure is not None:
        measure("card_placements_count", attempts, limit=LIMITS["card_placements_count"])
    return shown


def buttons_of(ev: ReaderEvent) -> tuple[str, ...]:
    return tuple(b for b in (ev.get("buttons") or "").split(",") if b)


@dataclass
class Visit:
    """One patient's visit: the card on the reader, the person in front of the camera."""

    dut: object
    rig: object
    card: DeckCard
    measure: object
    placed_s: float = 0.0
    placed_wall_s: float = 0.0  # the same moment on the wall clock (the eligibility service's records)
    finger_at_place_s: float = 0.0
    history_from: int = 0
    method_screen: ReaderEvent | None = None
    notes: dict = field(default_factory=dict)
    match_threshold: float | None = None  # the reader's face-match threshold, when the station says it
    shown: list[tuple[float, str | None, str, bool | None]] = field(default_factory=list)  # (t, who, condition, genuine)
    _scored: set[int] = field(default_factory=set)

    # -- the card ---------------------------------------------------------------------------
    def place(self, pose: CardPose = CardPose(), *, expect: tuple[str, ...] = ("method_select",)) -> ReaderEvent:
        """Put the card on the reader; wait for the screen after reading it. Measures presence and read times."""
        self.history_from = len(self.dut.history())
        sent_s = time.monotonic()
        placement = self.rig.place_card(self.card.slot, pose)
        self.placed_s = sent_s + placement.moved_ms / 1000.0  # the card has settled
        self.placed_wall_s = time.time() - (time.monotonic() - sent_s)
        self.finger_at_place_s = getattr(self.dut, "finger_s", 0.0)
        inserted = await_event(self.dut, "card", state="inserted")
        self.measure("presence_detect_ms", max(0.0, (inserted.host_monotonic_s - self.placed_s) * 1000.0),
                     limit=LIMITS["presence_detect_ms"])
        shown = await_read(self.dut, self.rig, self.card.slot, pose, expect, self.measure)
        if shown.get("id") not in expect:
            raise AssertionError(f"after placing {self.card.describe()} the reader showed {shown.get('id')}: "
                                 f"{shown.get('msg')!r} (expected {' or '.join(expect)})")
        read = [e for e in self.events() if e.kind == "card" and e.get("state") == "read"]
        if read:
            self.measure("card_read_ms", read[-1].reader_ms - inserted.reader_ms, limit=LIMITS["card_read_ms"])
            seen = (read[-1].get("profile") or "").replace("_", "-")  # the protocol spells it face_auth
            assert seen == self.card.profile, \
                f"the reader read {self.card.id} as {read[-1].get('profile')}, the deck says {self.card.profile}"
        if shown.get("id") == "method_select":
            self.method_screen = shown
        return shown

    def remove(self) -> None:
        self.rig.remove_card()

    def events(self) -> list[ReaderEvent]:
        """Every event of this visit so far (also those already consumed by a wait)."""
        return self.dut.history()[self.history_from:]

    # -- the person -------------------------------------------------------------------------
    def show(self, subject: str, condition: str = "nominal", carer: str | None = None) -> None:
        self.rig.show_subject(subject, condition, carer=carer)
        self.shown.append((time.monotonic(), subject, condition, subject == self.card.holder))

    def show_nobody(self) -> None:
        self.rig.show_no_face()
        self.shown.append((time.monotonic(), None, "noface", None))

    def show_attack(self) -> None:
        """A printed photo of the card photo held up to the camera."""
        self.rig.show_attack(self.card.holder)
        self.shown.append((time.monotonic(), self.card.holder, "attack", None))

    def record_scores(self) -> int:
        """Hand the reader's face-match scores of this visit to the run records (scores and labels only)."""
        if self.match_threshold is None:
            return 0
        n = 0
        for ev in self.events():
            if ev.kind != "face" or ev.get("score") in (None, "") or ev.seq in self._scored:
                continue
            self._scored.add(ev.seq)
            before = [s for s in self.shown if s[0] <= ev.host_monotonic_s]
            _, who, condition, genuine = before[-1] if before else (0.0, None, "unknown", None)
            self.measure.face_match(float(ev.get("score")), self.match_threshold, ev.get("outcome") == "match",
                                    condition=condition, subject_id=who or "", genuine=genuine)
            n += 1
        return n

    def show_holder(self, condition: str = "nominal", carer: str | None = None) -> str:
        assert self.card.holder, f"card {self.card.id} names no holder"
        self.show(self.card.holder, condition, carer)
        return self.card.holder

    # -- authentication ---------------------------------------------------------------------
    def choose_face(self) -> ReaderEvent:
        self.dut.press("face")
        return await_screen(self.dut, "face_auth", "visual_check", "staff_call", "pin_entry")

    def face_auth(self, *, timeout_s: float = FACE_TIMEOUT_S) -> ReaderEvent:
        """Choose face auth and wait for its verdict (the ``auth`` event). Measures the latency when it succeeds."""
        face_screen = self.choose_face()
        auth = await_event(self.dut, "auth", timeout_s, method="face")
        if auth.get("result") == "ok" and face_screen.reader_ms >= 0:
            self.measure("face_auth_latency_ms", auth.reader_ms - face_screen.reader_ms,
                         limit=LIMITS["face_auth_latency_ms"])
        return auth

    def pin_auth(self, pin: str, *, choose: bool = True) -> ReaderEvent:
        if choose:
            self.dut.press("pin")
            await_screen(self.dut, "pin_entry")
        sent_s = time.monotonic()
        sent_s = self.dut.enter_pin(pin) or sent_s  # a keypad typed key by key: from its last key
        ev = self._next_of("pin", "auth")
        if ev.kind == "pin" and ev.get("result") == "ok":
            self.measure("pin_verify_ms", (ev.host_monotonic_s - sent_s) * 1000.0, limit=LIMITS["pin_verify_ms"])
        return ev

    def _next_of(self, *kinds: str, timeout_s: float = SCREEN_TIMEOUT_S) -> ReaderEvent:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {' or '.join(kinds)} event within {timeout_s:.0f} s")
            try:
                ev = self.dut.next_event(left)
            except ReaderTimeout:
                continue
            if ev.kind in kinds:
                return ev

    def staff_visual_check(self) -> ReaderEvent:
        """Staff launch visual mode from the terminal; measures the time until the check screen shows."""
        sent_s = time.monotonic()
        self.dut.staff_visual_mode()
        shown = await_screen(self.dut, "visual_check")
        self.measure("visual_mode_switch_ms", (shown.host_monotonic_s - sent_s) * 1000.0,
                     limit=LIMITS["visual_mode_switch_ms"])
        return shown

    # -- after authentication ---------------------------------------------------------------
    def consents(self, surgery: str = "consent", care: str = "consent", checkup: str | None = None) -> dict[str, str]:
        """Answer the three consent screens; ``checkup`` defaults to what the holder's age allows."""
        if self.dut.screen().id != "consent_surgery":  # else its event was consumed already
            await_screen(self.dut, "consent_surgery")
        self.dut.press(surgery)
        await_screen(self.dut, "consent_care")
        self.dut.press(care)
        shown = await_screen(self.dut, "consent_checkup")
        if checkup is None:
            checkup = "consent" if self.card.over40() else "decline_or_under40"
        self.notes["checkup_buttons"] = buttons_of(shown)
        self.dut.press(checkup)
        return {"surgery": surgery, "care": care, "checkup": checkup}

    def finish(self) -> ReaderEvent:
        """Wait for the eligibility answer and the done screen; returns the eligibility event."""
        querying = await_screen(self.dut, "querying", "done", "error")
        done = await_screen(self.dut, "done", "error") if querying.get("id") == "querying" else querying
        elig = [e for e in self.events() if e.kind == "eligibility"]
        assert done.get("id") == "done", f"the visit ended on {done.get('id')}: {done.get('msg')!r}"
        assert elig and elig[-1].get("result") == "ok", f"eligibility query failed: {elig[-1].fields if elig else 'no event'}"
        if querying.get("id") == "querying":
            self.measure("eligibility_query_ms", done.reader_ms - querying.reader_ms,
                         limit=LIMITS["eligibility_query_ms"])
        # the reader's time: a robot finger's travel (dut.finger_s, through a screen) is the harness's
        finger_s = getattr(self.dut, "finger_s", 0.0) - self.finger_at_place_s
        self.measure("session_ms", (done.host_monotonic_s - self.placed_s - finger_s) * 1000.0,
                     limit=LIMITS["session_ms"])
        return elig[-1]

    def take_card_back(self) -> None:
        """The patient takes the card: the reader must go back to idle."""
        self.remove()
        await_screen(self.dut, "idle")

    # -- checks over the whole visit -------------------------------------------------------
    def auth_events(self, result: str | None = None) -> list[ReaderEvent]:
        return [e for e in self.events() if e.kind == "auth" and (result is None or e.get("result") == result)]

    def consent_choices(self) -> dict[str, str]:
        return {e.get("item"): e.get("choice") for e in self.events() if e.kind == "consent"}


def complete_visit(visit: Visit, *, method: str = "face", condition: str = "nominal") -> ReaderEvent:
    """A whole happy-path visit of a registered card: place, authenticate, consent, done."""
    visit.show_holder(condition)
    visit.place()
    if method == "face":
        auth = visit.face_auth()
        assert auth.get("result") == "ok", f"face auth of the holder failed: {auth.fields}"
    elif method == "pin":
        ev = visit.pin_auth(visit.card.pin or "")
        assert ev.kind == "pin" and ev.get("result") == "ok", f"PIN auth failed: {ev.fields}"
    else:
        raise ValueError(f"unknown method {method}")
    visit.consents()
    elig = visit.finish()
    assert elig.get("method") == method, f"eligibility recorded method {elig.get('method')}, expected {method}"
    visit.take_card_back()
    return elig


def tells(dut, capability: str) -> bool:
    """Can this reader's adapter tell ``capability`` (drivers.reader.READER_CAPABILITIES)? A check
    that needs one runs where it can; the rest of the scenario runs through any adapter."""
    return capability in adapter_capabilities(dut)


def visit_transaction(station, visit: "Visit", elig: ReaderEvent, limit: int = 50) -> dict:
    """The eligibility service's record of this visit's query: by the transaction id the reader
    reports, else (a reader that tells none, e.g. through its screen) the service's newest
    eligibility query since the card was placed (visits on one station never overlap)."""
    if "transaction" in elig.fields:
        return eligibility_transaction(station, elig.fields["transaction"])
    url = station.eligibility.url.rstrip("/") + f"/transactions?limit={limit}"
    with urllib.request.urlopen(url, timeout=5.0) as resp:
        rows = json.load(resp)
    since = dt.datetime.fromtimestamp(visit.placed_wall_s - 1.0, dt.timezone.utc)
    for row in rows if isinstance(rows, list) else rows.get("transactions", []):
        at = dt.datetime.fromisoformat(row["at"])
        at = at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)  # SQLite keeps UTC without its zone
        if row.get("kind") == "eligibility" and at >= since:
            return row  # newest first
    raise AssertionError(f"the eligibility service recorded no query since {visit.card.id} was placed")


def eligibility_transaction(station, transaction_id: str, limit: int = 200) -> dict:
    """The eligibility service's record of one transaction (``GET /transactions``: what it received)."""
    url = station.eligibility.url.rstrip("/") + f"/transactions?limit={limit}"
    with urllib.request.urlopen(url, timeout=5.0) as resp:
        rows = json.load(resp)
    for row in rows if isinstance(rows, list) else rows.get("transactions", []):
        if str(row.get("id")) == str(transaction_id):
            return row
    raise AssertionError(f"the eligibility service has no transaction {transaction_id} (last {limit} looked at)")


def require_face_data_for(station, condition: str) -> None:
    """Skip a condition other than nominal on a station with only the packaged low-fidelity sample
    faces (one small photo per identity): a verdict there says nothing about the reader."""
    if condition != "nominal" and station.faces.low_fidelity:
        pytest.skip(f"condition {condition!r} needs a real face dataset (FACEHIL_FACES); "
                    "this station has only the packaged low-fidelity samples")


# -- the notice's wording and the reader's claims (issue 11) ------------------------------------

# N16, verbatim: what every ending of a visit must remind the patient of.
TAKE_CARD_REMINDER = "忘れずに、顔認証付きカードリーダーからマイナンバーカードを取り出してください"


ENDING_SCREENS = ("done", "error", "pin_locked")


def reminded_to_take_card(v: "Visit") -> bool:
    """The reader reminded the patient to take the card (N16) WITH the ending: a ``remind
    what=take_card`` event after the ending screen came up, or the notice's reminder on that screen
    (for adapters that only map screens). Ask before the card is taken."""
    now = v.dut.screen()  # answered after every event the reader sent before it
    events = v.events()
    endings = [i for i, e in enumerate(events) if e.kind == "screen" and e.get("id") in ENDING_SCREENS]
    if not endings or now.id not in ENDING_SCREENS:
        return False  # the visit has not ended: nothing to remind of yet
    ending = events[endings[-1]]
    after = events[endings[-1]:]
    if any(e.kind == "remind" and e.get("what") == "take_card" for e in after):
        return True
    return TAKE_CARD_REMINDER in (ending.get("msg") or "") or TAKE_CARD_REMINDER in now.message


def tells_to_use_face_auth(*texts: str | None) -> bool:
    """Does any of these messages point the patient to face authentication (Japanese or English)?"""
    joined = " ".join(t or "" for t in texts)
    return "顔認証" in joined or "face auth" in joined.lower() or "face-auth" in joined.lower()


def reader_claim(station, dut, key: str) -> str | None:
    """What the reader claims about a choice the notice leaves open (hardware.md 6.6): the station
    file's ``[dut] <key>`` first (a lab's declaration), else the reader's own INFO field."""
    value = station.dut.extra.get(key) if station.dut is not None else None
    if value is None:
        if not tells(dut, "reader_info"):
            pytest.skip(f"the reader's claim {key} is not declared ([dut] {key} in the station file), "
                        "and its adapter cannot ask the reader (reader_info)")
        value = dut.info().fields.get(key)
    return None if value in (None, "") else str(value)


def has_feature(station, dut, feature: str) -> bool:
    """Does the reader's firmware have ``feature``: as it says (INFO), or, for a reader that cannot
    say (seen through its screen), as the station file declares (``[dut] expect_features``)."""
    if tells(dut, "reader_info"):
        return feature in dut.info().features
    return feature in (station.dut.expect_features if station.dut is not None else ())


def require_feature(station, dut, feature: str) -> None:
    """Skip unless the reader's firmware has ``feature``; but FAIL when the station file declares the
    reader updated (``[dut] expect_features``) and the feature is missing."""
    if has_feature(station, dut, feature):
        return
    declared = station.dut.expect_features if station.dut is not None else ()
    if not tells(dut, "reader_info"):
        pytest.skip(f"the reader's firmware features are not declared to include {feature} ([dut] expect_features), "
                    "and its adapter cannot ask the reader (reader_info)")
    have = dut.info().features
    if feature in declared:
        pytest.fail(f"the station declares the reader has {feature} ([dut] expect_features), but its firmware "
                    f"{dut.info().version} reports only {', '.join(sorted(have)) or 'no features'}")
    pytest.skip(f"the reader's firmware has no {feature} (declare it in [dut] expect_features to require it)")


def to_consent(v: Visit) -> None:
    """Authenticate the holder by face; register the card first if the reader asks."""
    v.show_holder()
    v.place()
    auth = v.face_auth()
    assert auth.get("result") == "ok", f"face auth of the holder failed: {auth.fields}"
    shown = await_screen(v.dut, "consent_surgery", "registration")
    if shown.get("id") == "registration":
        v.dut.press("register")
        await_screen(v.dut, "consent_surgery")
