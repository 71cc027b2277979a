"""The card deck and subject set of a station, as scenarios see them (the `cards` fixture).

Built from the station file's ``[[cards]]`` and ``[[subjects]]`` plus each card's persona file
(a small TOML the lab keeps for every test card: profile, PIN, birth date, registration
status, whose face is on it). Read with tomllib here: the harness never imports `sim`.

Scenarios ask for cards by what they need (``deck.pick("face-auth", registered=False)``),
never by id, so the same scenario runs on any station whose deck has such a card; a deck
without one skips the scenario with a reason saying what is missing.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import Station
from harness.masked import masked_repr

STANDARD = "standard"
FACE_AUTH = "face-auth"
CHECKUP_MIN_AGE = 40


class DeckError(ValueError):
    """A persona file the deck cannot use (the message names the file and key)."""


class NoSuchCard(LookupError):
    """The deck has no card with the asked-for properties (scenarios turn this into a skip)."""


@dataclass(frozen=True)
class DeckCard:
    id: str
    profile: str
    slot: int | None  # the card placer's deck slot
    persona: Path
    pin: str | None = None
    birth_date: dt.date | None = None
    registered: bool = True
    revoked: bool = False
    holder: str | None = None  # subject id (face identity) of the card's holder
    disposable: bool = False  # may be PIN-locked by a scenario (the lab resets or replaces it)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:  # pytest carries reprs into records and reports: no PIN there
        return masked_repr(self, {"pin"})

    @property
    def face_auth(self) -> bool:
        return self.profile == FACE_AUTH

    def age_on(self, day: dt.date) -> int | None:
        b = self.birth_date
        if b is None:
            return None
        return day.year - b.year - ((day.month, day.day) < (b.month, b.day))

    def turns40_on(self, day: dt.date) -> bool:
        """Is ``day`` the day this card's holder reaches 40 (age 40 on it, 39 the day before)?"""
        return self.age_on(day) == CHECKUP_MIN_AGE and self.age_on(day - dt.timedelta(days=1)) == CHECKUP_MIN_AGE - 1

    def over40(self, day: dt.date | None = None) -> bool:
        age = self.age_on(day or dt.date.today())
        return age is not None and age >= CHECKUP_MIN_AGE

    def describe(self) -> str:
        bits = [self.profile, "registered" if self.registered else "unregistered"]
        if self.birth_date:
            bits.append("40+" if self.over40() else "under 40")
        return f"{self.id} ({', '.join(bits)})"


@dataclass(frozen=True)
class Subject:
    id: str
    role: str  # holder | carer | impostor
    card: str | None = None


