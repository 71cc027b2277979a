"""drivers.mynumber over the real software card: in-process over CardOS (fast, table-driven),
and once end to end through pcscd with the card as its own process."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from card_process import EVENT_TIMEOUT_S, CardProcess, pick_personas
from drivers import tlv
from drivers.apdu import LocalTransport, build_apdu
from drivers.imageinfo import image_info
from drivers.mynumber import (EF_AUTH_KEY, EF_BASIC_FOUR, Blocked, CardStatusError,
                              ConditionsNotSatisfied, FileNotFound, MyNumberCard, NotSupported, SecurityNotSatisfied,
                              TerminalCredential, WrongLength, WrongParameters, WrongPin, digest_info, status_error,
                              verify_chain, verify_signature)
from sim.card.layout import build_card


@pytest.fixture(scope="module")
def deck(card_deck):
    return pick_personas(card_deck)


@pytest.fixture(scope="module")
def standard(deck):
    return deck[0]


@pytest.fixture(scope="module")
def face_auth(deck):
    return deck[1]


def _card(persona, **kw) -> MyNumberCard:
    """A fresh card (counters in memory) behind an in-process transport."""
    return MyNumberCard(LocalTransport(build_card(persona).process), **kw)


@pytest.fixture
def std_card(standard):
    return _card(standard)


@pytest.fixture
def fa_card(face_auth):
    return _card(face_auth)


@pytest.fixture(scope="module")
def terminal(standard):
    pki = standard.pki_dir
    return TerminalCredential.load(pki / "terminal.pem", pki / "terminal.key")


def _other_ca_terminal() -> TerminalCredential:
    """A terminal credential from a CA the card does not trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue terminal")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return TerminalCredential(cert, key, 1)


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("data, expected", [
    (bytes.fromhex("FF20 06 DF21 01 AA DF22 00"), [(0xFF20, 6)]),
    (bytes.fromhex("30 82 0100") + bytes(256), [(0x30, 256)]),
    (bytes.fromhex("DF27 81 80") + bytes(128) + bytes.fromhex("0000FFFF"), [(0xDF27, 128)]),  # 00 padding
    (bytes.fromhex("5F1F 01 01 9F7F 02 0102"), [(0x5F1F, 1), (0x9F7F, 2)]),
    (b"\xff" * 8, []),  # an empty fixed-size EF
])
def test_tlv_decode(data, expected):
    assert [(t.tag, len(t.value)) for t in tlv.decode(data)] == expected


@pytest.mark.parametrize("data", ["DF", "FF20", "DF21 05 0102", "DF21 83 01", "30 80 00", "1F FF FF FF FF 01 00"])
def test_tlv_rejects_malformed(data):
    with pytest.raises(tlv.TlvError):
        tlv.decode(bytes.fromhex(data))


def test_tlv_nested_record_and_total_size():
    record = tlv.encode(0xFF20, tlv.encode(0xDF22, "山田".encode()) + tlv.encode(0xDF27, bytes(300)))
    assert tlv.total_size(record[:8]) == len(record)
    outer = tlv.find(record, 0xFF20)
    assert outer.child(0xDF22).value.decode() == "山田"
    assert len(outer.child(0xDF27).value) == 300 and outer.child(0xDF99) is None
    assert tlv.total_size(bytes.fromhex("30820506")) == 4 + 0x0506


@pytest.mark.parametrize("sw, cls, tries", [
    (0x63C2, WrongPin, 2), (0x63C0, WrongPin, 0), (0x6983, Blocked, None), (0x6984, Blocked, None),
    (0x6982, SecurityNotSatisfied, None), (0x6985, ConditionsNotSatisfied, None), (0x6A82, FileNotFound, None),
    (0x6700, WrongLength, None), (0x6B00, WrongParameters, None), (0x6D00, NotSupported, None),
    (0x6F00, CardStatusError, None),
])
def test_status_words_become_named_errors(sw, cls, tries):
    err = status_error(sw, "x")
    assert type(err) is cls and err.sw == sw and f"{sw:04X}" in str(err)
    if tries is not None:
        assert err.tries_left == tries


def test_digest_info():
    di = digest_info(b"abc")
    assert len(di) == 19 + 32 and di.startswith(bytes.fromhex("3031300d0609608648016503040201"))
    with pytest.raises(ValueError):
        digest_info(b"abc", "md5")


