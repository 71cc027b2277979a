"""A persona: who a simulated card belongs to, in a small TOML file.

```toml
id = "p001"
profile = "standard"            # or "face-auth"
name = "山田 太郎"
name_roman = "YAMADA TARO"      # used for the name image when no CJK font is installed
address = "東京都千代田区霞が関1-1-1"
address_roman = "1-1-1 Kasumigaseki, Chiyoda-ku, Tokyo"
birth_date = 1980-05-01
sex = 1                         # 1 male, 2 female, 9 not applicable
my_number = "123456789018"      # 12 digits with a valid check digit
expiry = 2033-05-01
security_code = "4821"
face_image = "/data/faces/lfw-dev/Some_One/Some_One_0001.jpg"
face_identity = "Some_One"
registered_for_insurance = true
revoked = false
pin = "1234"                    # standard only: user-auth and text-assist PIN
signing_password = "ABC123"     # standard only: 6-16 upper-case letters and digits
card_dir = "../cards/p001"      # issued keys, certificates and images (relative to this file)
pki_dir = "../pki"

[initial_tries]                 # optional; counters start here on a fresh card state
user_auth_pin = 3

[card]                          # optional
blocked_sw = "6984"             # or "6983"
no_pin_probe = "locked"         # face-auth: "locked" (OpenSC binds) or "absent"

[[amendments]]                  # the printed amendment field (追記欄), oldest first (N3)
text = "顔認証"                  # a face-auth card carries 「顔認証」 ...
struck = false                  # ... struck through once switched back to a standard card
```

Without ``amendments``, a face-auth card gets 「顔認証」 (the notice: every face-auth card has it).

Every error names the key and the file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from harness.masked import masked_repr
from sim.card.numbers import check_code_b, era_yymmdd, is_valid_my_number

PROFILES = ("standard", "face-auth")
# Counter name -> (max tries, which profile has it set)
COUNTERS = {
    "user_auth_pin": 3,      # JPKI 0018
    "signing_password": 5,   # JPKI 001B
    "assist_pin": 3,         # text-assist 0011
    "assist_check_a": 10,    # text-assist 0014 (count not public: 10 assumed, as for B)
    "assist_check_b": 10,    # text-assist 0015
    "surface_birth": 10,     # card-surface 0011 (count not public: 10 assumed)
    "surface_check_b": 10,   # card-surface 0012
    "surface_check_a": 10,   # card-surface 0013 (count not public: 10 assumed)
}
NO_PIN_PROBES = ("locked", "absent")
FACE_AUTH_AMENDMENT = "顔認証"  # printed in the amendment field of a face-auth card (N3)


@dataclass
class Amendment:
    """One entry of the card's amendment field (追記欄); ``struck``: crossed out by the municipality."""

    text: str
    struck: bool = False


class PersonaError(ValueError):
    """A persona file is missing a key or has a bad value; the message names both."""


