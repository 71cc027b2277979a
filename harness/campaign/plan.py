"""The campaign plan (TOML) and the schedule of transactions it expands to.

A plan says what to run; the schedule is the exact, ordered list of transactions, drawn with a
recorded seed, so a run can be resumed and repeated. Every error names the file and the key.

    [campaign]
    seed = 7                 # optional: a fresh one is drawn (and recorded) when absent
    max_transactions = 300   # count budget (optional)
    max_minutes = 10.0       # time budget (optional)
    cards = ["c01", "c02"]   # optional: default every deck card with a holder, not revoked
    max_cards = 8            # optional

    [genuine]                # the holder with their own card
    conditions = ["nominal", "low_light", "glasses"]
    repeats = 1              # per card and condition (balanced per subject by construction)

    [impostors]              # zero-effort: another person with the holder's card
    random_per_card = 2
    hard_per_card = 2        # the identities nearest to the holder by facehil's own matcher
    hard_pool = 200          # how many dataset identities to search for them
    conditions = ["nominal"]

    [attacks]                # presentation attacks with the card photo
    species = ["print", "screen", "cutout"]
    per_card = 1
"""

from __future__ import annotations

import random
import secrets
import tomllib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.biometrics.conditions import NAMES as CONDITIONS

ATTACK_SPECIES = ("print", "screen", "cutout")  # what `SHOW ATTACK species=` renders (hardware.md)
KINDS = ("genuine", "impostor_random", "impostor_hard", "attack")


class PlanError(ValueError):
    """A plan the campaign cannot run; the message names the file and the key."""

    def __init__(self, source: str, key: str, message: str):
        self.key = key
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


@dataclass(frozen=True)
class Plan:
    seed: int | None = None
    max_transactions: int | None = None
    max_minutes: float | None = None
    cards: tuple[str, ...] = ()
    max_cards: int | None = None
    genuine_conditions: tuple[str, ...] = ("nominal",)
    genuine_repeats: int = 1
    random_per_card: int = 1
    hard_per_card: int = 1
    hard_pool: int = 200
    impostor_conditions: tuple[str, ...] = ("nominal",)
    attack_species: tuple[str, ...] = ATTACK_SPECIES
    attacks_per_card: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Plan":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# section -> key -> (Plan field, type, check)
_SCHEMA: dict[str, dict[str, tuple[str, type | tuple[type, ...], str]]] = {
    "campaign": {"seed": ("seed", int, "int>=0"), "max_transactions": ("max_transactions", int, "int>0"),
                 "max_minutes": ("max_minutes", (int, float), "num>0"), "cards": ("cards", list, "ids"),
                 "max_cards": ("max_cards", int, "int>0")},
    "genuine": {"conditions": ("genuine_conditions", list, "conditions"), "repeats": ("genuine_repeats", int, "int>=0")},
    "impostors": {"random_per_card": ("random_per_card", int, "int>=0"), "hard_per_card": ("hard_per_card", int, "int>=0"),
                  "hard_pool": ("hard_pool", int, "int>0"), "conditions": ("impostor_conditions", list, "conditions")},
    "attacks": {"species": ("attack_species", list, "species"), "per_card": ("attacks_per_card", int, "int>=0")},
}


def parse_plan(data: Mapping[str, Any], source: str = "plan") -> Plan:
    values: dict[str, Any] = {}
    for section in data:
        if section not in _SCHEMA:
            raise PlanError(source, section, f"unknown section; expected {', '.join(_SCHEMA)}")
    for section, keys in _SCHEMA.items():
        table = data.get(section, {})
        if not isinstance(table, Mapping):
            raise PlanError(source, section, "expected a table")
        for key, value in table.items():
            if key not in keys:
                raise PlanError(source, f"{section}.{key}", f"unknown key; expected one of {', '.join(keys)}")
            name, types, check = keys[key]
            values[name] = _check(source, f"{section}.{key}", value, types, check)
    return Plan(**values)


def _check(source: str, key: str, value: Any, types, check: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, types):
        raise PlanError(source, key, f"expected {check.split('>')[0] if '>' in check else 'a list'}, "
                                     f"got {type(value).__name__} {value!r}")
    if check == "int>=0" and value < 0 or check in ("int>0", "num>0") and value <= 0:
        raise PlanError(source, key, f"must be {'>= 0' if check == 'int>=0' else '> 0'}, got {value}")
    if check in ("ids", "conditions", "species"):
        if not all(isinstance(v, str) and v for v in value):
            raise PlanError(source, key, "expected a list of non-empty strings")
        known = {"conditions": CONDITIONS, "species": ATTACK_SPECIES}.get(check)
        bad = [v for v in value if known is not None and v not in known]
        if bad:
            raise PlanError(source, key, f"unknown {check} {', '.join(bad)}; known: {', '.join(known)}")
        if len(set(value)) != len(value):
            raise PlanError(source, key, "lists a value twice")
        return tuple(value)
    return float(value) if check == "num>0" else value