# --------------------------------------------------------------------------- over CardOS in-process


@pytest.mark.parametrize("profile, name, has_pin, has_sign", [
    ("standard", "standard", True, True),
    ("face-auth", "face-auth", False, False),
])
def test_profile_detection(deck, profile, name, has_pin, has_sign):
    persona = deck[0] if profile == "standard" else deck[1]
    card = _card(persona)
    found = card.detect_profile()
    assert (found.name, found.has_auth_pin, found.has_sign_certificate) == (name, has_pin, has_sign)
    # detection spends nothing
    assert card.tries_left("jpki_auth_pin") == (3 if has_pin else 0)


def test_jpki_token_and_certificate_chain(std_card):
    assert std_card.token_name() == "JPKIAPICCTOKEN2"
    auth, ca = std_card.certificate("auth"), std_card.certificate("auth_ca")
    assert isinstance(auth.public_key(), rsa.RSAPublicKey) and auth.public_key().key_size == 2048
    assert auth.issuer == ca.subject
    assert std_card.verify_auth_chain().ok
    assert verify_chain(auth, ca).ok
    # the same certificate against a CA that did not issue it, and outside its validity
    rogue = _other_ca_terminal().certificate
    check = verify_chain(auth, rogue)
    assert not check.ok and any("not issued" in p for p in check.problems)
    late = verify_chain(auth, ca, at=auth.not_valid_after_utc + dt.timedelta(days=1))
    assert not late.ok and any("not valid" in p for p in late.problems)


def test_certificate_size_comes_from_its_header(std_card):
    der = std_card.certificate_der("auth")
    assert der[:2] == b"\x30\x82" and len(der) == 4 + int.from_bytes(der[2:4], "big")


def test_signing_certificate_needs_the_password(standard, std_card):
    with pytest.raises(SecurityNotSatisfied):
        std_card.certificate("sign")
    std_card.verify("jpki_sign_password", standard.signing_password)
    sign = std_card.read_sized(0x0001)  # same AP session, so the password still holds
    assert verify_chain(x509.load_der_x509_certificate(sign), std_card.certificate("sign_ca")).ok


def test_face_auth_card_has_no_signing_certificate(fa_card):
    with pytest.raises(FileNotFound) as info:
        fa_card.certificate("sign")
    assert info.value.sw == 0x6A82
    assert fa_card.verify_auth_chain().ok


def test_tries_left_query_spends_nothing_and_wrong_pins_count_down(standard, std_card):
    assert [std_card.tries_left("jpki_auth_pin") for _ in range(3)] == [3, 3, 3]
    wrong = "0000" if standard.pin != "0000" else "1111"
    for left in (2, 1, 0):
        with pytest.raises(WrongPin) as info:
            std_card.verify("jpki_auth_pin", wrong)
        assert info.value.tries_left == left and info.value.sw == 0x63C0 | left
        assert std_card.tries_left("jpki_auth_pin") == left
    with pytest.raises(Blocked) as info:
        std_card.verify("jpki_auth_pin", standard.pin)  # even the right PIN: blocked
    assert info.value.sw in (0x6983, 0x6984)
    assert std_card.tries_left("text_pin") == 3  # separate counter


def test_a_good_pin_resets_the_counter(standard, std_card):
    with pytest.raises(WrongPin):
        std_card.verify("text_pin", "0000" if standard.pin != "0000" else "1111")
    assert std_card.tries_left("text_pin") == 2
    std_card.verify("text_pin", standard.pin)
    assert std_card.tries_left("text_pin") == 3


MAX_TRIES = {"jpki_auth_pin": 3, "jpki_sign_password": 5, "text_check_b": 10}


@pytest.mark.parametrize("credential, secret", [("jpki_auth_pin", "12345"), ("jpki_auth_pin", "12a4"),
                                                ("jpki_sign_password", "abc"), ("text_check_b", "123")])
def test_badly_formed_secrets_are_not_sent(std_card, credential, secret):
    sent = len(std_card.transport.log)
    with pytest.raises(ValueError, match="not sent"):
        std_card.verify(credential, secret)
    assert len(std_card.transport.log) == sent
    assert std_card.tries_left(credential) == MAX_TRIES[credential]


