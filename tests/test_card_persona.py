"""Personas, the numbers on a card, the deck and the PKI folder."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from cryptography import x509
from typer.testing import CliRunner

from drivers.terminal_auth import EKU_FACE_MATCH, EKU_STAFF_VISUAL
from sim.card.deck import load_deck
from sim.card.numbers import (check_code_b, era_yymmdd, is_valid_my_number, my_number_check_digit,
                              random_my_number)
from sim.card.persona import Persona, PersonaError
from sim.card.pki import POLICY_SIGNING, POLICY_USER_AUTH, load_pki, read_revoked


def reference_check_digit(first11: str) -> int:
    """The ordinance's formula written out independently: weights 6..2,7..2 from the left."""
    weights = [6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2]
    r = sum(int(d) * w for d, w in zip(first11, weights)) % 11
    return 0 if r <= 1 else 11 - r


def test_my_number_check_digit_known_and_random():
    assert is_valid_my_number("123456789018")
    assert not is_valid_my_number("123456789012")
    assert not is_valid_my_number("12345678901")
    assert not is_valid_my_number("12345678901a")
    rng = random.Random(7)
    for _ in range(300):
        n = random_my_number(rng)
        assert is_valid_my_number(n)
        assert my_number_check_digit(n[:11]) == reference_check_digit(n[:11])
    with pytest.raises(ValueError):
        my_number_check_digit("123")


@pytest.mark.parametrize("day,expected", [
    (dt.date(1926, 12, 25), "011225"),   # Showa 1
    (dt.date(1985, 4, 2), "600402"),     # Showa 60
    (dt.date(1989, 1, 7), "640107"),     # last day of Showa
    (dt.date(1989, 1, 8), "010108"),     # Heisei 1
    (dt.date(2019, 4, 30), "310430"),    # last day of Heisei
    (dt.date(2019, 5, 1), "010501"),     # Reiwa 1
    (dt.date(1920, 3, 3), "090303"),     # Taisho 9
])
def test_japanese_era_dates(day, expected):
    assert era_yymmdd(day) == expected


def test_check_code_b_is_era_birth_expiry_year_security_code():
    assert check_code_b(dt.date(1985, 4, 2), dt.date(2030, 4, 2), "0123") == "60040220300123"
    with pytest.raises(ValueError):
        check_code_b(dt.date(1985, 4, 2), dt.date(2030, 4, 2), "12")


