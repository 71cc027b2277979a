"""N4 and N3: a card switched between standard and face-auth in place (sim/card/switch.py and
`facehil sim card switch`): the same card and certificate, a new profile, the registration kept,
the PIN working again after a switch back, and the amendment field drawn in Japanese."""

from __future__ import annotations

import base64
import io
import shutil
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from PIL import Image
from typer.testing import CliRunner

# imported before pytester snapshots sys.modules: a re-import would declare the records tables twice
from harness.cli import app

from card_process import CardProcess
from sim.card.issue import load_material
from sim.card.persona import FACE_AUTH_AMENDMENT, Persona
from sim.card.switch import SwitchError, switch_profile

EVENT_TIMEOUT_S = 10.0


@pytest.fixture
def deck(card_deck, tmp_path):
    """A private copy of the session's deck: switching changes it."""
    out = tmp_path / "deck"
    shutil.copytree(card_deck, out)
    return out


def _persona(deck, pid: str) -> Persona:
    return Persona.load(deck / "personas" / f"{pid}.toml")


def _ink(png: bytes, box) -> np.ndarray:
    """Dark pixels of the amendment field, right of its label."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    x0, y0, x1, y1 = box
    return img[y0 + 2:y1 - 1, x0 + 100:x1 - 1] < 100


def test_switch_keeps_the_card_and_changes_the_profile(deck):
    from sim.card.images import AMENDMENT_BOX_PX
    from sim.card.pki import ensure_pki
    from sim.eligibility.service import EligibilityService

    p = _persona(deck, "p001")  # standard, registered
    assert p.profile == "standard" and p.amendments == []
    auth_pem = (p.card_dir / "auth.pem").read_bytes()
    sign_serial = load_material(p).sign_cert.serial_number
    service = EligibilityService(p.pki_dir, f"sqlite:///{deck / 'eligibility.sqlite'}")
    cert_b64 = base64.b64encode(load_material(p).auth_cert.public_bytes(Encoding.DER)).decode()
    service.seed_registration(base64.b64decode(cert_b64))
    assert service.status({"certificate": cert_b64})["registered"]
    standard_face = (p.card_dir / "card-face.png").read_bytes()

    result = switch_profile(p.source, "face-auth")
    q = _persona(deck, "p001")
    assert q.profile == "face-auth" and q.pin is None and q.signing_password is None
    assert (q.my_number, q.name, q.birth_date) == (p.my_number, p.name, p.birth_date)
    assert [(a.text, a.struck) for a in q.amendments] == [(FACE_AUTH_AMENDMENT, False)]
    assert not (q.card_dir / "sign.pem").exists() and sign_serial in ensure_pki(q.pki_dir).revoked_serials()
    material = load_material(q)  # must not re-issue: the certificate (and its serial) is the card's own
    assert (q.card_dir / "auth.pem").read_bytes() == auth_pem and material.sign_cert is None
    assert result.auth_serial == f"{material.auth_cert.serial_number:X}"
    status = service.status({"certificate": cert_b64})
    assert status["registered"] and status["cert_status"] == "valid", status  # N4: registration stays valid
    face_auth_face = (q.card_dir / "card-face.png").read_bytes()

    back = switch_profile(q.source, "standard", pin="4321")
    r = _persona(deck, "p001")
    assert r.profile == "standard" and r.pin == "4321" and back.pin == "4321"
    assert [(a.text, a.struck) for a in r.amendments] == [(FACE_AUTH_AMENDMENT, True)]
    material = load_material(r)
    assert (r.card_dir / "auth.pem").read_bytes() == auth_pem and material.sign_cert is not None
    assert material.sign_cert.serial_number != sign_serial  # a new signing certificate
    assert service.status({"certificate": cert_b64})["registered"]

    # N3 on the printed face: nothing in the amendment field of the standard card, 「顔認証」 on the
    # face-auth card, the same word crossed out by two long lines after the switch back
    blank, written, struck = (_ink(png, AMENDMENT_BOX_PX) for png in
                              (standard_face, face_auth_face, (r.card_dir / "card-face.png").read_bytes()))
    assert not blank.any() and written.sum() > 200
    cols = np.flatnonzero(written.any(axis=0))
    text_width_px = cols[-1] - cols[0] + 1
    assert (written.sum(axis=1) >= text_width_px).sum() == 0  # no glyph row spans the whole word
    full_rows = struck[:, cols[0]:cols[-1] + 1].all(axis=1)
    assert full_rows.sum() >= 2, "no strike-through lines across 顔認証"
    assert (struck & ~written).sum() > 2 * text_width_px  # the lines are new ink over the same word


def test_bad_switches_are_refused_and_change_nothing(deck):
    p = _persona(deck, "p001")
    before = p.source.read_bytes()
    with pytest.raises(SwitchError, match="already a standard card"):
        switch_profile(p.source, "standard")
    with pytest.raises(SwitchError, match="must be one of"):
        switch_profile(p.source, "faceauth")
    switch_profile(p.source, "face-auth")
    mid = p.source.read_bytes()
    with pytest.raises(SwitchError, match="key 'pin' must be 4 digits"):
        switch_profile(p.source, "standard", pin="12")
    assert p.source.read_bytes() == mid != before
    with pytest.raises(SwitchError, match="no PIN or signing password"):
        switch_profile(_persona(deck, "p003").source, "face-auth", pin="1234")


def _station_file(state_dir, persona, control) -> None:
    (state_dir / "station.toml").write_text(
        f'[station]\nname = "switch-test"\n\n[[cards]]\nid = "{persona.id}"\npersona = "{persona.source}"\n'
        f'control = "{control}"\n', encoding="utf-8")


def _wait_powered(control) -> None:
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while control.status().get("powered") != "1":
        assert time.monotonic() < deadline, "pcscd did not power the card again"
        time.sleep(0.05)


def test_cli_switch_serves_the_new_profile_and_the_pin_works_again(pcscd, deck, tmp_path):
    """Through pcscd: PIN tries spent, switched to face-auth (no PIN), switched back: a new PIN, full
    tries, the same user-auth certificate."""
    from drivers.mynumber import MyNumberCard, WrongPin
    from drivers.pcsc import PcscReader

    persona = _persona(deck, "p003")
    reader = PcscReader(pcscd.reader_names[0])
    reader.wait_for_removal(EVENT_TIMEOUT_S)
    card = CardProcess(persona, tmp_path / "p003.state.json", pcscd.card_args(0))
    state_dir = tmp_path / "station"
    state_dir.mkdir()
    _station_file(state_dir, persona, f"{card.control.host}:{card.control.port}")
    runner = CliRunner()
    try:
        reader.wait_for_insertion(EVENT_TIMEOUT_S)
        with reader.connect() as conn:
            c = MyNumberCard(conn)
            auth_der = c.certificate_der("auth")
            with pytest.raises(WrongPin):
                c.verify("jpki_auth_pin", "0000" if persona.pin != "0000" else "1111")
            assert c.tries_left("jpki_auth_pin") == 2

        out = runner.invoke(app, ["sim", "card", "switch", "p003", "--to", "face-auth", "--state-dir", str(state_dir)])
        assert out.exit_code == 0, out.output
        assert "standard -> face-auth" in out.output and persona.pin not in out.output
        assert card.control.status()["profile"] == "face-auth"
        _wait_powered(card.control)
        with reader.connect() as conn:
            c = MyNumberCard(conn)
            assert c.detect_profile().name == "face-auth"
            assert c.certificate_der("auth") == auth_der

        on_argv = runner.invoke(app, ["sim", "card", "switch", "p003", "--to", "standard", "--pin", "2468",
                                      "--state-dir", str(state_dir)])
        assert on_argv.exit_code == 2 and card.control.status()["profile"] == "face-auth"  # a PIN on argv: refused
        out = runner.invoke(app, ["sim", "card", "switch", "p003", "--to", "standard", "--pin",
                                  "--state-dir", str(state_dir)], env={"FACEHIL_CARD_PIN": "2468"})
        assert out.exit_code == 0, out.output
        assert "2468" not in out.output  # the PIN is the holder's: in the persona file, not on the screen
        _wait_powered(card.control)
        with reader.connect() as conn:
            c = MyNumberCard(conn)
            assert c.detect_profile().name == "standard"
            assert c.tries_left("jpki_auth_pin") == 3  # set anew at the municipality
            assert c.certificate_der("auth") == auth_der
            c.verify("jpki_auth_pin", "2468")  # the PIN works again
            with pytest.raises(WrongPin):
                c.verify("jpki_auth_pin", persona.pin if persona.pin != "2468" else "1357")  # the old one does not

        again = runner.invoke(app, ["sim", "card", "switch", "p003", "--to", "standard", "--state-dir", str(state_dir)])
        assert again.exit_code == 1 and "already a standard card" in again.output
        unknown = runner.invoke(app, ["sim", "card", "switch", "p999", "--to", "standard", "--state-dir", str(state_dir)],
                                env={"COLUMNS": "250"})
        assert unknown.exit_code == 2 and "has no card 'p999' (cards: p003)" in unknown.output
    finally:
        card.stop()
        reader.wait_for_removal(EVENT_TIMEOUT_S)
