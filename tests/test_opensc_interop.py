"""Real middleware against our card: OpenSC's jpki driver through pcscd.

The OpenSC tools run as separate processes; they reach the private pcscd through
PCSCLITE_CSOCK_NAME. Each runs with OpenSC's full driver probing (no OPENSC_DRIVER: every
other driver's probe must be answered so that none claims the card) and with
OPENSC_DRIVER=jpki (probes skipped).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from sim.card.persona import Persona

from card_process import CardProcess

PKCS11_MODULES = [Path("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"), Path("/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so"),
                  Path("/usr/lib/opensc-pkcs11.so"), Path("/usr/lib64/opensc-pkcs11.so")]
AUTH_TOKEN = "JPKI (User Authentication PIN)"

pytestmark = pytest.mark.skipif(shutil.which("pkcs15-tool") is None or shutil.which("pkcs11-tool") is None,
                                reason="OpenSC is not installed (apt-get install opensc)")


def pkcs11_module() -> Path:
    for path in PKCS11_MODULES:
        if path.exists():
            return path
    pytest.skip("OpenSC's PKCS#11 module opensc-pkcs11.so is not installed (apt-get install opensc)")


def opensc(pcscd, argv: list[str], driver: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **pcscd.client_env())
    env.pop("OPENSC_DRIVER", None)
    if driver:
        env["OPENSC_DRIVER"] = driver
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def wait_listed(pcscd, reader_index: int) -> None:
    """pcscd sees an inserted card within a poll (~400 ms); wait until OpenSC can use it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = opensc(pcscd, ["opensc-tool", "--reader", str(reader_index), "--atr"], "jpki")
        if r.returncode == 0 and "3b:e0:00:ff:81:31:fe:45:14" in r.stdout.lower():
            return
        time.sleep(0.2)
    pytest.fail(f"OpenSC never saw the card in reader {reader_index}")


@pytest.fixture(scope="module")
def standard_card(pcscd, card_deck, tmp_path_factory):
    persona = Persona.load(card_deck / "personas" / "p001.toml")
    card = CardProcess(persona, tmp_path_factory.mktemp("opensc") / "p001.json", pcscd.card_args(0))
    try:
        wait_listed(pcscd, 0)
        yield persona
    finally:
        card.stop()


@pytest.fixture(scope="module")
def face_auth_card(pcscd, card_deck, tmp_path_factory):
    persona = Persona.load(card_deck / "personas" / "p002.toml")
    card = CardProcess(persona, tmp_path_factory.mktemp("opensc") / "p002.json", pcscd.card_args(1))
    try:
        wait_listed(pcscd, 1)
        yield persona
    finally:
        card.stop()


def auth_slot(pcscd, reader_index: int) -> str:
    """The PKCS#11 slot id of the user-auth token of the card in this reader."""
    r = opensc(pcscd, ["pkcs11-tool", "--module", str(pkcs11_module()), "--list-slots"], "jpki")
    reader = pcscd.reader_names[reader_index]
    for block in r.stdout.split("Slot ")[1:]:
        head = block.splitlines()[0]  # "0 (0x0): Virtual PCD 00 00"
        if head.endswith(reader) and f"token label        : {AUTH_TOKEN}" in block:
            return head.split("(", 1)[1].split(")", 1)[0]
    pytest.fail(f"no '{AUTH_TOKEN}' token in {reader}:\n{r.stdout}")


def auth_cert(persona: Persona) -> x509.Certificate:
    return x509.load_pem_x509_certificate((persona.card_dir / "auth.pem").read_bytes())


def serial_hex(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:X}"


@pytest.mark.parametrize("driver", [None, "jpki"], ids=["all-drivers", "jpki-only"])
def test_pkcs15_tool_lists_the_user_auth_certificate(pcscd, standard_card, driver):
    r = opensc(pcscd, ["pkcs15-tool", "--reader", "0", "--list-certificates"], driver)
    assert r.returncode == 0, r.stderr
    assert "User Authentication Certificate" in r.stdout
    assert serial_hex(auth_cert(standard_card)) in r.stdout.replace(" ", "").upper()


@pytest.mark.parametrize("driver", [None, "jpki"], ids=["all-drivers", "jpki-only"])
def test_pkcs11_tool_signs_with_the_user_auth_key_after_the_pin(pcscd, standard_card, driver, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"facehil interop " + os.urandom(16))
    sig = tmp_path / "sig.bin"
    r = opensc(pcscd, ["pkcs11-tool", "--module", str(pkcs11_module()), "--slot", auth_slot(pcscd, 0), "--login",
                       "--pin", standard_card.pin, "--sign", "--mechanism", "SHA256-RSA-PKCS", "--id", "01",
                       "--input-file", str(data), "--output-file", str(sig)], driver)
    assert r.returncode == 0, r.stderr
    auth_cert(standard_card).public_key().verify(sig.read_bytes(), data.read_bytes(), padding.PKCS1v15(),
                                                 hashes.SHA256())


def test_face_auth_card_lists_its_certificate_but_cannot_sign_with_a_pin(pcscd, face_auth_card, tmp_path):
    r = opensc(pcscd, ["pkcs15-tool", "--reader", "1", "--list-certificates"], None)
    assert r.returncode == 0, r.stderr
    assert serial_hex(auth_cert(face_auth_card)) in r.stdout.replace(" ", "").upper()
    slot = auth_slot(pcscd, 1)
    slots = opensc(pcscd, ["pkcs11-tool", "--module", str(pkcs11_module()), "--list-slots"], "jpki")
    block = next(b for b in slots.stdout.split("Slot ") if b.split(":", 1)[0].endswith(f"({slot})"))
    assert "user PIN locked" in block
    data = tmp_path / "data.bin"
    data.write_bytes(b"x")
    r = opensc(pcscd, ["pkcs11-tool", "--module", str(pkcs11_module()), "--slot", slot, "--login",
                       "--pin", "1234", "--sign", "--mechanism", "SHA256-RSA-PKCS", "--id", "01",
                       "--input-file", str(data), "--output-file", str(tmp_path / "sig.bin")], "jpki")
    assert r.returncode != 0
    # The card answers 6984 (no PIN set); OpenSC reports it as a failed C_Login.
    assert "C_Login failed" in r.stderr, r.stderr
