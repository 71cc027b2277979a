"""A deck of personas (and their issued cards) generated from a face dataset.

Layout of a deck folder::

    pki/                      the station PKI (sim.card.pki)
    personas/<id>.toml        one persona per card (sim.card.persona)
    cards/<id>/               the issued card material (sim.card.issue)

The mix is deterministic for a seed: profiles alternate standard / face-auth, ages alternate
40 and over / under 40, about one card in four is not registered for health-insurance use,
and with 8 or more cards the last one is revoked. Identities with the most photos are
preferred, so the camera can show a photo other than the card's. Face-auth cards carry
「顔認証」 in their amendment field (N3).

With 8 or more cards, three *age-boundary* personas follow (N15's 40-and-over rule, pinned at
the birthday): one turning 40 today, one turning 40 tomorrow, one born on 29 February. "Today"
is the station host's local date, the same clock the simulated reader judges age by
(``dt.date.today()``). A station outlives a day, so ``load_deck`` re-dates these personas
(and re-issues their cards) whenever the deck is loaded on a later day; scenarios find them
by birth date computed at the time of asking (harness/deck.py), never by a stored label, so a
station left running past midnight has no "turns 40 today" card rather than a wrong one.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from pathlib import Path

from harness.facedata import FaceSource, list_identities
from sim.card.issue import issue_card
from sim.card.numbers import random_my_number
from sim.card.persona import FACE_AUTH_AMENDMENT, Amendment, Persona
from sim.card.pki import ensure_pki

log = logging.getLogger(__name__)

SURNAMES = [("山田", "YAMADA"), ("佐藤", "SATO"), ("鈴木", "SUZUKI"), ("高橋", "TAKAHASHI"), ("田中", "TANAKA"),
            ("伊藤", "ITO"), ("渡辺", "WATANABE"), ("中村", "NAKAMURA"), ("小林", "KOBAYASHI"), ("加藤", "KATO")]
GIVEN = {1: [("太郎", "TARO"), ("健一", "KENICHI"), ("大輔", "DAISUKE"), ("翔太", "SHOTA"), ("誠", "MAKOTO")],
         2: [("花子", "HANAKO"), ("陽子", "YOKO"), ("美咲", "MISAKI"), ("由美", "YUMI"), ("恵", "MEGUMI")]}
ADDRESSES = [("東京都千代田区霞が関一丁目1番1号", "1-1-1 Kasumigaseki, Chiyoda-ku, Tokyo"),
             ("大阪府大阪市北区梅田二丁目4番9号", "2-4-9 Umeda, Kita-ku, Osaka"),
             ("北海道札幌市中央区北一条西二丁目", "Kita 1-jo Nishi 2-chome, Chuo-ku, Sapporo"),
             ("福岡県福岡市博多区博多駅前三丁目", "3-chome Hakataekimae, Hakata-ku, Fukuoka"),
             ("愛知県名古屋市中区三の丸三丁目1番2号", "3-1-2 Sannomaru, Naka-ku, Nagoya")]


AGE_BOUNDARY_MIN_DECK = 8  # decks this large get the age-boundary personas
AGE_BOUNDARIES = ("40_today", "40_tomorrow", "leap_day")
BOUNDARY_AGE = 40


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 Feb into a common year (only across a non-leap century year)
        return dt.date(day.year - years, 2, 28)


def boundary_birth_date(kind: str, today: dt.date) -> dt.date:
    """The birth date that puts a persona on ``kind`` of the age boundary, as of ``today``."""
    if kind == "40_today":
        return _years_before(today, BOUNDARY_AGE)
    if kind == "40_tomorrow":
        return _years_before(today + dt.timedelta(days=1), BOUNDARY_AGE)
    if kind == "leap_day":  # the latest 29 February at least 40 years back: 40 to 43 years old
        year = today.year - BOUNDARY_AGE
        while not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) or dt.date(year, 2, 29) > \
                _years_before(today, BOUNDARY_AGE):
            year -= 1
        return dt.date(year, 2, 29)
    raise ValueError(f"unknown age boundary {kind!r}; expected one of {AGE_BOUNDARIES}")


def _birth_date(rng: random.Random, today: dt.date, over_40: bool) -> dt.date:
    age = rng.randint(41, 85) if over_40 else rng.randint(19, 38)
    return dt.date(today.year - age, rng.randint(1, 12), rng.randint(1, 28))


def _expiry(rng: random.Random, birth: dt.date, today: dt.date) -> dt.date:
    # Cards expire on a birthday, 10 years after issue for adults.
    years_left = rng.randint(2, 9)
    return _years_before(birth.replace(year=today.year) if (birth.month, birth.day) != (2, 29)
                         else dt.date(today.year, 2, 28), -years_left)


def make_persona(index: int, rng: random.Random, image: Path, identity: str, today: dt.date,
                 deck: Path, count: int) -> Persona:
    pid = f"p{index + 1:03d}"
    face_auth = index % 2 == 1
    sex = 1 if rng.random() < 0.5 else 2
    surname, surname_r = rng.choice(SURNAMES)
    given, given_r = rng.choice(GIVEN[sex])
    address, address_r = rng.choice(ADDRESSES)
    over_40 = (index // 2) % 2 == 0
    birth = _birth_date(rng, today, over_40)
    return Persona(
        id=pid, profile="face-auth" if face_auth else "standard", name=f"{surname} {given}",
        name_roman=f"{surname_r} {given_r}", address=address, address_roman=address_r, birth_date=birth,
        sex=sex, my_number=random_my_number(rng), expiry=_expiry(rng, birth, today),
        security_code=f"{rng.randint(0, 9999):04d}", face_image=image, face_identity=identity,
        registered_for_insurance=index % 4 != 3, revoked=count >= 8 and index == count - 1,
        pin=None if face_auth else f"{rng.randint(0, 9999):04d}",
        signing_password=None if face_auth else "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
                                                         for _ in range(8)),
        card_dir=deck / "cards" / pid, pki_dir=deck / "pki",
        amendments=[Amendment(FACE_AUTH_AMENDMENT)] if face_auth else [],
    )


def make_boundary_persona(kind: str, index: int, rng: random.Random, image: Path, identity: str,
                          today: dt.date, deck: Path) -> Persona:
    """An age-boundary persona: registered, not revoked; 40-today and leap-day hold face-auth cards."""
    persona = make_persona(index, rng, image, identity, today, deck, count=0)
    birth = boundary_birth_date(kind, today)
    face_auth = kind != "40_tomorrow"
    persona.profile = "face-auth" if face_auth else "standard"
    persona.amendments = [Amendment(FACE_AUTH_AMENDMENT)] if face_auth else []
    if face_auth:
        persona.pin = persona.signing_password = None
    elif persona.pin is None:
        persona.pin = f"{rng.randint(0, 9999):04d}"
        persona.signing_password = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(8))
    persona.birth_date = birth
    persona.expiry = _expiry(rng, birth, today)
    persona.registered_for_insurance = True
    persona.revoked = False
    persona.age_boundary = kind
    return persona


def generate_deck(faces: FaceSource | Path, out: Path, count: int = 6, seed: int = 0,
                  today: dt.date | None = None) -> list[Path]:
    """Write ``count`` personas and their cards under ``out``; returns the persona files."""
    if count < 1:
        raise ValueError("a deck needs at least one card")
    out = Path(out).resolve()
    rng = random.Random(seed)
    today = today or dt.date.today()
    identities = list_identities(faces)
    # Prefer identities with several photos; then a seeded shuffle among equals.
    rng.shuffle(identities)
    identities.sort(key=lambda ident: -min(len(ident.images), 4))
    pki = ensure_pki(out / "pki")
    paths = []
    plan = [(i, None) for i in range(count)]
    if count >= AGE_BOUNDARY_MIN_DECK:
        plan += [(count + k, kind) for k, kind in enumerate(AGE_BOUNDARIES)]
    for i, kind in plan:
        ident = identities[i % len(identities)]
        if kind is None:
            persona = make_persona(i, rng, ident.images[0], ident.name, today, out, count)
        else:
            persona = make_boundary_persona(kind, i, rng, ident.images[0], ident.name, today, out)
        path = persona.save(out / "personas" / f"{persona.id}.toml")
        issue_card(Persona.load(path), pki)
        paths.append(path)
    log.info("deck of %d personas in %s", count, out)
    return paths


def load_deck(folder: Path, today: dt.date | None = None) -> list[Persona]:
    """The deck's personas; age-boundary personas are first re-dated to ``today`` (the host's date)."""
    today = today or dt.date.today()
    personas = [Persona.load(p) for p in sorted((Path(folder) / "personas").glob("*.toml"))]
    for persona in personas:
        if persona.age_boundary and persona.source is not None:
            redate(persona, today)
    return personas


def redate(persona: Persona, today: dt.date) -> bool:
    """Put an age-boundary persona back on its boundary as of ``today``; re-issues its card (the
    birth date is in its certificates and card-surface records). True if it moved."""
    birth = boundary_birth_date(persona.age_boundary, today)
    if persona.birth_date == birth:
        return False
    log.info("age-boundary persona %s (%s) re-dated: born %s, was %s", persona.id, persona.age_boundary,
             birth, persona.birth_date)
    persona.birth_date = birth
    if persona.expiry <= birth:
        persona.expiry = birth.replace(year=birth.year + 50)
    persona.save(persona.source)
    if persona.pki_dir is not None and persona.card_dir is not None:
        issue_card(Persona.load(persona.source), ensure_pki(persona.pki_dir))
    return True