# The nightly-size plan (`facehil campaign run` without --plan): every usable deck card, four capture
# conditions, two hard and one random impostor, each attack species once; at most 10 minutes.
DEFAULT_PLAN = {
    "campaign": {"max_minutes": 10.0},
    "genuine": {"conditions": ["nominal", "glasses", "backlight", "low_light"], "repeats": 1},
    "impostors": {"random_per_card": 1, "hard_per_card": 2, "hard_pool": 200, "conditions": ["nominal"]},
    "attacks": {"species": list(ATTACK_SPECIES), "per_card": 1},
}


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(str(path), "", f"cannot read the plan: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PlanError(str(path), "", f"not valid TOML: {exc}") from None
    return parse_plan(data, str(path))


# -- the schedule -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Trial:
    seq: int
    kind: str  # genuine | impostor_random | impostor_hard | attack
    card: str
    slot: int
    holder: str
    subject: str  # who (or whose photo) is shown
    condition: str = "nominal"
    species: str | None = None  # attacks only

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CardUse:
    """A deck card the campaign may use: its placer slot and its holder."""

    id: str
    slot: int
    holder: str


@dataclass
class Schedule:
    seed: int
    trials: list[Trial] = field(default_factory=list)


def choose_cards(plan: Plan, deck: Sequence[Any]) -> list[CardUse]:
    """Deck cards with a holder, a placer slot and a valid certificate (the plan may name them)."""
    usable = {c.id: c for c in deck if c.holder and c.slot is not None and not c.revoked}
    if plan.cards:
        missing = [c for c in plan.cards if c not in usable]
        if missing:
            raise PlanError("plan", "campaign.cards", f"not usable deck cards (no holder, no slot or revoked): "
                                                      f"{', '.join(missing)}")
        ids = list(plan.cards)
    else:
        ids = sorted(usable)
    if plan.max_cards:
        ids = ids[:plan.max_cards]
    if not ids:
        raise PlanError("plan", "campaign.cards", "the deck has no card with a holder and a placer slot")
    return [CardUse(i, int(usable[i].slot), usable[i].holder) for i in ids]


def build_schedule(plan: Plan, cards: Sequence[CardUse], identities: Sequence[str],
                   hard: Mapping[str, Sequence[str]], seed: int | None = None) -> Schedule:
    """Every transaction of the plan, in a random order that keeps each card's transactions
    spread out: a budget that stops the run early leaves it balanced across cards.

    ``identities``: the face dataset's identity names (random impostors are drawn from them);
    ``hard``: card id -> nearest identities by facehil's matcher, nearest first.
    """
    seed = plan.seed if plan.seed is not None else (seed if seed is not None else secrets.randbelow(2 ** 31))
    rng = random.Random(seed)
    per_card: dict[str, list[dict[str, Any]]] = defaultdict(list)
    holders = {c.holder for c in cards}
    for card in cards:
        base = {"card": card.id, "slot": card.slot, "holder": card.holder}
        for _ in range(plan.genuine_repeats):
            for cond in plan.genuine_conditions:
                per_card[card.id].append({**base, "kind": "genuine", "subject": card.holder, "condition": cond})
        nearest = [s for s in hard.get(card.id, ()) if s != card.holder][:plan.hard_per_card]
        taken = set(nearest) | {card.holder}
        pool = [s for s in identities if s not in taken and s not in holders]
        randoms = rng.sample(pool, min(plan.random_per_card, len(pool)))
        for kind, subjects in (("impostor_hard", nearest), ("impostor_random", randoms)):
            for i, subject in enumerate(subjects):
                cond = plan.impostor_conditions[i % len(plan.impostor_conditions)]
                per_card[card.id].append({**base, "kind": kind, "subject": subject, "condition": cond})
        for _ in range(plan.attacks_per_card):
            for species in plan.attack_species:
                per_card[card.id].append({**base, "kind": "attack", "subject": card.holder, "species": species})
    # round r holds every card's r-th transaction (each card's own list shuffled first)
    keyed = []
    for card_id in sorted(per_card):
        items = per_card[card_id]
        rng.shuffle(items)
        keyed += [(r, rng.random(), item) for r, item in enumerate(items)]
    keyed.sort(key=lambda t: (t[0], t[1]))
    trials = [Trial(seq=i, **item) for i, (_, _, item) in enumerate(keyed)]
    if plan.max_transactions is not None:
        trials = trials[:plan.max_transactions]
    return Schedule(seed=seed, trials=trials)