@dataclass
class Deck(Sequence[DeckCard]):
    cards: list[DeckCard]
    subjects: list[Subject] = field(default_factory=list)

    def __getitem__(self, i):  # type: ignore[override]
        return self.cards[i]

    def __len__(self) -> int:
        return len(self.cards)

    def __iter__(self) -> Iterator[DeckCard]:
        return iter(self.cards)

    def by_id(self, card_id: str) -> DeckCard:
        for c in self.cards:
            if c.id == card_id:
                return c
        raise NoSuchCard(f"the deck has no card {card_id!r}")

    def select(self, profile: str | None = None, *, registered: bool | None = None, over40: bool | None = None,
               revoked: bool | None = False, disposable: bool | None = None, placeable: bool = True,
               with_holder: bool = True, turns40: str | None = None, leap_day: bool | None = None) -> list[DeckCard]:
        """``turns40="today"|"tomorrow"``: the 40th birthday is the host's date today / tomorrow, computed
        now (a station left running past midnight has no such card rather than a wrong one);
        ``leap_day``: born on 29 February."""
        out = []
        for c in self.cards:
            if turns40 is not None and not c.turns40_on(_boundary_day(turns40)):
                continue
            if leap_day is not None and (c.birth_date is None or
                                         ((c.birth_date.month, c.birth_date.day) == (2, 29)) != leap_day):
                continue
            if profile is not None and c.profile != profile:
                continue
            if registered is not None and c.registered != registered:
                continue
            if over40 is not None and (c.birth_date is None or c.over40() != over40):
                continue
            if revoked is not None and c.revoked != revoked:
                continue
            if disposable is not None and c.disposable != disposable:
                continue
            if placeable and c.slot is None:
                continue
            if with_holder and not c.holder:
                continue
            out.append(c)
        return out

    def pick(self, profile: str | None = None, *, index: int = 0, **want: Any) -> DeckCard:
        """The first (or ``index``-th) card with these properties; raises NoSuchCard naming them.

        Non-disposable cards are preferred, so a scenario that may lock a PIN asks for
        ``disposable=True`` explicitly and every other scenario leaves such cards alone. Scenarios
        that change a card for good (registration) take different ends of the list.
        """
        found = self.select(profile, **want)
        if "disposable" not in want:
            found = sorted(found, key=lambda c: c.disposable)
        if not found:
            what = ", ".join([profile or "any profile"] + [f"{k}={v}" for k, v in want.items()])
            have = "; ".join(c.describe() for c in self.cards) or "no cards"
            raise NoSuchCard(f"the station's deck has no placeable card with {what} (deck: {have})")
        if not -len(found) <= index < len(found):
            raise NoSuchCard(f"the station's deck has only {len(found)} placeable card(s) with {profile or 'any profile'} "
                             f"{want}; a scenario needs card #{index}")
        return found[index]

    def holder_of(self, card: DeckCard) -> str:
        if not card.holder:
            raise NoSuchCard(f"card {card.id} names no holder subject (persona face_identity or [[subjects]] card)")
        return card.holder

    def other_person(self, card: DeckCard, role: str = "impostor") -> str:
        """A subject who is not the card's holder: a [[subjects]] entry of ``role``, else another card's holder."""
        for s in self.subjects:
            if s.role == role and s.id != card.holder:
                return s.id
        for c in self.cards:
            if c.holder and c.holder != card.holder:
                return c.holder
        raise NoSuchCard(f"the station names no {role} subject other than {card.holder}")


def _boundary_day(turns40: str) -> dt.date:
    offsets = {"today": 0, "tomorrow": 1}
    if turns40 not in offsets:
        raise ValueError(f"turns40 must be 'today' or 'tomorrow', got {turns40!r}")
    return dt.date.today() + dt.timedelta(days=offsets[turns40])


def _persona(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeckError(f"{path}: cannot read persona file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeckError(f"{path}: not valid TOML: {exc}") from None


def _typed(doc: dict, key: str, kind: type | tuple, path: Path, default=None):
    value = doc.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise DeckError(f"{path}: key '{key}' has the wrong type ({type(value).__name__})")
    return value


def load_deck(station: Station) -> Deck:
    """The deck of ``station``, each card completed from its persona file."""
    holders = {s.card: s.id for s in station.subjects if s.card and s.role == "holder"}
    cards = []
    for c in station.cards:
        doc = _persona(c.persona)
        profile = _typed(doc, "profile", str, c.persona, c.profile)
        cards.append(DeckCard(
            id=c.id, profile=profile, slot=c.placer_slot, persona=c.persona,
            pin=_typed(doc, "pin", str, c.persona),
            birth_date=_typed(doc, "birth_date", dt.date, c.persona),
            registered=_typed(doc, "registered_for_insurance", bool, c.persona, True),
            revoked=_typed(doc, "revoked", bool, c.persona, False),
            holder=holders.get(c.id) or _typed(doc, "face_identity", str, c.persona) or None,
            disposable=bool(c.extra.get("disposable", False)),
            extra=dict(c.extra)))
    subjects = [Subject(id=s.id, role=s.role, card=s.card) for s in station.subjects]
    return Deck(cards=cards, subjects=subjects)
