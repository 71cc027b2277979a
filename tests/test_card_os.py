"""The software card OS, in process: status words, access rules, counters, persistence."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from sim.card.issue import load_material
from sim.card.layout import build_card
from sim.card.persona import Persona
from sim.card.pki import der

JPKI = "00A4040C0AD392F000260100000001"
ASSIST = "00A4040C0AD3921000310001010408"
SURFACE = "00A4040C0AD3921000310001010402"
SHA256_PREFIX = "3031300d060960864801650304020105000420"


def ef(fid: str) -> str:
    return "00A4020C02" + fid


def verify(secret: str = "") -> str:
    if not secret:
        return "00200080"
    return f"00200080{len(secret):02X}" + secret.encode().hex()


def sign(digest_info: bytes, le: str = "00") -> str:
    return f"802A0080{len(digest_info):02X}" + digest_info.hex() + le


def digest_info(msg: bytes) -> bytes:
    return bytes.fromhex(SHA256_PREFIX) + hashlib.sha256(msg).digest()


def run(card, *apdus: str) -> tuple[bytes, int]:
    """Send each APDU; return the last one's data and status word."""
    resp = b""
    for apdu in apdus:
        resp = card.process(bytes.fromhex(apdu))
        assert len(resp) >= 2
    return resp[:-2], int.from_bytes(resp[-2:], "big")


@pytest.fixture(scope="module")
def personas(card_deck):
    return {p: Persona.load(card_deck / "personas" / f"{p}.toml") for p in ("p001", "p002")}


@pytest.fixture(scope="module")
def materials(personas):
    return {pid: load_material(p) for pid, p in personas.items()}


@pytest.fixture
def standard(personas, materials, tmp_path):
    return build_card(personas["p001"], tmp_path / "p001.json", materials["p001"])


@pytest.fixture
def face_auth(personas, materials, tmp_path):
    return build_card(personas["p002"], tmp_path / "p002.json", materials["p002"])


# ------------------------------------------------------------------ ISO 7816 errors
BAD_INPUT = [
    ("empty", "", 0x6700),
    ("two bytes", "00A4", 0x6700),
    ("short Lc longer than data", "00A4040C0AD392F0", 0x6700),
    ("short Lc shorter than data", "00A4040C02D392F0002601", 0x6700),
    ("extended marker without length", "00A4040C00", None),  # case 2S with Le=00 -> select w/o data
    ("truncated extended length", "00B0000000AA", 0x6700),
    ("extended Lc of zero", "00A4040C000000AABB", 0x6700),
    ("extended Lc mismatch", "00A4040C00000AD392F0", 0x6700),
    ("wrong CLA", "10A4040C0AD392F000260100000001", 0x6E00),
    ("PC/SC pseudo APDU", "FFCA000000", 0x6E00),
    ("secure messaging CLA", "0CA4040C0AD392F000260100000001", 0x6E00),
    ("GET DATA probe", "00CA010000", 0x6D00),
    ("GET DATA odd probe", "00CB3FFF055C035FC10200", 0x6D00),
    ("ISO PSO not in CLA 00", "002A9E9A00", 0x6D00),
    ("SELECT in proprietary class", "80A4040C0AD392F000260100000001", 0x6D00),
    ("odd READ BINARY", "00B1000000", 0x6D00),
    ("SELECT MF after reset", "00A40000023F00", 0x6A86),
    ("SELECT MF, no data", "00A4000C", 0x6A86),
    ("SELECT by path", "00A4080C023F00", 0x6A86),
    ("SELECT returning FCP", "00A404040AD392F000260100000001", 0x6A86),
    ("PIV probe", "00A4040009A00000030800001000", 0x6A82),
    ("OpenPGP probe", "00A4040006D2760001240100", 0x6A82),
    ("EF before any AP", "00A4020C02000A", 0x6A82),
    ("READ with no EF", "00B0000004", 0x6986),
    ("VERIFY with no EF", "0020008000", 0x6986),
    ("GET RESPONSE with nothing pending", "00C0000000", 0x6985),
    ("GET CHALLENGE bad P1P2", "0084000108", 0x6A86),
    ("GET CHALLENGE too long", "0084000000", 0x6C08),
    ("TERMINAL AUTHORIZE without challenge", "8082000101AA", 0x6985),
]


