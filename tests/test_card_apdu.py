"""The card-side APDU parser (ISO 7816-4 cases) and a property test fuzzing the card OS."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.card.apdu import CardError, parse_command
from sim.card.issue import load_material
from sim.card.layout import build_card
from sim.card.persona import Persona

CASES = [
    ("case 1", "00A4040C", dict(data=b"", ne=None, extended=False)),
    ("case 2S", "00B0000010", dict(data=b"", ne=16, extended=False)),
    ("case 2S Le=00", "00B0000000", dict(data=b"", ne=256, extended=False)),
    ("case 3S", "00A4020C02000A", dict(data=b"\x00\x0a", ne=None, extended=False)),
    ("case 4S", "802A008002AABB00", dict(data=b"\xaa\xbb", ne=256, extended=False)),
    ("case 2E", "00B0000000FFFD", dict(data=b"", ne=65533, extended=True)),
    ("case 2E Le=0000", "00B00000000000", dict(data=b"", ne=65536, extended=True)),
    ("case 3E", "80820001000002AABB", dict(data=b"\xaa\xbb", ne=None, extended=True)),
    ("case 4E", "80820001000002AABB0100", dict(data=b"\xaa\xbb", ne=256, extended=True)),
]


@pytest.mark.parametrize("name,hexapdu,fields", CASES, ids=[c[0] for c in CASES])
def test_parse_cases(name, hexapdu, fields):
    cmd = parse_command(bytes.fromhex(hexapdu))
    for key, value in fields.items():
        assert getattr(cmd, key) == value, key


@pytest.mark.parametrize("hexapdu", ["", "00", "00A4", "00A404", "00A4040C0000", "00A4040C03AABB",
                                     "00A4040C02AABBCCDD", "00A4040C000003AABB",
                                     "00A4040C000002AABB00"])
def test_malformed_lengths_are_6700(hexapdu):
    with pytest.raises(CardError) as err:
        parse_command(bytes.fromhex(hexapdu))
    assert err.value.sw == 0x6700


@pytest.fixture(scope="module")
def card_factory(card_deck):
    persona = Persona.load(card_deck / "personas" / "p001.toml")
    material = load_material(persona)
    return lambda: build_card(persona, None, material)


COMMON_INS = [0xA4, 0xB0, 0x20, 0x84, 0xC0, 0x2A, 0x82, 0xCA, 0xB1, 0x88, 0x24]


def structured_apdus():
    header = st.tuples(st.sampled_from([0x00, 0x80, 0x0C, 0xFF]) | st.integers(0, 255),
                       st.sampled_from(COMMON_INS) | st.integers(0, 255),
                       st.integers(0, 255), st.integers(0, 255))
    body = st.one_of(
        st.just(b""),
        st.binary(max_size=1).map(lambda b: b),  # Le only
        st.binary(min_size=1, max_size=300).map(lambda d: bytes((min(len(d), 255),)) + d[:255]),
        st.binary(min_size=1, max_size=600).map(lambda d: b"\x00" + len(d).to_bytes(2, "big") + d),
        st.binary(max_size=700),  # anything at all
    )
    return st.tuples(header, body).map(lambda hb: bytes(hb[0]) + hb[1])


# Valid commands mixed in, so fuzzed commands also land inside applications and on EFs.
PRIMERS = [bytes.fromhex(h) for h in ("00A4040C0AD392F000260100000001", "00A4040C0AD3921000310001010408",
                                       "00A4020C02000A", "00A4020C020017", "00A4020C020018", "0084000008")]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(apdus=st.lists(st.binary(max_size=80) | structured_apdus() | st.sampled_from(PRIMERS), min_size=1,
                     max_size=8))
def test_every_input_gets_a_status_word_and_the_card_survives(card_factory, apdus):
    card = card_factory()
    for apdu in apdus:
        resp = card.process(apdu)
        assert isinstance(resp, bytes) and len(resp) >= 2
        sw1 = resp[-2]
        assert sw1 in (0x61, 0x62, 0x63, 0x67, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x90), resp[-2:].hex()
        assert sw1 != 0x6F, "the card OS hit an internal error"
    # Still a working card afterwards.
    card.reset()
    assert card.process(bytes.fromhex("00A4040C0AD392F000260100000001")) == b"\x90\x00"