# What each credential opens, as the notes give it: (reader, credential) -> works?
ACCESS = [
    ("my_number", "pin", True), ("my_number", "check_a", True), ("my_number", None, False),
    ("basic_four", "pin", True), ("basic_four", "check_b", True), ("basic_four", None, False),
    ("card_face", "check_b", True), ("card_face", "check_a", True), ("card_face", None, False),
]


@pytest.mark.parametrize("what, credential, opens", ACCESS)
def test_access_rules(standard, std_card, what, credential, opens):
    secret = {"pin": standard.pin, "check_a": standard.check_code_a, "check_b": standard.check_code_b}
    kwargs = {credential: secret[credential]} if credential else {}
    read = getattr(std_card, what)
    if not opens:
        with pytest.raises(SecurityNotSatisfied):
            read(**kwargs)
        return
    value = read(**kwargs)
    if what == "my_number":
        assert value == standard.my_number
    elif what == "basic_four":
        assert (value.name, value.address) == (standard.name, standard.address)
        assert value.birth_date == standard.birth_date.strftime("%Y%m%d") and value.sex == str(standard.sex)
    else:
        assert value.expiry == standard.expiry.strftime("%Y%m%d")
        assert value.birth_date == standard.birth_date.strftime("%Y%m%d")
        info = value.photo_info
        assert info.format == "JPEG 2000 (JP2)" and info.colour == "greyscale" and info.width and info.height
        assert image_info(value.name_image).format == "PNG"
        assert "photo" not in repr(value) or "JPEG 2000" in repr(value)  # repr describes, never dumps


def test_check_code_a_does_not_open_the_basic_four(standard, std_card):
    std_card.verify("text_check_a", standard.check_code_a)
    std_card.select_ef(EF_BASIC_FOUR)
    with pytest.raises(SecurityNotSatisfied):
        std_card.read_sized()


def test_wrong_check_code_b_counts_down_from_ten(standard, std_card):
    wrong = "0" * 14 if standard.check_code_b != "0" * 14 else "1" * 14
    with pytest.raises(WrongPin) as info:
        std_card.card_face(check_b=wrong)
    assert info.value.tries_left == 9
    assert std_card.tries_left("surface_check_b") == 9 and std_card.tries_left("text_check_b") == 10


def test_sign_with_the_user_auth_key_after_the_pin(standard, std_card):
    data = b"challenge from a relying party"
    signature = std_card.sign_auth(data, pin=standard.pin)
    cert = std_card.certificate("auth")
    assert len(signature) == 256
    assert verify_signature(cert, signature, data)
    assert not verify_signature(cert, signature, data + b"!")
    for hash_name in ("sha1", "sha384", "sha512"):
        assert verify_signature(cert, std_card.sign_auth(data, pin=standard.pin, hash_name=hash_name), data, hash_name)


def test_sign_without_credential_is_refused(std_card, fa_card):
    for card in (std_card, fa_card):
        with pytest.raises(SecurityNotSatisfied):
            card.sign_auth(b"x")


def test_face_auth_card_signs_once_per_terminal_authorization(fa_card, terminal):
    data = b"face matched"
    signature = fa_card.sign_auth(data, terminal=terminal)
    assert verify_signature(fa_card.certificate("auth"), signature, data)
    # one authorization, one signature
    fa_card.authorize_terminal(terminal)
    fa_card.select_ef(EF_AUTH_KEY)
    apdu = build_apdu(0x80, 0x2A, 0x00, 0x80, digest_info(data), le=256)
    assert fa_card.transport.transmit(apdu).ok
    assert fa_card.transport.transmit(apdu).sw == 0x6982


def test_face_auth_card_refuses_pins_and_unknown_terminals(face_auth, fa_card):
    with pytest.raises(Blocked):
        fa_card.verify("jpki_auth_pin", "1234")
    with pytest.raises(CardStatusError) as info:
        fa_card.authorize_terminal(_other_ca_terminal())
    assert info.value.sw == 0x6300
    with pytest.raises(SecurityNotSatisfied):
        fa_card.sign_auth(b"x")
    # the text-assist and card-surface APs still open with the check codes
    assert fa_card.my_number(check_a=face_auth.check_code_a) == face_auth.my_number
    assert fa_card.card_face(check_b=face_auth.check_code_b).photo_info.format.startswith("JPEG 2000")