@pytest.mark.parametrize("name,apdu,sw", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_gets_the_iso_status_word(standard, name, apdu, sw):
    _, got = run(standard, apdu)
    if sw is None:
        assert got == 0x6700  # select without an identifier
    else:
        assert got == sw, f"{name}: {got:04X}"


def test_select_mf_answers_6a86_even_inside_an_application(standard):
    assert run(standard, JPKI, "00A40000023F00")[1] == 0x6A86


# ------------------------------------------------------------------ READ BINARY
def test_read_binary_short_extended_and_past_end(standard, materials):
    cert = der(materials["p001"].auth_cert)
    data, sw = run(standard, JPKI, ef("000A"), "00B0000004")
    assert sw == 0x9000 and data[:2] == b"\x30\x82" and int.from_bytes(data[2:4], "big") + 4 == len(cert)
    data, sw = run(standard, "00B0000000")
    assert sw == 0x9000 and data == cert[:256]  # Le=00 is 256 bytes
    data, sw = run(standard, "00B0000000FFFF")
    assert sw == 0x6282 and data == cert  # extended: whole file, end reached before Ne
    off = len(cert) - 10
    data, sw = run(standard, f"00B0{off:04X}00")
    assert sw == 0x6282 and data == cert[-10:]
    assert run(standard, f"00B0{len(cert):04X}04")[1] == 0x6B00
    assert run(standard, "00B0700004")[1] == 0x6B00
    assert run(standard, "00B08A0004")[1] == 0x6A86  # short EF identifier
    assert run(standard, "00B0000001AA")[1] == 0x6700  # READ with a data field
    assert run(standard, "00B00000")[1] == 0x6700  # no Le


def test_token_name_and_key_efs_are_not_readable(standard):
    data, sw = run(standard, JPKI, ef("0006"), "00B0000020")
    assert sw == 0x9000 and data.rstrip(b" ") == b"JPKIAPICCTOKEN2"
    assert run(standard, ef("0017"), "00B0000004")[1] == 0x6981
    assert run(standard, ef("0018"), "00B0000004")[1] == 0x6981
    assert run(standard, ef("7777"))[1] == 0x6A82
    assert run(standard, "00A4020C03000A00")[1] == 0x6700


# ------------------------------------------------------------------ access rules
def _access(card, p: Persona, app: str, fid: str, secret_ef: str | None, secret: str | None) -> int:
    apdus = [app]
    if secret_ef:
        apdus += [ef(secret_ef), verify(secret)]
    apdus += [ef(fid), "00B0000004"]
    return run(card, *apdus)[1]


ACCESS = [
    # app, fid, secret EF, which secret, expected SW
    ("jpki", "000A", None, None, 0x9000),
    ("jpki", "000B", None, None, 0x9000),
    ("jpki", "0002", None, None, 0x9000),
    ("jpki", "0001", None, None, 0x6982),
    ("jpki", "0001", "0018", "pin", 0x6982),
    ("jpki", "0001", "001B", "signing_password", 0x9000),
    ("assist", "0001", None, None, 0x6982),
    ("assist", "0001", "0011", "pin", 0x9000),
    ("assist", "0001", "0014", "check_code_a", 0x9000),
    ("assist", "0001", "0015", "check_code_b", 0x6982),
    ("assist", "0002", None, None, 0x6982),
    ("assist", "0002", "0011", "pin", 0x9000),
    ("assist", "0002", "0015", "check_code_b", 0x9000),
    ("assist", "0002", "0014", "check_code_a", 0x6982),
    ("surface", "0002", None, None, 0x6982),
    ("surface", "0002", "0012", "check_code_b", 0x9000),
    ("surface", "0002", "0013", "check_code_a", 0x9000),
    ("surface", "0002", "0011", "birth_key", 0x6982),
    ("surface", "0001", None, None, 0x6982),
    ("surface", "0001", "0011", "birth_key", 0x9000),
]
APPS = {"jpki": JPKI, "assist": ASSIST, "surface": SURFACE}


@pytest.mark.parametrize("app,fid,secret_ef,secret,sw", ACCESS,
                         ids=[f"{a}-{f}-{s or 'none'}" for a, f, _, s, _ in ACCESS])
def test_each_file_opens_only_with_its_credential(standard, personas, app, fid, secret_ef, secret, sw):
    p = personas["p001"]
    value = getattr(p, secret) if secret else None
    assert _access(standard, p, APPS[app], fid, secret_ef, value) == sw


def test_text_assist_records(standard, personas):
    p = personas["p001"]
    data, sw = run(standard, ASSIST, ef("0011"), verify(p.pin), ef("0001"), "00B0000000")
    assert sw in (0x9000, 0x6282) and data == b"\xff\x10\x0c" + p.my_number.encode()
    data, _ = run(standard, ef("0002"), "00B0000000")
    assert data[:2] == b"\xff\x20" and p.name.encode() in data and p.address.encode() in data
    assert p.birth_date.strftime("%Y%m%d").encode() in data


def test_security_status_is_lost_when_leaving_the_application(standard, personas):
    p = personas["p001"]
    assert run(standard, JPKI, ef("001B"), verify(p.signing_password), ef("0001"), "00B0000004")[1] == 0x9000
    assert run(standard, JPKI, ef("0001"), "00B0000004")[1] == 0x9000  # re-selecting the same AP keeps it
    assert run(standard, ASSIST, JPKI, ef("0001"), "00B0000004")[1] == 0x6982
    run(standard, ef("001B"), verify(p.signing_password))
    standard.reset()
    assert run(standard, JPKI, ef("0001"), "00B0000004")[1] == 0x6982


# ------------------------------------------------------------------ VERIFY and counters
COUNTERS = [("jpki", "0018", "user_auth_pin", "0000", 3),
            ("jpki", "001B", "signing_password", "WRONG1", 5),
            ("assist", "0011", "assist_pin", "0000", 3),
            ("assist", "0015", "assist_check_b", "0" * 14, 10),
            ("surface", "0012", "surface_check_b", "0" * 14, 10)]


@pytest.mark.parametrize("app,fid,counter,wrong,max_tries", COUNTERS, ids=[c[2] for c in COUNTERS])
def test_retry_counter_runs_down_blocks_and_persists(personas, materials, tmp_path, app, fid, counter, wrong,
                                                     max_tries):
    p = personas["p001"]
    state = tmp_path / "state.json"
    card = build_card(p, state, materials["p001"])
    right = {"0018": p.pin, "001B": p.signing_password, "0011": p.pin, "0015": p.check_code_b,
             "0012": p.check_code_b}[fid]
    assert run(card, APPS[app], ef(fid), verify())[1] == 0x63C0 | max_tries
    assert run(card, verify())[1] == 0x63C0 | max_tries  # the status query spends nothing
    for left in range(max_tries - 1, 0, -1):
        assert run(card, verify(wrong))[1] == 0x63C0 | left
    card.power_off()
    card = build_card(p, state, materials["p001"])  # a restart of the card process
    assert run(card, APPS[app], ef(fid), verify())[1] == 0x63C1
    assert run(card, verify(wrong))[1] == 0x63C0  # the last try
    assert run(card, verify(right))[1] == 0x6984  # blocked, even for the right secret
    assert run(card, verify())[1] == 0x63C0  # OpenSC's probe still sees 63Cx
    card.reset()
    assert run(card, APPS[app], ef(fid), verify(right))[1] == 0x6984
    assert json.loads(state.read_text())["tries"][counter] == 0


def test_right_secret_restores_the_counter(standard, personas):
    p = personas["p001"]
    assert run(standard, JPKI, ef("0018"), verify("1111" if p.pin != "1111" else "2222"))[1] == 0x63C2
    assert run(standard, verify(p.pin))[1] == 0x9000
    assert run(standard, verify())[1] == 0x63C3  # still 63Cx after a successful VERIFY


def test_blocked_status_word_is_configurable(personas, materials):
    p = dataclasses.replace(personas["p001"], blocked_sw=0x6983, initial_tries={"user_auth_pin": 0})
    card = build_card(p, None, materials["p001"])
    assert run(card, JPKI, ef("0018"), verify())[1] == 0x63C0
    assert run(card, verify(p.pin))[1] == 0x6983


@pytest.mark.parametrize("fid,bad", [("0018", "12345"), ("0018", "12a4"), ("0018", "123"),
                                     ("001B", "abc123"), ("001B", "A1"), ("001B", "A" * 17)])
def test_wrong_secret_format_is_6a80_and_spends_nothing(standard, fid, bad):
    assert run(standard, JPKI, ef(fid), verify(bad))[1] == 0x6A80
    _, sw = run(standard, verify())
    assert sw in (0x63C3, 0x63C5)


def test_verify_parameter_errors(standard):
    assert run(standard, JPKI, ef("0018"), "0020008104" + "31323334")[1] == 0x6A86
    assert run(standard, "0020018004" + "31323334")[1] == 0x6A86
    assert run(standard, ef("000A"), verify("1234"))[1] == 0x6981


def _block_pin(card, p: Persona) -> None:
    wrong = "1111" if p.pin != "1111" else "2222"
    for _ in range(3):
        run(card, JPKI, ef("0018"), verify(wrong))
    assert run(card, JPKI, ef("0018"), verify(p.pin))[1] == 0x6984


CORRUPT_STATES = [
    ("not json", b"{not json"),
    ("not utf-8", b"\xff\xfe{}"),
    ("a list", b"[1, 2]"),
    ("no version", b'{"tries": {"user_auth_pin": 0}}'),
    ("no checksum", b'{"version": 2, "tries": {"user_auth_pin": 3}}'),
    ("tries not a table", b'{"version": 1, "tries": 3}'),
    ("above the maximum", b'{"version": 1, "tries": {"user_auth_pin": 0, "assist_pin": 4}}'),
    ("far above the maximum", b'{"version": 1, "tries": {"user_auth_pin": 999}}'),
    ("negative", b'{"version": 1, "tries": {"user_auth_pin": -1}}'),
    ("a string", b'{"version": 1, "tries": {"user_auth_pin": "3"}}'),
    ("a boolean", b'{"version": 1, "tries": {"user_auth_pin": true}}'),
    ("a float", b'{"version": 1, "tries": {"user_auth_pin": 2.5}}'),
]


@pytest.mark.parametrize("name,content", CORRUPT_STATES, ids=[c[0] for c in CORRUPT_STATES])
def test_corrupt_state_file_fails_safe_and_is_set_aside(personas, materials, tmp_path, name, content):
    """An untrustworthy state file blocks every counter; it never resets them to their issued values."""
    p = personas["p001"]
    state = tmp_path / "state.json"
    card = build_card(p, state, materials["p001"])
    _block_pin(card, p)
    state.write_bytes(content)  # damaged on disk while the card was away
    card = build_card(p, state, materials["p001"])
    assert card.state.failed_safe
    assert run(card, JPKI, ef("0018"), verify())[1] == 0x63C0
    assert run(card, verify(p.pin))[1] == 0x6984, "a corrupt state file unblocked a blocked PIN"
    assert run(card, ef("001B"), verify(p.signing_password))[1] == 0x6984
    assert run(card, ASSIST, ef("0015"), verify(p.check_code_b))[1] == 0x6984
    assert (tmp_path / "state.json.corrupt").read_bytes() == content
    assert set(json.loads(state.read_text())["tries"].values()) == {0}
    # and it stays blocked across a restart, until the lab re-issues the card
    card = build_card(p, state, materials["p001"])
    assert run(card, JPKI, ef("0018"), verify(p.pin))[1] == 0x6984
    card.state.reissue()
    assert run(card, JPKI, ef("0018"), verify(p.pin))[1] == 0x9000


def test_a_digit_flipped_in_a_valid_state_file_is_caught_by_its_checksum(personas, materials, tmp_path):
    p = personas["p001"]
    state = tmp_path / "state.json"
    _block_pin(build_card(p, state, materials["p001"]), p)
    doc = json.loads(state.read_text())
    assert doc["version"] == 2 and len(doc["sha256"]) == 64
    doc["tries"]["user_auth_pin"] = 3  # still well-formed, still in range: only the checksum tells
    state.write_text(json.dumps(doc))
    card = build_card(p, state, materials["p001"])
    assert card.state.failed_safe and run(card, JPKI, ef("0018"), verify(p.pin))[1] == 0x6984


def test_random_damage_to_the_state_file_never_gives_back_a_try(personas, materials, tmp_path):
    """Byte flips, cuts and insertions: the loaded counters are the stored ones or all blocked."""
    import random

    from sim.card.persona import COUNTERS
    from sim.card.state import CardState

    p = personas["p001"]
    state = tmp_path / "state.json"
    _block_pin(build_card(p, state, materials["p001"]), p)
    good = state.read_bytes()
    stored = json.loads(good)["tries"]
    rng = random.Random(7)
    outcomes = {"kept": 0, "blocked": 0}
    for _ in range(100):
        damaged = bytearray(good)
        at = rng.randrange(len(damaged))
        how = rng.randrange(3)
        if how == 0:
            damaged[at] = rng.randrange(256)
        elif how == 1:
            del damaged[at:at + rng.randint(1, 8)]
        else:
            damaged[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        state.write_bytes(bytes(damaged))
        loaded = CardState.load(state, p.start_tries(), COUNTERS)
        if loaded.failed_safe:
            assert set(loaded.tries.values()) == {0}
            outcomes["blocked"] += 1
        else:
            assert loaded.tries == stored, bytes(damaged)
            outcomes["kept"] += 1
    assert outcomes["blocked"] > 70


def test_a_valid_state_file_is_kept(personas, materials, tmp_path):
    p = personas["p001"]
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"version": 1, "tries": {"user_auth_pin": 2, "retired_counter": 7}}))
    card = build_card(p, state, materials["p001"])
    assert not card.state.failed_safe and not (tmp_path / "state.json.corrupt").exists()
    assert run(card, JPKI, ef("0018"), verify())[1] == 0x63C2
    assert run(card, ef("001B"), verify())[1] == 0x63C5  # not in the file: as issued