def _doc(**over):
    doc = {"id": "x1", "profile": "standard", "name": "山田 太郎", "address": "東京都", "birth_date": dt.date(1980, 1, 2),
           "sex": 1, "my_number": "123456789018", "expiry": dt.date(2030, 1, 2), "security_code": "1234",
           "pin": "1234", "signing_password": "ABC123"}
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize("over,key", [
    (dict(name=None), "name"),
    (dict(my_number="123456789012"), "my_number"),
    (dict(profile="gold"), "profile"),
    (dict(sex=3), "sex"),
    (dict(pin="12345"), "pin"),
    (dict(signing_password="abc"), "signing_password"),
    (dict(profile="face-auth"), "pin"),  # a face-auth card has no PIN
    (dict(birth_date="1980-01-02"), "birth_date"),
    (dict(initial_tries={"user_auth_pin": 7}), "initial_tries.user_auth_pin"),
    (dict(card={"blocked_sw": "9000"}), "card.blocked_sw"),
    (dict(amendments=[{"text": "顔認証", "struck": False}]), "amendments"),  # a standard card: struck through
    (dict(profile="face-auth", pin=None, signing_password=None, amendments=[{"text": "顔認証", "struck": True}]),
     "amendments"),
    (dict(amendments=[{"text": ""}]), "amendments[0].text"),
])
def test_persona_errors_name_the_key_and_the_file(tmp_path, over, key):
    import tomli_w

    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(_doc(**over)))
    with pytest.raises(PersonaError) as err:
        Persona.load(path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


def test_persona_file_round_trip(tmp_path):
    p = Persona.from_dict(_doc(face_image="faces/a.jpg", card_dir="cards/x1", pki_dir="pki"), tmp_path / "p.toml")
    path = p.save(tmp_path / "sub" / "x1.toml")
    q = Persona.load(path)
    assert q.card_dir == (tmp_path / "cards" / "x1").resolve() and q.face_image == (tmp_path / "faces/a.jpg").resolve()
    assert (q.name, q.birth_date, q.check_code_b, q.pin) == (p.name, p.birth_date, p.check_code_b, "1234")
    with pytest.raises(PersonaError, match="not valid TOML"):
        (tmp_path / "broken.toml").write_text("id = ")
        Persona.load(tmp_path / "broken.toml")


def test_deck_mix(card_deck):
    personas = load_deck(card_deck)
    today = dt.date.today()
    assert [p.id for p in personas] == ["p001", "p002", "p003", "p004"]
    assert {p.profile for p in personas} == {"standard", "face-auth"}
    ages = [p.age_on(today) for p in personas]
    assert any(a >= 40 for a in ages) and any(a < 40 for a in ages)
    assert any(not p.registered_for_insurance for p in personas)
    for p in personas:
        assert is_valid_my_number(p.my_number)
        assert p.face_image is not None and p.face_image.exists() and p.face_identity
        assert (p.card_dir / "face.jp2").exists() and (p.card_dir / "auth.pem").exists()
        assert (p.card_dir / "sign.pem").exists() == (p.profile == "standard")
        assert (p.pin is None) == p.face_auth


def test_pki_folder_and_jpki_like_certificates(card_deck):
    pki = load_pki(card_deck / "pki")
    for name in ("jpki-ca.pem", "jpki-ca.key", "terminal-ca.pem", "terminal-ca.key", "terminal.pem", "terminal.key",
                 "revoked.txt"):
        assert (card_deck / "pki" / name).exists(), name
    eku = pki.terminal_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert EKU_FACE_MATCH in eku and EKU_STAFF_VISUAL in eku
    auth = x509.load_pem_x509_certificate((card_deck / "cards" / "p001" / "auth.pem").read_bytes())
    sign = x509.load_pem_x509_certificate((card_deck / "cards" / "p001" / "sign.pem").read_bytes())
    auth.verify_directly_issued_by(pki.jpki_ca)
    sign.verify_directly_issued_by(pki.jpki_ca)
    policy = lambda c: c.extensions.get_extension_for_class(x509.CertificatePolicies).value[0].policy_identifier  # noqa
    assert policy(auth) == POLICY_USER_AUTH and policy(sign) == POLICY_SIGNING
    assert auth.public_key().key_size == 2048
    with pytest.raises(x509.ExtensionNotFound):  # the user-auth certificate carries no personal data
        auth.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    san = sign.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert len(san) == 4


def test_revoked_serials_file(tmp_path):
    path = tmp_path / "revoked.txt"
    path.write_text("# comment\n1A2B  # p008\n\nff\n")
    assert read_revoked(path) == {0x1A2B, 0xFF}


def test_sim_deck_command(tmp_path, card_deck):
    from harness.cli import app

    faces = load_deck(card_deck)[0].face_image.parent.parent
    out = tmp_path / "deck"
    result = CliRunner().invoke(app, ["sim", "deck", "--dataset", str(faces), "--out", str(out), "--count", "2",
                                      "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "personas").iterdir()) == ["p001.toml", "p002.toml"]
    assert (out / "pki" / "revoked.txt").exists()
    bad = CliRunner().invoke(app, ["sim", "deck", "--dataset", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code == 1 and "does not exist" in bad.output


def test_reprs_never_show_a_card_secret(card_deck):
    """pytest carries reprs into assertion messages, records and reports: secrets are masked."""
    from harness.deck import DeckCard
    from sim.card.issue import load_material
    from sim.card.layout import build_card

    p = Persona.load(card_deck / "personas" / "p001.toml")
    secrets = [p.pin, p.signing_password, p.security_code, p.my_number, p.check_code_b]
    text = repr(p) + str(p) + repr([p]) + repr({"persona": p})
    assert "pin=***" in text and "signing_password=***" in text and "security_code=***" in text
    assert p.id in text and "standard" in text  # still a useful repr
    card = DeckCard(id="c1", profile="standard", slot=0, persona=p.source, pin=p.pin)
    text += repr(card) + str([card])
    assert "pin=***" in repr(card) and "c1" in repr(card)
    assert "pin=None" in repr(DeckCard(id="c2", profile="face-auth", slot=1, persona=p.source))
    os_card = build_card(p, None, load_material(p))
    text += repr([ef for app in os_card.apps for ef in app.files.values() if hasattr(ef, "value")])
    assert "value=***" in text
    for secret in secrets:  # quoted as a repr shows it; long ones also bare (a 4-digit one may be a year)
        assert repr(secret) not in text and (len(secret) < 6 or secret not in text), secret


# -- the printed card face (N3) and the age-boundary personas (N15) -------------------------------

def test_card_faces_in_kanji_with_the_amendment_field(card_deck):
    import io

    import numpy as np
    from PIL import Image

    from sim.card import images

    if images.cjk_font_path() is None:
        pytest.skip("no CJK font installed (Debian fonts-noto-cjk, in the Makefile's APT_PACKAGES)")
    # a real Japanese font: different kanji draw differently (a missing glyph is one and the same box)
    assert images.text_png("顔") != images.text_png("認")
    for p in load_deck(card_deck):
        assert (p.card_dir / "name.png").read_bytes() == images.text_png(p.name, p.name_roman)
        assert images.text_png(p.name) != images.text_png(p.name_roman)  # kanji, not romaji
        face = np.asarray(Image.open(io.BytesIO((p.card_dir / "card-face.png").read_bytes())).convert("L"))
        assert face.shape == images.CARD_FACE_SIZE_PX[::-1]
        x0, y0, x1, y1 = images.AMENDMENT_BOX_PX
        inked = (face[y0 + 2:y1 - 1, x0 + 100:x1 - 1] < 100).sum()
        assert (inked > 200) == p.face_auth, f"{p.id} ({p.profile}): amendment field ink {inked}"
        assert [a.text for a in p.amendments] == (["顔認証"] if p.face_auth else [])


@pytest.mark.parametrize("today,kind,born", [
    (dt.date(2026, 11, 29), "40_today", dt.date(1986, 11, 29)),
    (dt.date(2026, 11, 29), "40_tomorrow", dt.date(1986, 11, 30)),
    (dt.date(2026, 12, 31), "40_tomorrow", dt.date(1987, 1, 1)),
    (dt.date(2026, 11, 29), "leap_day", dt.date(1984, 2, 29)),
    (dt.date(2024, 2, 29), "40_today", dt.date(1984, 2, 29)),
    (dt.date(2024, 2, 29), "40_tomorrow", dt.date(1984, 3, 1)),
    (dt.date(2028, 2, 28), "40_tomorrow", dt.date(1988, 2, 29)),
    (dt.date(2028, 2, 28), "leap_day", dt.date(1984, 2, 29)),
])
def test_age_boundary_birth_dates(today, kind, born):
    from sim.card.deck import boundary_birth_date

    assert boundary_birth_date(kind, today) == born


def test_age_boundary_persona_is_redated_and_reissued(tmp_path):
    from harness.facedata import resolve_faces
    from sim.card.deck import generate_deck

    day = dt.date(2026, 11, 29)
    [path] = generate_deck(resolve_faces(None), tmp_path, count=1, seed=5, today=day)
    p = Persona.load(path)
    p.age_boundary = "40_today"
    p.birth_date = dt.date(1986, 11, 28)  # the deck was made yesterday
    p.save(path)
    [q] = load_deck(tmp_path, today=day)
    assert q.birth_date == dt.date(1986, 11, 29) and Persona.load(path).birth_date == q.birth_date
    assert b"19861129" in (q.card_dir / "surface-0001.bin").read_bytes()  # the chip says so too
    assert q.age_on(day) == 40 and q.age_on(day - dt.timedelta(days=1)) == 39


def test_harness_deck_finds_the_boundary_cards_by_birth_date_now(tmp_path):
    from harness.deck import Deck, DeckCard

    today = dt.date.today()

    def card(cid, born):
        return DeckCard(id=cid, profile="standard", slot=0, persona=tmp_path / f"{cid}.toml", birth_date=born,
                        holder="h")

    from sim.card.deck import boundary_birth_date

    deck = Deck(cards=[card("a", dt.date(1970, 1, 1)), card("today", boundary_birth_date("40_today", today)),
                       card("tomorrow", boundary_birth_date("40_tomorrow", today)),
                       card("leap", boundary_birth_date("leap_day", today)),
                       card("yesterday", boundary_birth_date("40_today", today - dt.timedelta(days=1)))],
                subjects=[])
    assert deck.pick(turns40="today").id == "today"
    assert deck.pick(turns40="tomorrow").id == "tomorrow"
    assert deck.pick(leap_day=True).id == "leap"
    assert deck.by_id("today").over40() and not deck.by_id("tomorrow").over40()
    with pytest.raises(ValueError, match="turns40 must be"):
        deck.select(turns40="next week")


@pytest.mark.parametrize("first", [8, 10])
def test_boundary_personas_are_valid_registered_cards(tmp_path, first):
    from sim.card.deck import AGE_BOUNDARIES, make_boundary_persona

    day = dt.date(2026, 11, 29)
    rng = random.Random(1)
    made = [make_boundary_persona(kind, first + k, rng, tmp_path / "f.jpg", "Some_One", day, tmp_path)
            for k, kind in enumerate(AGE_BOUNDARIES)]
    for p in made:
        q = Persona.from_dict(p.to_dict(), tmp_path / f"{p.id}.toml")  # validates: PIN iff standard, amendments
        assert q.age_boundary and q.registered_for_insurance and not q.revoked
    ages = {p.age_boundary: (p.age_on(day - dt.timedelta(days=1)), p.age_on(day), p.age_on(day + dt.timedelta(days=1)))
            for p in made}
    assert ages["40_today"] == (39, 40, 40) and ages["40_tomorrow"] == (39, 39, 40)
    assert made[2].birth_date.month == 2 and made[2].birth_date.day == 29
    assert [p.profile for p in made] == ["face-auth", "standard", "face-auth"]
