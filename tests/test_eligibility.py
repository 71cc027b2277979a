"""The simulated eligibility service: certificate chain, revocation, expiry, signatures,
challenges, registrations and transactions in a real SQLite database, over real HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from sim.eligibility.client import EligibilityClient
from sim.eligibility.service import EligibilityService, make_server
from sim.reader.ports import EligibilityUnavailable

NOW = dt.datetime.now(dt.timezone.utc)
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "JPKI"),
                     x509.NameAttribute(NameOID.COMMON_NAME, "TEST JPKI CA")])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _ca(key) -> x509.Certificate:
    return (x509.CertificateBuilder().subject_name(CA_NAME).issuer_name(CA_NAME).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))


def _leaf(ca_key, serial: int, holder_key, not_before: dt.datetime, not_after: dt.datetime) -> bytes:
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"holder{serial}")]))
            .issuer_name(CA_NAME).public_key(holder_key.public_key()).serial_number(serial)
            .not_valid_before(not_before).not_valid_after(not_after).sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    (d / "jpki-ca.pem").write_bytes(_ca(ca_key).public_bytes(serialization.Encoding.PEM))
    (d / "revoked.txt").write_text("# revoked\n1003  # a lost card\nnot-hex\n")
    holder = _key()
    other_ca = _key()  # same CA name, different key: a wrong chain
    day = dt.timedelta(days=1)
    return {
        "dir": d, "holder": holder,
        "valid": _leaf(ca_key, 0x1001, holder, NOW - day, NOW + 400 * day),
        "valid2": _leaf(ca_key, 0x1002, holder, NOW - day, NOW + 400 * day),
        "revoked": _leaf(ca_key, 0x1003, holder, NOW - day, NOW + 400 * day),
        "expired": _leaf(ca_key, 0x1004, holder, NOW - 800 * day, NOW - day),
        "future": _leaf(ca_key, 0x1005, holder, NOW + 10 * day, NOW + 400 * day),
        "wrong_chain": _leaf(other_ca, 0x1006, holder, NOW - day, NOW + 400 * day),
    }


@pytest.fixture
def service(tmp_path, pki) -> EligibilityService:
    return EligibilityService(pki["dir"], f"sqlite:///{tmp_path / 'elig.sqlite'}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def signed(service: EligibilityService, key, cert: bytes, **extra) -> dict:
    ch = service.challenge({})
    sig = key.sign(base64.b64decode(ch["nonce"]), padding.PKCS1v15(), hashes.SHA256())
    return {"challenge_id": ch["id"], "signature": b64(sig), "certificate": b64(cert), "method": "face",
            "reader": "R1", **extra}


CONSENTS = {"surgery": "consent", "care": "decline", "checkup": "under40"}


def test_register_then_query_records_everything(service, pki, tmp_path):
    assert service.status({"certificate": b64(pki["valid"])}) == {"cert_status": "valid", "registered": False,
                                                                   "serial": "1001", "detail": ""}
    r = service.register(signed(service, pki["holder"], pki["valid"], method="visual"))
    assert r["ok"] and r["code"] == "ok"
    assert service.status({"certificate": b64(pki["valid"])})["registered"] is True
    q = service.eligibility(signed(service, pki["holder"], pki["valid"], consents=CONSENTS, method="pin"))
    assert q["ok"], q
    tx = service.transactions()
    assert tx[0]["kind"] == "eligibility" and tx[0]["method"] == "pin" and tx[0]["consents"] == CONSENTS
    assert tx[0]["serial"] == "1001" and tx[0]["reader"] == "R1"
    assert tx[1]["kind"] == "registration" and tx[1]["method"] == "visual"
    # a real database: a new service on the same file sees the same registrations
    again = EligibilityService(pki["dir"], f"sqlite:///{tmp_path / 'elig.sqlite'}")
    assert [r["serial"] for r in again.registrations()] == ["1001"]
    assert again.register(signed(again, pki["holder"], pki["valid"]))["code"] == "already_registered"


@pytest.mark.parametrize("which,code", [("revoked", "revoked"), ("expired", "expired"),
                                        ("future", "not_yet_valid"), ("wrong_chain", "unknown_issuer")])
def test_certificate_problems_are_flagged(service, pki, which, code):
    assert service.status({"certificate": b64(pki[which])})["cert_status"] == code
    r = service.register(signed(service, pki["holder"], pki[which]))
    assert (r["ok"], r["code"]) == (False, code)
    assert service.registrations() == []
    assert service.transactions()[0]["code"] == code


def test_malformed_certificate(service, pki):
    assert service.status({"certificate": b64(b"\x30\x03junk")})["cert_status"] == "malformed"


def test_bad_signature_and_challenges(service, pki):
    service.seed_registration(pki["valid"])
    req = signed(service, _key(), pki["valid"], consents=CONSENTS)  # signed by someone else's key
    assert service.eligibility(req)["code"] == "bad_signature"
    assert service.eligibility(req)["code"] == "challenge_used"  # spent even by a failed attempt
    req = signed(service, pki["holder"], pki["valid"], consents=CONSENTS)
    assert service.eligibility({**req, "challenge_id": "feed"})["code"] == "challenge_unknown"
    assert service.eligibility(req)["ok"]
    # a signature over another challenge does not transfer
    other = signed(service, pki["holder"], pki["valid"], consents=CONSENTS)
    swapped = {**other, "challenge_id": service.challenge({})["id"]}
    assert service.eligibility(swapped)["code"] == "bad_signature"


def test_challenge_expiry(tmp_path, pki):
    svc = EligibilityService(pki["dir"], f"sqlite:///{tmp_path / 'e.sqlite'}", challenge_ttl_s=0)
    svc.seed_registration(pki["valid"])
    req = signed(svc, pki["holder"], pki["valid"], consents=CONSENTS)
    time.sleep(0.01)
    assert svc.eligibility(req)["code"] == "challenge_expired"


def _challenge_rows(svc: EligibilityService) -> int:
    from sqlalchemy import func, select

    from sim.eligibility.models import Challenge

    with svc.sessions() as db:
        return db.scalar(select(func.count()).select_from(Challenge))


def test_challenges_are_capped_and_an_evicted_one_is_refused(tmp_path, pki):
    """A flood of challenges keeps at most ``max_challenges``; the oldest is forgotten and refused
    clearly; the newest still works."""
    svc = EligibilityService(pki["dir"], f"sqlite:///{tmp_path / 'e.sqlite'}", max_challenges=5)
    svc.seed_registration(pki["valid"])
    first = signed(svc, pki["holder"], pki["valid"], consents=CONSENTS)
    for _ in range(30):
        svc.challenge({})
    assert _challenge_rows(svc) == 5
    refused = svc.eligibility(first)
    assert (refused["ok"], refused["code"]) == (False, "challenge_unknown")
    assert "oldest beyond 5 kept" in refused["message"]
    assert svc.eligibility(signed(svc, pki["holder"], pki["valid"], consents=CONSENTS))["ok"]
    assert _challenge_rows(svc) <= 5


def test_expired_challenges_are_forgotten_and_refused(tmp_path, pki):
    svc = EligibilityService(pki["dir"], f"sqlite:///{tmp_path / 'e.sqlite'}", challenge_ttl_s=1)
    svc.seed_registration(pki["valid"])
    old = signed(svc, pki["holder"], pki["valid"], consents=CONSENTS)
    svc.challenge({})
    time.sleep(1.1)
    fresh = signed(svc, pki["holder"], pki["valid"], consents=CONSENTS)  # issuing prunes the expired two
    assert _challenge_rows(svc) == 1
    refused = svc.eligibility(old)
    assert refused["code"] == "challenge_unknown" and "after its 1 s" in refused["message"]
    assert svc.eligibility(fresh)["ok"]


def test_not_registered(service, pki):
    r = service.eligibility(signed(service, pki["holder"], pki["valid2"], consents=CONSENTS))
    assert (r["ok"], r["code"]) == (False, "not_registered")


@pytest.fixture
def http(service):
    server = make_server(service)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


def test_http_client_round_trip(http, service, pki):
    client = EligibilityClient(http, reader_id="R9")
    assert client.health()
    assert client.status(pki["valid"]).cert_status == "valid"
    key = pki["holder"]
    ch = client.challenge()
    sig = key.sign(ch.nonce, padding.PKCS1v15(), hashes.SHA256())
    assert client.register(ch.id, sig, pki["valid"], "face").ok
    ch = client.challenge()
    sig = key.sign(ch.nonce, padding.PKCS1v15(), hashes.SHA256())
    res = client.query(ch.id, sig, pki["valid"], "face", CONSENTS)
    assert res.ok and res.transaction_id
    assert client.transactions(1)[0]["reader"] == "R9"
    assert client.status(pki["revoked"]).cert_status == "revoked"
    assert [r["serial"] for r in client.registrations()] == ["1001"]
    assert client.unregister("1001") == 1
    assert client.status(pki["valid"]).registered is False


def test_http_bad_requests(http):
    import json
    import urllib.error
    import urllib.request

    for path, body in [("/eligibility", b"not json"), ("/eligibility", b"[1,2]"), ("/register", b'{"method": "x"}'),
                       ("/status", b'{"certificate": 5}')]:
        req = urllib.request.Request(http + path, data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 400
        assert json.loads(err.value.read())["code"] == "bad_request"
    client = EligibilityClient(http)
    with pytest.raises(EligibilityUnavailable, match="HTTP 400"):
        client.query("x", b"s", b"c", "face", {"surgery": "maybe"})


def test_client_unavailable():
    with pytest.raises(EligibilityUnavailable):
        EligibilityClient("http://127.0.0.1:9", timeout_s=0.5).challenge()


def test_service_process(tmp_path, pki):
    proc = subprocess.Popen([sys.executable, "-m", "sim.eligibility", "--pki-dir", str(pki["dir"]),
                             "--state-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY url=http://127.0.0.1:")
        client = EligibilityClient(line.split("url=", 1)[1].strip())
        assert client.health()
        assert (tmp_path / "eligibility.sqlite").exists()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