def test_counters_never_exceed_their_maximum_in_memory(standard):
    with pytest.raises(ValueError, match="outside"):
        standard.state.set("user_auth_pin", 4)
    with pytest.raises(ValueError, match="outside"):
        standard.state.set("user_auth_pin", -1)


def test_state_save_syncs_the_folder_after_the_rename(personas, materials, tmp_path, monkeypatch):
    """os.replace is durable only once the folder is fsynced: the last fsync of a save is the folder's."""
    import os
    import stat

    from sim.card import state as state_mod

    synced: list[tuple[bool, int]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((stat.S_ISDIR(st.st_mode), st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(state_mod.os, "fsync", recording_fsync)
    card = build_card(personas["p001"], tmp_path / "state.json", materials["p001"])
    synced.clear()
    run(card, JPKI, ef("0018"), verify("9999" if personas["p001"].pin != "9999" else "8888"))
    assert [d for d, _ in synced] == [False, True]
    assert synced[-1][1] == tmp_path.stat().st_ino


# ------------------------------------------------------------------ signatures
def _verify_sig(cert: x509.Certificate, sig: bytes, msg: bytes) -> None:
    cert.public_key().verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())


def test_user_auth_signature_after_pin(standard, personas, materials):
    p, m = personas["p001"], materials["p001"]
    msg = b"facehil"
    assert run(standard, JPKI, ef("0017"), sign(digest_info(msg)))[1] == 0x6982
    sig, sw = run(standard, ef("0018"), verify(p.pin), ef("0017"), sign(digest_info(msg)))
    assert sw == 0x9000 and len(sig) == 256
    _verify_sig(m.auth_cert, sig, msg)


def test_signing_key_needs_the_signing_password(standard, personas, materials):
    p, m = personas["p001"], materials["p001"]
    assert run(standard, JPKI, ef("0018"), verify(p.pin), ef("001A"), sign(digest_info(b"x")))[1] == 0x6982
    sig, sw = run(standard, ef("001B"), verify(p.signing_password), ef("001A"), sign(digest_info(b"x")))
    assert sw == 0x9000
    _verify_sig(m.sign_cert, sig, b"x")


def test_sign_parameter_and_length_errors(standard, personas, materials):
    p = personas["p001"]
    di = digest_info(b"m")
    run(standard, JPKI, ef("0018"), verify(p.pin), ef("0017"))
    assert run(standard, "802A0180" + f"{len(di):02X}" + di.hex() + "00")[1] == 0x6A86
    assert run(standard, "802A009E" + f"{len(di):02X}" + di.hex() + "00")[1] == 0x6A86
    assert run(standard, "802A008000")[1] == 0x6700
    assert run(standard, sign(b"\x01" * 246))[1] == 0x6A80  # longer than a 2048-bit block allows
    assert run(standard, sign(di, le="80"))[1] == 0x6C00  # wrong Le: the exact length is 256
    _, sw = run(standard, "802A0080" + f"{len(di):02X}" + di.hex())  # case 3: data for GET RESPONSE
    assert sw == 0x6100
    sig, sw = run(standard, "00C0000000")
    assert sw == 0x9000 and len(sig) == 256
    _verify_sig(materials["p001"].auth_cert, sig, b"m")
    assert run(standard, ef("000A"), sign(di))[1] == 0x6981


def test_get_challenge_is_random(standard):
    a, sw = run(standard, "0084000008")
    b, _ = run(standard, "0084000008")
    assert sw == 0x9000 and len(a) == 8 and a != b


# ------------------------------------------------------------------ face-auth profile
def test_face_auth_card_has_no_pin_and_no_signing_certificate(face_auth, personas):
    p = personas["p002"]
    assert run(face_auth, JPKI, ef("000A"), "00B0000004")[1] == 0x9000
    for fid in ("0001", "0002", "001A"):
        assert run(face_auth, ef(fid))[1] == 0x6A82
    for fid in ("0018", "001B"):  # OpenSC's bind probes: 63Cx, shown as locked
        assert run(face_auth, ef(fid), verify())[1] == 0x63C0
    assert run(face_auth, ef("0018"), verify("1234"))[1] == 0x6984
    assert run(face_auth, ef("0017"), sign(digest_info(b"x")))[1] == 0x6982
    assert run(face_auth, ASSIST, ef("0011"), verify())[1] == 0x63C0
    assert run(face_auth, ef("0015"), verify(p.check_code_b), ef("0002"), "00B0000004")[1] == 0x9000
    assert run(face_auth, SURFACE, ef("0012"), verify(p.check_code_b), ef("0002"), "00B0000004")[1] == 0x9000


def test_face_auth_absent_pin_probe_option(personas, materials):
    p = dataclasses.replace(personas["p002"], no_pin_probe="absent")
    card = build_card(p, None, materials["p002"])
    assert run(card, JPKI, ef("0018"))[1] == 0x6A82
    assert run(card, ef("001B"))[1] == 0x6A82
    assert run(card, ASSIST, ef("0011"))[1] == 0x6A82


def test_face_photo_record_holds_a_greyscale_jp2(standard, personas, materials):
    import cv2
    import numpy as np

    p = personas["p001"]
    record, sw = run(standard, SURFACE, ef("0012"), verify(p.check_code_b), ef("0002"), "00B0000000FFFF")
    assert sw == 0x6282 and record == materials["p001"].surface_face
    jp2 = materials["p001"].face_jp2
    assert jp2 in record and jp2.startswith(b"\x00\x00\x00\x0cjP  ")
    img = cv2.imdecode(np.frombuffer(jp2, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.ndim == 2 and img.shape == (300, 240)


def test_reissue_over_the_control_line_unlocks_a_blocked_pin(personas, materials, tmp_path):
    """REISSUE (the lab re-issuing a locked test card) restores every counter, also on disk."""
    from sim.card.control import handle_line
    from sim.card.vpcd import CardLink

    p = personas["p001"]
    state = tmp_path / "state.json"
    card = build_card(p, state, materials["p001"])
    for _ in range(3):
        run(card, JPKI, ef("0018"), verify("1111" if p.pin != "1111" else "2222"))
    assert run(card, JPKI, ef("0018"), verify(p.pin))[1] == 0x6984
    link = CardLink(card, "127.0.0.1", 1, inserted=False)
    assert handle_line("REISSUE", link, {}) == "OK"
    assert run(card, JPKI, ef("0018"), verify())[1] == 0x63C3
    assert run(card, verify(p.pin))[1] == 0x9000
    assert json.loads(state.read_text())["tries"]["user_auth_pin"] == 3
    assert handle_line("REISSUE now", link, {}).startswith("ERR")