@dataclass
class Persona:
    id: str
    profile: str
    name: str
    address: str
    birth_date: dt.date
    sex: int
    my_number: str
    expiry: dt.date
    security_code: str
    face_image: Path | None = None
    face_identity: str = ""
    name_roman: str = ""
    address_roman: str = ""
    registered_for_insurance: bool = True
    revoked: bool = False
    pin: str | None = None
    signing_password: str | None = None
    card_dir: Path | None = None
    pki_dir: Path | None = None
    initial_tries: dict[str, int] = field(default_factory=dict)
    blocked_sw: int = 0x6984
    no_pin_probe: str = "locked"
    amendments: list[Amendment] = field(default_factory=list)
    age_boundary: str = ""  # deck personas on the 40-years boundary (sim/card/deck.py re-dates them)
    source: Path | None = None

    # Credentials of the card: never in a repr (pytest carries reprs into records and reports).
    SECRETS = frozenset({"pin", "signing_password", "security_code", "my_number"})

    def __repr__(self) -> str:
        return masked_repr(self, self.SECRETS)

    # ---------------------------------------------------------------- derived
    @property
    def face_auth(self) -> bool:
        return self.profile == "face-auth"

    @property
    def check_code_a(self) -> str:
        return self.my_number

    @property
    def check_code_b(self) -> str:
        return check_code_b(self.birth_date, self.expiry, self.security_code)

    @property
    def birth_key(self) -> str:
        """The card-surface AP's birth-date key (EF 0011): era YYMMDD (our assumption)."""
        return era_yymmdd(self.birth_date)

    def age_on(self, day: dt.date) -> int:
        b = self.birth_date
        return day.year - b.year - ((day.month, day.day) < (b.month, b.day))

    def start_tries(self) -> dict[str, int]:
        return {name: min(max_tries, max(0, int(self.initial_tries.get(name, max_tries))))
                for name, max_tries in COUNTERS.items()}

    # ---------------------------------------------------------------- file I/O
    @classmethod
    def load(cls, path: str | Path) -> "Persona":
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PersonaError(f"{path}: cannot read persona file: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise PersonaError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_dict(doc, path)

    @classmethod
    def from_dict(cls, doc: dict, source: Path | None = None) -> "Persona":
        where = str(source) if source else "<persona>"
        base = source.parent if source else Path.cwd()

        def req(key: str, kind: type):
            if key not in doc:
                raise PersonaError(f"{where}: missing key '{key}'")
            value = doc[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise PersonaError(f"{where}: key '{key}' must be {kind.__name__}, got {value!r}")
            return value

        def opt(key: str, kind: type, default):
            return req(key, kind) if key in doc else default

        def path_opt(key: str) -> Path | None:
            value = opt(key, str, None)
            return None if value is None else (base / value).resolve()

        birth = req("birth_date", dt.date)
        expiry = req("expiry", dt.date)
        card = opt("card", dict, {})
        try:
            blocked_sw = int(str(card.get("blocked_sw", "6984")), 16)
        except ValueError:
            raise PersonaError(f"{where}: key 'card.blocked_sw' must be hex such as \"6984\"") from None
        persona = cls(
            id=req("id", str), profile=req("profile", str), name=req("name", str),
            address=req("address", str), birth_date=birth, sex=req("sex", int),
            my_number=req("my_number", str), expiry=expiry, security_code=req("security_code", str),
            face_image=path_opt("face_image"), face_identity=opt("face_identity", str, ""),
            name_roman=opt("name_roman", str, ""), address_roman=opt("address_roman", str, ""),
            registered_for_insurance=opt("registered_for_insurance", bool, True),
            revoked=opt("revoked", bool, False), pin=opt("pin", str, None),
            signing_password=opt("signing_password", str, None),
            card_dir=path_opt("card_dir"), pki_dir=path_opt("pki_dir"),
            initial_tries=dict(opt("initial_tries", dict, {})), blocked_sw=blocked_sw,
            no_pin_probe=str(card.get("no_pin_probe", "locked")), source=source,
            amendments=_amendments(doc, where), age_boundary=opt("age_boundary", str, ""),
        )
        persona.validate(where)
        return persona

    def validate(self, where: str = "<persona>") -> None:
        def bad(key: str, why: str) -> PersonaError:
            return PersonaError(f"{where}: key '{key}' {why}")

        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.id):
            raise bad("id", "must be letters, digits, '_', '.', '-'")
        if self.profile not in PROFILES:
            raise bad("profile", f"must be one of {PROFILES}, got {self.profile!r}")
        if self.sex not in (1, 2, 9):
            raise bad("sex", f"must be 1, 2 or 9, got {self.sex}")
        if not is_valid_my_number(self.my_number):
            raise bad("my_number", "must be 12 digits with a valid check digit")
        if not re.fullmatch(r"\d{4}", self.security_code):
            raise bad("security_code", "must be 4 digits")
        if self.blocked_sw not in (0x6983, 0x6984):
            raise bad("card.blocked_sw", "must be 6983 or 6984")
        if self.no_pin_probe not in NO_PIN_PROBES:
            raise bad("card.no_pin_probe", f"must be one of {NO_PIN_PROBES}")
        for name, value in self.initial_tries.items():
            if name not in COUNTERS:
                raise bad(f"initial_tries.{name}", f"is not a counter; known: {sorted(COUNTERS)}")
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= COUNTERS[name]:
                raise bad(f"initial_tries.{name}", f"must be an integer 0..{COUNTERS[name]}")
        open_face_auth = [a for a in self.amendments if a.text == FACE_AUTH_AMENDMENT and not a.struck]
        if self.face_auth and not open_face_auth:
            raise bad("amendments", f"of a face-auth card must carry 「{FACE_AUTH_AMENDMENT}」 not struck through")
        if not self.face_auth and open_face_auth:
            raise bad("amendments", f"of a standard card must have 「{FACE_AUTH_AMENDMENT}」 struck through")
        if self.face_auth:
            if self.pin is not None or self.signing_password is not None:
                raise bad("pin", "must be absent on a face-auth card (it has no PIN)")
        else:
            if self.pin is None or not re.fullmatch(r"\d{4}", self.pin):
                raise bad("pin", "must be 4 digits on a standard card")
            if self.signing_password is None or not re.fullmatch(r"[A-Z0-9]{6,16}", self.signing_password):
                raise bad("signing_password", "must be 6-16 upper-case letters or digits")
        if self.expiry <= self.birth_date:
            raise bad("expiry", "must be after the birth date")

    def to_dict(self, relative_to: Path | None = None) -> dict:
        def rel(p: Path | None) -> str | None:
            if p is None:
                return None
            if relative_to is not None:
                return os.path.relpath(Path(p).resolve(), relative_to.resolve())
            return str(p)

        doc = {
            "id": self.id, "profile": self.profile, "name": self.name, "name_roman": self.name_roman,
            "address": self.address, "address_roman": self.address_roman, "birth_date": self.birth_date,
            "sex": self.sex, "my_number": self.my_number, "expiry": self.expiry,
            "security_code": self.security_code, "face_image": str(self.face_image) if self.face_image else None,
            "face_identity": self.face_identity, "registered_for_insurance": self.registered_for_insurance,
            "revoked": self.revoked, "pin": self.pin, "signing_password": self.signing_password,
            "card_dir": rel(self.card_dir), "pki_dir": rel(self.pki_dir),
        }
        doc = {k: v for k, v in doc.items() if v is not None}
        if self.initial_tries:
            doc["initial_tries"] = dict(self.initial_tries)
        doc["card"] = {"blocked_sw": f"{self.blocked_sw:04X}", "no_pin_probe": self.no_pin_probe}
        if self.age_boundary:
            doc["age_boundary"] = self.age_boundary
        if self.amendments:
            doc["amendments"] = [{"text": a.text, "struck": a.struck} for a in self.amendments]
        return doc

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tomli_w.dumps(self.to_dict(relative_to=path.parent)), encoding="utf-8")
        self.source = path
        return path


def _amendments(doc: dict, where: str) -> list[Amendment]:
    raw = doc.get("amendments")
    if raw is None:  # files from before the amendment field: a face-auth card has 「顔認証」
        return [Amendment(FACE_AUTH_AMENDMENT)] if doc.get("profile") == "face-auth" else []
    if not isinstance(raw, list):
        raise PersonaError(f"{where}: key 'amendments' must be an array of tables")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str) or not entry["text"]:
            raise PersonaError(f"{where}: key 'amendments[{i}].text' must be a non-empty string")
        struck = entry.get("struck", False)
        if not isinstance(struck, bool):
            raise PersonaError(f"{where}: key 'amendments[{i}].struck' must be true or false")
        out.append(Amendment(entry["text"], struck))
    return out
