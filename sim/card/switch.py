"""Switching a card between the standard and the face-auth profile in place (N4, N3).

What the municipality does at its counter, as far as the simulator needs it: the same card (same
My Number, same card face, same user-auth key and certificate, so the same certificate serial),
a new profile.

- To face-auth: the PIN and the signing password are removed, the signing certificate is
  revoked and deleted, and 「顔認証」 is written in the amendment field (追記欄).
- To standard: a new 4-digit PIN (given, or drawn at random) and a new signing password are
  set, a new signing certificate is issued, and 「顔認証」 is struck through.
- Either way the PIN-type retry counters start full: the holder chose them at the counter.

What is *not* public, and so our own model (docs/decisions.md): whether the chip's user-auth
key and certificate are kept or re-issued, and how the insurance registration (利用登録)
follows. We keep the user-auth certificate, and the eligibility service keys registrations by
that certificate's issuer and serial, so a registered card stays registered across a switch
and the reader must not ask to register it again.

``switch_profile`` rewrites the persona file and the card folder; a running card process takes
the new profile on its control port's ``RELOAD`` (``reload_card``).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sim.card.persona import FACE_AUTH_AMENDMENT, PROFILES, Amendment, Persona, PersonaError

log = logging.getLogger(__name__)

# Counters the municipality sets anew at a switch (sim.card.persona.COUNTERS names)
RESET_ON_SWITCH = ("user_auth_pin", "signing_password", "assist_pin")
_PASSWORD_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class SwitchError(ValueError):
    """The switch cannot be done; the message says why."""


@dataclass
class SwitchResult:
    persona: Persona
    previous_profile: str
    auth_serial: str  # hex: unchanged by the switch
    pin: str | None  # the new PIN after a switch to standard (give it to the holder), else None


def switch_profile(persona_path: Path, to: str, *, pin: str | None = None,
                   signing_password: str | None = None) -> SwitchResult:
    """Switch the persona at ``persona_path`` to profile ``to`` and update its issued card."""
    from sim.card.issue import IssueError, _fingerprint, write_card_face
    from sim.card.pki import ensure_pki, issue_signing_cert, load_cert, new_rsa_key, save_cert, save_key

    if to not in PROFILES:
        raise SwitchError(f"--to must be one of {', '.join(PROFILES)}, got {to!r}")
    try:
        persona = Persona.load(persona_path)
    except PersonaError as exc:
        raise SwitchError(str(exc)) from None
    previous = persona.profile
    if previous == to:
        raise SwitchError(f"card {persona.id} is already a {to} card")
    if to == "face-auth" and (pin is not None or signing_password is not None):
        raise SwitchError("a face-auth card has no PIN or signing password to set")
    folder, pki_dir = persona.card_dir, persona.pki_dir
    if folder is None or pki_dir is None or not (folder / "auth.pem").exists():
        raise SwitchError(f"card {persona.id} has not been issued (no {folder}/auth.pem): nothing to switch")
    pki = ensure_pki(pki_dir)
    auth_cert = load_cert(folder / "auth.pem")

    persona.profile = to
    if to == "face-auth":
        persona.pin = persona.signing_password = None
        persona.amendments.append(Amendment(FACE_AUTH_AMENDMENT))
    else:
        persona.pin = pin if pin is not None else f"{secrets.randbelow(10000):04d}"
        persona.signing_password = signing_password or "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(8))
        for a in persona.amendments:
            if a.text == FACE_AUTH_AMENDMENT:
                a.struck = True
    try:
        persona.validate(str(persona_path))  # a bad --pin is refused before anything is written
    except PersonaError as exc:
        raise SwitchError(str(exc)) from None

    if to == "face-auth":
        sign_pem = folder / "sign.pem"
        if sign_pem.exists():
            pki.add_revoked(load_cert(sign_pem).serial_number, f"{persona.id} signing (switched to face-auth)")
        for stale in ("sign.key", "sign.pem"):
            (folder / stale).unlink(missing_ok=True)
    else:
        sign_key = new_rsa_key()
        save_key(sign_key, folder / "sign.key")
        try:
            sign_cert = issue_signing_cert(pki, sign_key.public_key(), secrets.token_hex(10).upper(),
                                           auth_cert.not_valid_after_utc, name=persona.name, sex=persona.sex,
                                           birth=persona.birth_date, address=persona.address)
        except (IssueError, ValueError) as exc:
            raise SwitchError(f"card {persona.id}: no signing certificate: {exc}") from None
        save_cert(sign_cert, folder / "sign.pem")
    persona.save(persona_path)
    write_card_face(persona)
    serial = f"{auth_cert.serial_number:X}"
    # the card as issued now: load_material must not re-issue it (that would change the serial)
    (folder / "issued.json").write_text(json.dumps({"fingerprint": _fingerprint(persona, pki),
                                                    "auth_serial": serial}, indent=1))
    log.info("card %s switched %s -> %s (user-auth certificate %s kept)", persona.id, previous, to, serial)
    return SwitchResult(persona=persona, previous_profile=previous, auth_serial=serial,
                        pin=persona.pin if to == "standard" else None)


def reset_switched_counters(state) -> None:
    """The PIN-type counters full again (a sim.card.state.CardState): set anew at the counter."""
    for name in RESET_ON_SWITCH:
        if name in state.tries:
            state.set(name, state.initial.get(name, state.maximum.get(name, 0)))


def reload_card(link, persona_path: Path, state_path: Path | None, info: dict[str, str]) -> None:
    """Serve the persona file's current profile from a running card process (control RELOAD).

    The card is taken off the reader and put back (a switched card went to the municipality and
    comes back as a new card to the reader), so no session spans the old and the new profile."""
    from sim.card.layout import build_card
    from sim.card.vpcd import DEFAULT_DROPOUT_S

    persona = Persona.load(persona_path)
    card = build_card(persona, state_path)
    if persona.profile != info.get("profile"):
        reset_switched_counters(card.state)
    inserted = link.status().inserted
    if inserted:
        link.remove()
    link.card = card
    info["profile"] = persona.profile
    if inserted:
        # off long enough for pcscd's ~400 ms poll to see the removal; else it goes on talking to
        # the new, unpowered card (sim.card.vpcd's MIN_DROPOUT_S)
        time.sleep(DEFAULT_DROPOUT_S)
        link.insert()
    log.info("card %s reloaded as %s", persona.id, persona.profile)
