"""`facehil card read|readers` against two software cards served through the private pcscd."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from card_process import EVENT_TIMEOUT_S, CardProcess, pick_personas
from drivers.pcsc import PcscReader
from harness.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def deck(card_deck):
    return pick_personas(card_deck)


@pytest.fixture(scope="module")
def cards(pcscd, deck, tmp_path_factory):
    """The standard card in slot 0 and the face-auth card in slot 1, as `facehil sim up` has them."""
    state = tmp_path_factory.mktemp("state")
    readers = [PcscReader(name) for name in pcscd.reader_names]
    for r in readers:
        r.wait_for_removal(EVENT_TIMEOUT_S)
    procs = []
    try:
        for slot, persona in enumerate(deck):
            procs.append(CardProcess(persona, state / f"{persona.id}.json", pcscd.card_args(slot)))
        for r in readers:
            r.wait_for_insertion(EVENT_TIMEOUT_S)
        yield dict(zip(("standard", "face-auth"), zip(pcscd.reader_names, deck)))
    finally:
        for p in procs:
            p.stop()
        for r in readers:
            r.wait_for_removal(EVENT_TIMEOUT_S)


PIN_ENV, CHECK_A_ENV, CHECK_B_ENV = "FACEHIL_CARD_PIN", "FACEHIL_CARD_CHECK_A", "FACEHIL_CARD_CHECK_B"


def _json(args: list[str], code: int = 0, env: dict | None = None) -> list[dict]:
    result = runner.invoke(app, ["card", "read", "--json", *args], env=env)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def _values(obj) -> list[str]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _values(x)] + [str(k) for k in obj]
    if isinstance(obj, list):
        return [v for x in obj for v in _values(x)]
    return [str(obj)]


def test_no_card_anywhere(pcscd):
    # first in this file: the module's cards are not inserted yet
    for name in pcscd.reader_names:
        PcscReader(name).wait_for_removal(EVENT_TIMEOUT_S)
    result = runner.invoke(app, ["card", "read"])
    assert result.exit_code == 1 and "no card in any reader" in result.output
    named = runner.invoke(app, ["card", "read", "--json", "--reader", pcscd.reader_names[0]])
    assert named.exit_code == 1
    assert "NoCard" in json.loads(named.stdout)[0]["error"]


def test_reads_both_cards_without_credentials(cards):
    reports = _json([])
    assert [r["reader"] for r in reports] == [cards["standard"][0], cards["face-auth"][0]]
    std, fa = reports
    assert std["profile"]["name"] == "standard" and fa["profile"]["name"] == "face-auth"
    for r in reports:
        assert r["jpki"]["token_name"] == "JPKIAPICCTOKEN2"
        assert r["jpki"]["auth_chain"]["ok"] is True
        assert r["jpki"]["auth_certificate"]["key_bits"] == 2048
        assert r["atr"].startswith("3B") and r["apdus"] > 10
    assert std["tries_left"]["jpki_auth_pin"] == 3 and std["tries_left"]["surface_check_b"] == 10
    assert fa["tries_left"]["jpki_auth_pin"] == 0  # no PIN on a face-auth card
    assert "absent" in fa["jpki"]["sign_certificate"]
    # nothing personal without a credential, but what each credential would open
    persona = cards["standard"][1]
    assert persona.my_number not in json.dumps(reports) and "card_face" not in json.dumps(reports)
    assert "face photo" in std["opens"]["check_b"]


def test_reader_all_and_by_part_of_the_name(cards):
    assert len(_json(["--reader", "all"])) == 2
    # a PIN belongs to one card: never presented to every card in sight
    persona = cards["standard"][1]
    result = runner.invoke(app, ["card", "read", "--reader", "all", "--check-b"],
                           env={CHECK_B_ENV: persona.check_code_b})
    assert result.exit_code == 1 and "--reader" in result.output
    assert _json(["--reader", "all"])[1]["tries_left"]["surface_check_b"] == 10
    only = _json(["--reader", "PCD 00 01"])
    assert [r["reader"] for r in only] == [cards["face-auth"][0]]


def test_pin_and_check_b_open_the_card_and_are_never_echoed(cards):
    reader, persona = cards["standard"]
    result = runner.invoke(app, ["card", "read", "--json", "--reader", reader, "--pin", "--check-b"],
                           env={PIN_ENV: persona.pin, CHECK_B_ENV: persona.check_code_b})
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["with_pin"]["my_number"] == persona.my_number
    assert report["with_pin"]["basic_four"]["name"] == persona.name
    assert report["with_pin"]["user_auth_signature"].startswith("verifies")
    photo = report["with_check_b"]["card_face"]["photo"]
    assert photo["format"] == "JPEG 2000 (JP2)" and photo["colour"] == "greyscale"
    assert photo["description"].startswith("JPEG 2000 (JP2), ") and "KB" in photo["description"]
    assert photo["size_bytes"] > 1000 and "photo_bytes" not in report
    values = _values(report)
    assert persona.pin not in values and persona.check_code_b not in values
    assert persona.check_code_b not in result.output


def test_human_output_describes_the_photo(cards):
    reader, persona = cards["standard"]
    result = runner.invoke(app, ["card", "read", "--reader", reader, "--check-b"], input=persona.check_code_b + "\n")
    assert result.exit_code == 0, result.output
    assert "JPEG 2000 (JP2)" in result.output and "greyscale" in result.output
    assert "standard" in result.output and persona.check_code_b not in result.output


def test_check_a_opens_my_number_and_card_face(cards):
    reader, persona = cards["face-auth"]
    (report,) = _json(["--reader", reader, "--check-a"], env={CHECK_A_ENV: persona.check_code_a})
    assert report["with_check_a"]["my_number"] == persona.my_number
    assert report["with_check_a"]["card_face"]["photo"]["format"].startswith("JPEG 2000")


def test_terminal_authorization_on_the_face_auth_card(cards):
    reader, persona = cards["face-auth"]
    (report,) = _json(["--reader", reader, "--terminal", str(persona.pki_dir)])
    assert report["with_terminal"]["user_auth_signature"].startswith("verifies")


def test_wrong_pin_is_reported_and_the_last_try_is_kept(cards):
    reader, persona = cards["standard"]
    wrong = "0000" if persona.pin != "0000" else "1111"
    first = _json(["--reader", reader, "--pin"], code=2, env={PIN_ENV: wrong})[0]
    assert first["refused"] == ["pin"] and "2 tries left" in first["with_pin"]["text_assist"]
    assert "not tried" in first["with_pin"]["jpki"]  # one wrong PIN spends one counter, not two
    second = _json(["--reader", reader, "--pin"], code=2, env={PIN_ENV: wrong})[0]
    assert "1 tries left" in second["with_pin"]["text_assist"]
    third = _json(["--reader", reader, "--pin"], env={PIN_ENV: persona.pin})[0]
    assert third["tries_left"]["text_pin"] == 1
    assert "not tried" in third["with_pin"]["text_assist"] and "my_number" not in third["with_pin"]
    fourth = _json(["--reader", reader, "--pin", "--allow-last-try"], env={PIN_ENV: persona.pin})[0]
    assert fourth["with_pin"]["my_number"] == persona.my_number
    assert _json(["--reader", reader])[0]["tries_left"]["text_pin"] == 3  # the good PIN reset it


def test_unknown_reader(pcscd, cards):
    result = runner.invoke(app, ["card", "read", "--reader", "No Such Reader"])
    assert result.exit_code == 1 and "No Such Reader" in result.output


def test_readers_command(cards):
    result = runner.invoke(app, ["card", "readers", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [{"reader": cards["standard"][0], "card": True},
                                         {"reader": cards["face-auth"][0], "card": True}]


def test_the_installed_command_in_a_subprocess(pcscd, cards):
    env = dict(os.environ)
    env.update(pcscd.client_env())
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "card", "read", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [r["profile"]["name"] for r in json.loads(proc.stdout)] == ["standard", "face-auth"]


def test_a_pin_on_the_command_line_is_refused_unseen_and_spends_nothing(cards):
    """argv is visible in ps and the shell history: a value after --pin is refused, not echoed, not tried."""
    reader, persona = cards["standard"]
    wrong = "0000" if persona.pin != "0000" else "1111"
    result = runner.invoke(app, ["card", "read", "--json", "--reader", reader, "--pin", wrong])
    assert result.exit_code == 1 and "never given on the command line" in result.output
    assert wrong not in result.output
    assert _json(["--reader", reader])[0]["tries_left"]["text_pin"] == 3


def test_pin_from_the_hidden_prompt(cards):
    reader, persona = cards["standard"]
    result = runner.invoke(app, ["card", "read", "--json", "--reader", reader, "--pin"], input=persona.pin + "\n",
                           env={PIN_ENV: ""})
    assert result.exit_code == 0, result.output
    assert persona.pin not in result.output  # the prompt hides the input
    report = json.loads(result.stdout[result.stdout.index("["):])[0]
    assert report["with_pin"]["my_number"] == persona.my_number


def test_pin_from_the_environment_in_a_subprocess_never_in_argv(pcscd, cards):
    """The installed command takes the PIN from FACEHIL_CARD_PIN; the process's argv never holds it."""
    import time

    reader, persona = cards["standard"]
    env = dict(os.environ)
    env.update(pcscd.client_env())
    env[PIN_ENV] = persona.pin
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "card", "read", "--json", "--reader", reader,
                             "--pin"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cmdlines = []
    while proc.poll() is None:  # what ps shows while it runs
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
                cmdlines.append(fh.read().decode(errors="replace"))
        except OSError:
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert cmdlines and all(persona.pin not in c.replace(reader, "") for c in cmdlines)
    (report,) = json.loads(out)
    assert report["with_pin"]["my_number"] == persona.my_number
    assert persona.pin not in err