def test_extended_reads_give_the_same_bytes_in_fewer_apdus(standard):
    short, ext = _card(standard), _card(standard, extended=True)
    faces, apdus = [], []
    for card in (short, ext):
        faces.append(card.card_face(check_b=standard.check_code_b))
        apdus.append(len(card.transport.log))
    assert faces[0].photo == faces[1].photo and len(faces[0].photo) > 1000
    assert apdus[1] < apdus[0]
    assert any(e.command.startswith("00 B0") and len(e.command.split()) == 7 for e in ext.transport.log.entries())


def test_read_binary_edges(std_card):
    std_card.select_ap("jpki")
    std_card.select_ef(0x000A)
    der = std_card.read_binary()  # to the end, in 256-byte chunks
    assert der == std_card.certificate_der("auth")
    std_card.select_ef(0x000A)
    assert std_card.read_binary(10, 5) == der[10:15]
    assert std_card.read_binary(len(der) - 3, 100) == der[-3:]  # 6282: fewer bytes than asked
    with pytest.raises(WrongParameters):
        std_card.read_binary(len(der) + 10, 4)  # 6B00
    with pytest.raises(FileNotFound):
        std_card.select_ef(0x7777)
    with pytest.raises(ValueError):
        std_card.read_binary(0x8000, 1)


def test_get_response_and_6cxx_against_the_card(standard, std_card):
    """The card answers a case-3 SIGN with 61 00 and a too-small Le with 6Cxx; the transport repairs both."""
    std_card.verify("jpki_auth_pin", standard.pin)
    std_card.select_ef(EF_AUTH_KEY)
    no_le = std_card.transport.transmit(build_apdu(0x80, 0x2A, 0x00, 0x80, digest_info(b"a")))
    assert no_le.ok and len(no_le.data) == 256 and no_le.apdus == 2
    assert std_card.transport.log.entries()[-1].command == "00 C0 00 00 00"
    std_card.verify("jpki_auth_pin", standard.pin)
    std_card.select_ef(EF_AUTH_KEY)
    small = std_card.transport.transmit(build_apdu(0x80, 0x2A, 0x00, 0x80, digest_info(b"a"), le=16))
    assert small.ok and len(small.data) == 256 and small.apdus == 2


def test_pins_never_reach_the_log(standard, std_card):
    std_card.my_number(pin=standard.pin)
    std_card.card_face(check_b=standard.check_code_b)
    text = " ".join(e.command for e in std_card.transport.log.entries())
    for secret in (standard.pin, standard.check_code_b):
        assert secret.encode().hex(" ").upper() not in text
    assert "masked" in text


# --------------------------------------------------------------------------- end to end through pcscd


def test_end_to_end_through_pcscd(pcscd, standard, tmp_path):
    from drivers.pcsc import PcscReader

    reader = PcscReader(pcscd.reader_names[0])
    reader.wait_for_removal(EVENT_TIMEOUT_S)
    card_proc = CardProcess(standard, tmp_path / "state.json", pcscd.card_args(0))
    try:
        inserted = reader.wait_for_insertion(EVENT_TIMEOUT_S)
        with reader.connect() as conn:
            assert conn.atr == inserted.atr and conn.atr.startswith(b"\x3B")
            card = MyNumberCard(conn)
            assert card.detect_profile().name == "standard"
            assert card.token_name() == "JPKIAPICCTOKEN2" and card.verify_auth_chain().ok
            face = card.card_face(check_b=standard.check_code_b)
            assert face.photo_info.format == "JPEG 2000 (JP2)"
            data = b"signed through pcscd"
            assert verify_signature(card.certificate("auth"), card.sign_auth(data, pin=standard.pin), data)
            with pytest.raises(WrongPin):
                card.verify("text_pin", "0000" if standard.pin != "0000" else "1111")
            entries = conn.log.entries()
            assert all(e.elapsed_ms > 0 for e in entries)
            assert standard.pin.encode().hex(" ").upper() not in " ".join(e.command for e in entries)
        # the counter lives in the card's state file: it survives removal and reinsertion
        card_proc.control.remove()
        reader.wait_for_removal(EVENT_TIMEOUT_S)
        card_proc.control.insert()
        reader.wait_for_insertion(EVENT_TIMEOUT_S)
        with reader.connect() as conn:
            assert MyNumberCard(conn).tries_left("text_pin") == 2
    finally:
        card_proc.stop()
        reader.wait_for_removal(EVENT_TIMEOUT_S)
