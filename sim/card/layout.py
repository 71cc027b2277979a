"""The My Number Card's applications, files and access rules for a persona and a profile.

JPKI AP (D3 92 F0 00 26 01 00 00 00 01)
  0006 token name "JPKIAPICCTOKEN2" (space-padded to 32)  free
  0008 certificates present: 2 bytes (user-auth, signing) 01/00  free (format: ours)
  000A user-auth certificate, 000B its CA                  free
  0001 signing certificate                                 signing password
  0002 signing CA                                          free
  0017 user-auth key (sign)                                user-auth PIN or terminal authorization
  0018 user-auth PIN, 4 digits, 3 tries
  001A signing key (sign)                                  signing password
  001B signing password, 6-16 [A-Z0-9], 5 tries
Text-input-assist AP (D3 92 10 00 31 00 01 01 04 08)
  0001 My Number  FF10 0C <12 digits>                      PIN or check code A
  0002 basic four FF20 {DF21 offsets, DF22 name, DF23 address, DF24 birth, DF25 sex}
                                                           PIN or check code B (not A)
  0011 PIN (3) / 0014 check code A (12 digits) / 0015 check code B (14 digits, 10 tries)
Card-surface AP (D3 92 10 00 31 00 01 01 04 02)
  0001 birth record                                        birth key, check code B or A
  0002 card-face record (photo JP2)                        check code B or A
  0011 birth key (era YYMMDD) / 0012 check code B / 0013 check code A

Face-auth profile: no signing certificate, key or CA (0001, 0002, 001A answer 6A82), no PIN
set anywhere. The unset PIN EFs (JPKI 0018 and 001B, text-assist 0011) exist by default and
answer a VERIFY status query with 63C0 and any VERIFY with data with 6984: OpenSC's jpki
driver then binds (it needs 63Cx from both 0018 and 001B) and lists the user-auth
certificate, shows both PINs as locked, and cannot sign; the user-auth key is usable only
after a terminal authorization. ``no_pin_probe = "absent"`` instead removes those EFs (6A82),
which makes OpenSC refuse the card ("Unsupported card").
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

from sim.card.cardos import CardConfig, CardOS
from sim.card.filesystem import TERMINAL, Application, BinaryEF, KeyEF, SecretEF
from sim.card.issue import CardMaterial, load_material
from sim.card.persona import COUNTERS, Persona
from sim.card.pki import der
from sim.card.state import CardState
from sim.card.tlv import record_with_offsets, tlv

AID_JPKI = bytes.fromhex("D392F000260100000001")
AID_TEXT_ASSIST = bytes.fromhex("D3921000310001010408")
AID_CARD_SURFACE = bytes.fromhex("D3921000310001010402")
TOKEN_NAME = b"JPKIAPICCTOKEN2"

PIN4 = r"\d{4}"
SIGNING_PASSWORD = r"[A-Z0-9]{6,16}"
CHECK_A = r"\d{12}"
CHECK_B = r"\d{14}"
BIRTH_KEY = r"\d{6}"


def _free(fid: int, data: bytes) -> BinaryEF:
    return BinaryEF(fid, data)


def _secret(fid: int, counter: str, value: str | None, grants: str, pattern: str) -> SecretEF:
    return SecretEF(fid, counter, COUNTERS[counter], value, grants, pattern)


def jpki_app(p: Persona, m: CardMaterial) -> Application:
    app = Application("jpki", AID_JPKI)
    has_sign = m.sign_cert is not None and m.sign_key is not None
    app.add(_free(0x0006, TOKEN_NAME.ljust(32, b" ")))
    app.add(_free(0x0008, bytes((1, 1 if has_sign else 0))))
    app.add(_free(0x000A, der(m.auth_cert)))
    app.add(_free(0x000B, der(m.jpki_ca)))
    app.add(KeyEF(0x0017, m.auth_key, frozenset({"auth_pin", TERMINAL})))
    if p.pin is not None or p.no_pin_probe == "locked":
        app.add(_secret(0x0018, "user_auth_pin", p.pin, "auth_pin", PIN4))
    if has_sign:
        app.add(BinaryEF(0x0001, der(m.sign_cert), frozenset({"sign_pw"})))
        app.add(_free(0x0002, der(m.jpki_ca)))
        app.add(KeyEF(0x001A, m.sign_key, frozenset({"sign_pw"})))
    if p.signing_password is not None or p.no_pin_probe == "locked":
        app.add(_secret(0x001B, "signing_password", p.signing_password, "sign_pw", SIGNING_PASSWORD))
    return app


def text_assist_app(p: Persona) -> Application:
    app = Application("text-assist", AID_TEXT_ASSIST)
    app.add(BinaryEF(0x0001, tlv(0xFF10, p.my_number.encode()), frozenset({"pin", "check_a"})))
    basic_four = record_with_offsets(0xFF20, 0xDF21, [
        (0xDF22, p.name.encode("utf-8")), (0xDF23, p.address.encode("utf-8")),
        (0xDF24, p.birth_date.strftime("%Y%m%d").encode()), (0xDF25, str(p.sex).encode())])
    app.add(BinaryEF(0x0002, basic_four, frozenset({"pin", "check_b"})))
    if p.pin is not None or p.no_pin_probe == "locked":
        app.add(_secret(0x0011, "assist_pin", p.pin, "pin", PIN4))
    app.add(_secret(0x0014, "assist_check_a", p.check_code_a, "check_a", CHECK_A))
    app.add(_secret(0x0015, "assist_check_b", p.check_code_b, "check_b", CHECK_B))
    return app


def card_surface_app(p: Persona, m: CardMaterial) -> Application:
    app = Application("card-surface", AID_CARD_SURFACE)
    app.add(BinaryEF(0x0001, m.surface_birth, frozenset({"birth", "check_b", "check_a"})))
    app.add(BinaryEF(0x0002, m.surface_face, frozenset({"check_b", "check_a"})))
    app.add(_secret(0x0011, "surface_birth", p.birth_key, "birth", BIRTH_KEY))
    app.add(_secret(0x0012, "surface_check_b", p.check_code_b, "check_b", CHECK_B))
    app.add(_secret(0x0013, "surface_check_a", p.check_code_a, "check_a", CHECK_A))
    return app


def build_card(persona: Persona, state_path: Path | None = None, material: CardMaterial | None = None,
               clock: Callable[[], dt.datetime] | None = None) -> CardOS:
    """A CardOS for this persona; counters persist in ``state_path`` (memory only if None)."""
    material = material or load_material(persona)
    apps = [jpki_app(persona, material), text_assist_app(persona), card_surface_app(persona, material)]
    state = CardState.load(state_path, persona.start_tries(), COUNTERS)
    return CardOS(apps, state, CardConfig(blocked_sw=persona.blocked_sw), terminal_ca=material.terminal_ca,
                  auth_cert_der=der(material.auth_cert), clock=clock)
