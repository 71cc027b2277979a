"""Fuzzing the card OS with structure-aware APDUs, checking its security invariants (tests/card_fuzz.py).

In process: at least 100,000 APDUs per run over many card lifetimes (both profiles; resets,
power cycles, restarts from the state file, REISSUE). Through the real pcscd: at least 2,000
APDUs to a card process, the invariants judged from the status words alone. The seed is fixed
so a failure repeats; FACEHIL_FUZZ_SEED explores others.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from card_fuzz import ApduFuzzer, CardModel, InvariantBroken, Sent, encode
from drivers.mynumber import TerminalCredential
from sim.card.cardos import CardOS
from sim.card.filesystem import SecretEF
from sim.card.issue import load_material
from sim.card.layout import build_card
from sim.card.persona import COUNTERS, Persona
from sim.card.pki import der

SEED = int(os.environ.get("FACEHIL_FUZZ_SEED", "20261129"))
IN_PROCESS_APDUS = 100_000
LIFETIME_APDUS = 500  # commands between two fresh cards
PCSCD_APDUS = 2_000


@pytest.fixture(scope="module")
def decks(card_deck):
    out = []
    for pid in ("p001", "p002"):  # standard, face-auth
        p = Persona.load(card_deck / "personas" / f"{pid}.toml")
        out.append((p, load_material(p), TerminalCredential.load(p.pki_dir / "terminal.pem",
                                                                 p.pki_dir / "terminal.key")))
    return out


def _probe_blocked(transmit, apps, model: CardModel) -> int:
    """Every counter the model has blocked refuses its right secret with the blocked SW.

    The probe's commands go through the model too, so it keeps following the card's session."""
    checked = 0
    efs = {ef.counter: (app.aid, ef) for app in apps for ef in app.files.values() if isinstance(ef, SecretEF)}
    for name, (aid, ef) in efs.items():
        if model.counters[name] != 0 or ef.value is None:
            continue
        secret = ef.value.encode()
        for sent in (Sent("select_aid", encode(0, 0xA4, 4, 0x0C, aid), aid),
                     Sent("select_ef", encode(0, 0xA4, 2, 0x0C, ef.fid.to_bytes(2, "big")), ef.fid),
                     Sent("verify", encode(0, 0x20, 0, 0x80, secret), secret=secret)):
            resp = transmit(sent.apdu)
            model.observe(sent, resp)
        if int.from_bytes(resp[-2:], "big") != model.blocked_sw:
            raise InvariantBroken(f"blocked {name} answered {resp[-2:].hex()} to its right secret")
        checked += 1
    return checked


def _block(transmit, apps, model: CardModel, counter: str) -> None:
    """Wrong secrets on ``counter`` until the model has it blocked (each one judged by the model)."""
    aid, ef = next((app.aid, ef) for app in apps for ef in app.files.values()
                   if isinstance(ef, SecretEF) and ef.counter == counter)
    for sent in (Sent("select_aid", encode(0, 0xA4, 4, 0x0C, aid), aid),
                 Sent("select_ef", encode(0, 0xA4, 2, 0x0C, ef.fid.to_bytes(2, "big")), ef.fid)):
        model.observe(sent, transmit(sent.apdu))
    wrong = ("0000" if ef.value != "0000" else "1111").encode()
    while model.counters[counter]:
        sent = Sent("verify", encode(0, 0x20, 0, 0x80, wrong), secret=wrong)
        model.observe(sent, transmit(sent.apdu))


def _context(seed: int, life: int, i: int, history: list[tuple[bytes, bytes]]) -> str:
    tail = "\n".join(f"  > {a.hex().upper()[:80]}  < {r[-2:].hex().upper()} ({len(r) - 2} bytes)"
                     for a, r in history[-15:])
    return f"seed {seed} lifetime {life} APDU {i}; last commands:\n{tail}"


def test_fuzz_card_os_in_process_keeps_its_security_invariants(decks, tmp_path, record_property):
    """>= 100,000 APDUs; no protected data, signature or counter increase without its credential."""
    rng = random.Random(SEED)
    total = blocked_probes = restarts = reissues = 0
    stats: dict[str, int] = {}
    started = time.monotonic()
    life = 0
    while total < IN_PROCESS_APDUS:
        persona, material, terminal = decks[life % 2]
        state_path = tmp_path / f"life{life}.json" if life % 10 == 0 else None  # some lifetimes on disk
        card = build_card(persona, state_path, material)
        model = CardModel(card.apps, persona.start_tries(), dict(COUNTERS), persona.blocked_sw)
        # Each lifetime has a temperament: careless ones block counters, careful ones open files.
        fuzzer = ApduFuzzer(rng, card.apps, terminal, der(material.auth_cert), p_right=rng.choice((0.03, 0.3, 0.6)))
        history: list[tuple[bytes, bytes]] = []
        card.power_on()
        for i in range(LIFETIME_APDUS):
            x = rng.random()
            if x < 0.01:
                card.reset()
                model.lose_session()
            elif x < 0.013:
                card.power_off()
                card.power_on()
                model.lose_session()
            elif x < 0.016:  # the card process restarts: counters come back from the state
                card = (build_card(persona, state_path, material) if state_path else
                        CardOS(card.apps, card.state, card.config, terminal_ca=card.terminal_ca,
                               auth_cert_der=card.auth_cert_der))
                card.power_on()
                model.lose_session()
                restarts += 1
            elif x < 0.0165:
                card.state.reissue()
                model.reissue()
                reissues += 1
            sent = fuzzer.next(model)
            before = dict(card.state.tries)
            resp = card.process(sent.apdu)
            history.append((sent.apdu, resp))
            try:
                model.observe(sent, resp, before, card.state.tries)
            except InvariantBroken as exc:
                raise InvariantBroken(f"{exc}\n{_context(SEED, life, i, history)}") from None
            total += 1
        try:
            blocked_probes += _probe_blocked(card.process, card.apps, model)
        except InvariantBroken as exc:
            raise InvariantBroken(f"{exc}\n{_context(SEED, life, LIFETIME_APDUS, history)}") from None
        for k, v in model.stats.items():
            stats[k] = stats.get(k, 0) + v
        life += 1
    elapsed_s = time.monotonic() - started
    record_property("apdus_in_process", total)
    print(f"\ncard OS fuzz: {total} APDUs in process, {life} card lifetimes, {elapsed_s:.1f} s, "
          f"{restarts} restarts, {reissues} re-issues, {blocked_probes} blocked counters probed, "
          f"{stats.get('protected_reads', 0)} protected reads, {stats.get('signatures', 0)} signatures, "
          f"{stats.get('terminal_grants', 0)} terminal authorizations")
    assert total >= IN_PROCESS_APDUS
    # The fuzzer reached the states the invariants are about (else they held vacuously).
    assert stats.get("protected_reads", 0) > 1000
    assert blocked_probes > 100
    assert stats.get("signatures", 0) > 20 and stats.get("terminal_grants", 0) > 5
    assert stats.get("verify:9000", 0) > 1000 and sum(v for k, v in stats.items() if k.startswith("verify:63C")) > 5000


def test_the_model_catches_a_card_that_leaks(decks):
    """The invariants are not vacuous: a card that skips its read check is caught within a few commands."""
    persona, material, terminal = decks[0]
    card = build_card(persona, None, material)
    card._allowed = lambda credentials: True  # the fault: every file is free to read
    model = CardModel(card.apps, persona.start_tries(), dict(COUNTERS), persona.blocked_sw)
    fuzzer = ApduFuzzer(random.Random(SEED), card.apps, terminal, der(material.auth_cert))
    with pytest.raises(InvariantBroken, match="read without|left the card"):
        for _ in range(5000):
            sent = fuzzer.next(model)
            before = dict(card.state.tries)
            model.observe(sent, card.process(sent.apdu), before, card.state.tries)


def test_the_model_catches_a_counter_that_unblocks(decks):
    persona, material, terminal = decks[0]
    card = build_card(persona, None, material)
    real_set = card.state.set

    def forgiving_set(name: str, value: int) -> None:  # the fault: a blocked counter comes back
        real_set(name, 1 if value == 0 else value)

    card.state.set = forgiving_set
    model = CardModel(card.apps, persona.start_tries(), dict(COUNTERS), persona.blocked_sw)
    fuzzer = ApduFuzzer(random.Random(SEED), card.apps, terminal, der(material.auth_cert))
    with pytest.raises(InvariantBroken, match="tries|blocked"):
        for _ in range(5000):
            sent = fuzzer.next(model)
            before = dict(card.state.tries)
            model.observe(sent, card.process(sent.apdu), before, card.state.tries)


def test_fuzz_through_pcscd(pcscd, decks, tmp_path, record_property):
    """>= 2,000 fuzzed APDUs through the real pcscd and vpcd; invariants judged from status words."""
    import json

    from card_process import EVENT_TIMEOUT_S, CardProcess
    from drivers.pcsc import PcscError, PcscReader

    persona, material, terminal = decks[0]
    reader = PcscReader(pcscd.reader_names[0])
    reader.wait_for_removal(EVENT_TIMEOUT_S)
    state = tmp_path / "card.json"
    proc = CardProcess(persona, state, pcscd.card_args(0))
    rng = random.Random(SEED + 1)
    local = build_card(persona, None, material)  # the same layout: the fuzzer's and the model's view
    model = CardModel(local.apps, persona.start_tries(), dict(COUNTERS), persona.blocked_sw)
    fuzzer = ApduFuzzer(rng, local.apps, terminal, der(material.auth_cert))
    sent_count = refused_by_pcscd = 0
    history: list[tuple[bytes, bytes]] = []
    started = time.monotonic()
    try:
        reader.wait_for_insertion(EVENT_TIMEOUT_S)
        conn = reader.connect()
        try:
            blocked_probes = blocked_after_restart = 0
            restarted = False
            while sent_count < PCSCD_APDUS:
                if sent_count % 250 == 0:  # careless and careful spells: counters block, files open
                    if sent_count:
                        blocked_probes += _probe_blocked(conn.transmit_raw, local.apps, model)
                    if sent_count == PCSCD_APDUS // 2 and not restarted:
                        # the card process restarts with the user-auth PIN blocked: it stays blocked
                        _block(conn.transmit_raw, local.apps, model, "user_auth_pin")
                        conn.close()
                        proc.stop()
                        reader.wait_for_removal(EVENT_TIMEOUT_S)
                        proc = CardProcess(persona, state, pcscd.card_args(0))
                        reader.wait_for_insertion(EVENT_TIMEOUT_S)
                        conn = reader.connect()
                        model.lose_session()
                        restarted = True
                        blocked_after_restart = _probe_blocked(conn.transmit_raw, local.apps, model)
                        blocked_probes += blocked_after_restart
                    fuzzer.p_right = (0.6, 0.02)[sent_count // 250 % 2]
                if rng.random() < 0.002:
                    proc.control.reissue()
                    model.reissue()
                sent = fuzzer.next(model)
                if len(sent.apdu) < 4:  # pcscd refuses these itself; the card never sees them
                    continue
                try:
                    resp = conn.transmit_raw(sent.apdu)
                except PcscError:
                    refused_by_pcscd += 1
                    conn.close()
                    conn = reader.connect()  # a new connection: the card was reset
                    model.lose_session()
                    continue
                history.append((sent.apdu, resp))
                try:
                    model.observe(sent, resp)
                except InvariantBroken as exc:
                    raise InvariantBroken(f"{exc}\n{_context(SEED + 1, 0, sent_count, history)}") from None
                sent_count += 1
            blocked_probes += _probe_blocked(conn.transmit_raw, local.apps, model)
        finally:
            conn.close()
    finally:
        proc.stop()
        reader.wait_for_removal(EVENT_TIMEOUT_S)
    elapsed_s = time.monotonic() - started
    # What the card process wrote is what the model followed from the status words.
    stored = json.loads(state.read_text())["tries"]
    assert {k: stored[k] for k in model.counters} == model.counters
    record_property("apdus_through_pcscd", sent_count)
    print(f"\ncard OS fuzz through pcscd: {sent_count} APDUs in {elapsed_s:.1f} s "
          f"({refused_by_pcscd} refused by pcscd), {blocked_probes} blocked counters probed, "
          f"{model.stats.get('protected_reads', 0)} protected reads, {blocked_after_restart} still blocked "
          "after a restart of the card process")
    assert sent_count >= PCSCD_APDUS and refused_by_pcscd < sent_count // 20
    assert restarted and blocked_after_restart >= 1
    assert blocked_probes >= 1 and model.stats.get("protected_reads", 0) >= 20
