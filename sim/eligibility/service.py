"""The eligibility service: its logic (``EligibilityService``) and its HTTP face (``serve``).

HTTP, JSON in and out, on loopback (hardware.md and docs/interfaces.md):

* ``GET  /health`` -> ``{"ok": true}``
* ``POST /status`` ``{"certificate"}`` -> ``{"cert_status", "registered", "serial"}``
* ``POST /challenge`` -> ``{"id", "nonce", "expires_s"}`` (32 random bytes, single use)
* ``POST /register`` ``{"challenge_id", "signature", "certificate", "method", "reader"}``
* ``POST /eligibility`` ``{... , "consents": {"surgery", "care", "checkup"}}``
  -> ``{"ok", "code", "message", "transaction_id"}``
* ``GET  /transactions?limit=N``, ``GET /registrations``: what was recorded (for scenarios)
* ``POST /admin/unregister`` ``{"serial": hex}``: simulator only, forget a registration

Binary values travel as base64. Refusals are HTTP 200 with ``ok: false`` and a ``code``:
``malformed``, ``unknown_issuer``, ``revoked``, ``expired``, ``not_yet_valid``,
``bad_signature``, ``challenge_unknown``, ``challenge_used``, ``challenge_expired``,
``not_registered``, ``already_registered``; a malformed request is HTTP 400 ``bad_request``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from sqlalchemy import delete, select

from sim.eligibility.models import Challenge, Registration, Transaction, make_engine, make_sessions, utcnow
from sim.eligibility.verify import VALID, CertCheck, TrustStore, signature_ok

log = logging.getLogger(__name__)

CHALLENGE_TTL_S = 120
# At most this many challenges are kept: a reader asks one per session, so 1,000 covers far more
# sessions than fit in one TTL; beyond it the oldest go first (a flood cannot grow the table).
MAX_CHALLENGES = 1000
METHODS = ("face", "pin", "visual")
CONSENT_CHOICES = {"surgery": ("consent", "decline"), "care": ("consent", "decline"),
                   "checkup": ("consent", "decline", "under40")}
MAX_BODY_BYTES = 64 * 1024


class BadRequest(ValueError):
    pass


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


def _b64(d: dict, key: str) -> bytes:
    value = d.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{key}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{key}: not base64 ({exc})") from exc


def _str(d: dict, key: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if not isinstance(value, str):
        raise BadRequest(f"{key}: expected a string")
    return value


class EligibilityService:
    def __init__(self, pki_dir: Path, db_url: str, challenge_ttl_s: int = CHALLENGE_TTL_S,
                 max_challenges: int = MAX_CHALLENGES, register_delay_ms: int = 0):
        self.trust = TrustStore(pki_dir)
        self.engine = make_engine(db_url)
        self.sessions = make_sessions(self.engine)
        self.challenge_ttl_s = challenge_ttl_s
        self.max_challenges = max_challenges
        # N17: "completing the application may take a little time": a registration answers this late
        self.register_delay_ms = max(0, int(register_delay_ms))

    # -- registrations ------------------------------------------------------------------------
    def _registration(self, db, check: CertCheck) -> Registration | None:
        return db.scalar(select(Registration).where(Registration.cert_issuer == check.issuer,
                                                    Registration.cert_serial == check.serial_hex))

    def seed_registration(self, certificate_der: bytes, method: str = "seed") -> bool:
        """Register a card directly (the station's deck: cards registered before the test)."""
        check = self.trust.check(certificate_der)
        if check.certificate is None:
            return False
        with self.sessions.begin() as db:
            if self._registration(db, check) is None:
                db.add(Registration(cert_issuer=check.issuer, cert_serial=check.serial_hex, holder=check.holder,
                                    method=method))
        return True

    def status(self, req: dict) -> dict:
        check = self.trust.check(_b64(req, "certificate"))
        registered = False
        if check.certificate is not None:
            with self.sessions() as db:
                registered = self._registration(db, check) is not None
        return {"cert_status": check.status, "registered": registered, "serial": check.serial_hex,
                "detail": check.detail}

    # -- challenges ---------------------------------------------------------------------------
    def challenge(self, req: dict) -> dict:
        cid, nonce = secrets.token_hex(16), secrets.token_bytes(32)
        with self.sessions.begin() as db:
            self._prune_challenges(db)
            db.add(Challenge(id=cid, nonce=nonce))
        return {"id": cid, "nonce": base64.b64encode(nonce).decode(), "expires_s": self.challenge_ttl_s}

    def _prune_challenges(self, db) -> None:
        """Forget challenges past their TTL (they could only be refused as expired), then the oldest
        beyond ``max_challenges - 1``, so the new one fits: the table stays bounded on a long run."""
        cutoff = utcnow() - dt.timedelta(seconds=self.challenge_ttl_s)
        db.execute(delete(Challenge).where(Challenge.issued_at < cutoff))
        keep = select(Challenge.id).order_by(Challenge.issued_at.desc()).limit(max(0, self.max_challenges - 1))
        db.execute(delete(Challenge).where(Challenge.id.not_in(keep.scalar_subquery())))

    def _prove(self, db, req: dict) -> tuple[CertCheck, Refusal | None]:
        """Check certificate, challenge and signature; the challenge is spent either way."""
        cert_der, signature = _b64(req, "certificate"), _b64(req, "signature")
        cid = _str(req, "challenge_id")
        check = self.trust.check(cert_der)
        ch = db.get(Challenge, cid)
        if ch is None:
            return check, Refusal("challenge_unknown", f"unknown challenge: never issued, or forgotten after its "
                                  f"{self.challenge_ttl_s} s or as the oldest beyond {self.max_challenges} kept")
        if ch.used:
            return check, Refusal("challenge_used", "the challenge was already used")
        ch.used = True
        issued = ch.issued_at if ch.issued_at.tzinfo else ch.issued_at.replace(tzinfo=dt.timezone.utc)
        if (utcnow() - issued).total_seconds() > self.challenge_ttl_s:
            return check, Refusal("challenge_expired", "the challenge expired")
        if check.status != VALID:
            return check, Refusal(check.status, f"certificate {check.status}: {check.detail}")
        if not signature_ok(check.certificate, signature, ch.nonce):
            return check, Refusal("bad_signature", "the signature does not verify with the certificate")
        return check, None

    def _record(self, db, kind: str, req: dict, check: CertCheck, refusal: Refusal | None,
                consents: dict | None = None) -> Transaction:
        consents = consents or {}
        tx = Transaction(kind=kind, reader_id=str(req.get("reader", ""))[:64], cert_serial=check.serial_hex,
                         method=str(req.get("method", ""))[:16], consent_surgery=consents.get("surgery", ""),
                         consent_care=consents.get("care", ""), consent_checkup=consents.get("checkup", ""),
                         ok=refusal is None, code=refusal.code if refusal else "ok")
        db.add(tx)
        db.flush()
        return tx

    @staticmethod
    def _method(req: dict) -> str:
        method = _str(req, "method")
        if method not in METHODS:
            raise BadRequest(f"method: one of {', '.join(METHODS)}")
        return method

    def register(self, req: dict) -> dict:
        if self.register_delay_ms:
            time.sleep(self.register_delay_ms / 1000)
        method = self._method(req)
        with self.sessions.begin() as db:
            check, refusal = self._prove(db, req)
            if refusal is None and self._registration(db, check) is not None:
                refusal = Refusal("already_registered", "the card is already registered")
            if refusal is None:
                db.add(Registration(cert_issuer=check.issuer, cert_serial=check.serial_hex, holder=check.holder,
                                    method=method, reader_id=str(req.get("reader", ""))[:64]))
            tx = self._record(db, "registration", req, check, refusal)
        return self._answer(tx, refusal)

    def eligibility(self, req: dict) -> dict:
        self._method(req)
        consents = req.get("consents")
        if not isinstance(consents, dict):
            raise BadRequest("consents: expected an object")
        for item, choices in CONSENT_CHOICES.items():
            if consents.get(item) not in choices:
                raise BadRequest(f"consents.{item}: one of {', '.join(choices)}")
        with self.sessions.begin() as db:
            check, refusal = self._prove(db, req)
            if refusal is None and self._registration(db, check) is None:
                refusal = Refusal("not_registered", "the card is not registered for health-insurance use")
            tx = self._record(db, "eligibility", req, check, refusal, consents)
        return self._answer(tx, refusal)

    @staticmethod
    def _answer(tx: Transaction, refusal: Refusal | None) -> dict:
        if refusal is None:
            return {"ok": True, "code": "ok", "message": "", "transaction_id": str(tx.id)}
        return {"ok": False, "code": refusal.code, "message": refusal.message, "transaction_id": str(tx.id)}

    def unregister(self, req: dict) -> dict:
        """Simulator administration: forget a card's registration (so a scenario can register it)."""
        serial = _str(req, "serial").upper().lstrip("0") or "0"
        with self.sessions.begin() as db:
            rows = db.scalars(select(Registration).where(Registration.cert_serial == serial)).all()
            for r in rows:
                db.delete(r)
        return {"ok": True, "removed": len(rows)}

    # -- what was recorded ----------------------------------------------------------------------
    def transactions(self, limit: int = 100) -> list[dict]:
        with self.sessions() as db:
            rows = db.scalars(select(Transaction).order_by(Transaction.id.desc()).limit(limit)).all()
            return [{"id": t.id, "at": t.at.isoformat(), "kind": t.kind, "reader": t.reader_id,
                     "serial": t.cert_serial, "method": t.method, "ok": t.ok, "code": t.code,
                     "consents": {"surgery": t.consent_surgery, "care": t.consent_care,
                                  "checkup": t.consent_checkup}} for t in rows]

    def registrations(self) -> list[dict]:
        with self.sessions() as db:
            rows = db.scalars(select(Registration).order_by(Registration.id)).all()
            return [{"serial": r.cert_serial, "issuer": r.cert_issuer, "method": r.method,
                     "at": r.registered_at.isoformat()} for r in rows]


# -- HTTP ---------------------------------------------------------------------------------------

def make_handler(service: EligibilityService) -> type[BaseHTTPRequestHandler]:
    posts = {"/status": service.status, "/challenge": service.challenge, "/register": service.register,
             "/eligibility": service.eligibility, "/admin/unregister": service.unregister}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
            url = urlparse(self.path)
            if url.path == "/health":
                return self._send(200, {"ok": True})
            if url.path == "/transactions":
                try:
                    limit = int(parse_qs(url.query).get("limit", ["100"])[0])
                except ValueError:
                    return self._send(400, {"ok": False, "code": "bad_request", "message": "limit: an integer"})
                return self._send(200, service.transactions(max(1, min(limit, 10_000))))
            if url.path == "/registrations":
                return self._send(200, service.registrations())
            self._send(404, {"ok": False, "code": "not_found", "message": url.path})

        def do_POST(self) -> None:  # noqa: N802
            path = urlparse(self.path).path
            handler = posts.get(path)
            if handler is None:
                return self._send(404, {"ok": False, "code": "not_found", "message": self.path})
            token = os.environ.get("FACEHIL_STATION_TOKEN")  # a station's token (hardware.md 9.1)
            if path.startswith("/admin/") and token and not hmac.compare_digest(
                    self.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
                return self._send(401, {"ok": False, "code": "unauthorized", "message": "station token required"})
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if not 0 <= length <= MAX_BODY_BYTES:
                    raise BadRequest(f"body must be at most {MAX_BODY_BYTES} bytes")
                raw = self.rfile.read(length) if length else b"{}"
                req = json.loads(raw or b"{}")
                if not isinstance(req, dict):
                    raise BadRequest("body: expected a JSON object")
                return self._send(200, handler(req))
            except (BadRequest, ValueError) as exc:
                return self._send(400, {"ok": False, "code": "bad_request", "message": str(exc)})
            except Exception:  # the service answers 500 and lives on
                log.exception("eligibility request failed")
                return self._send(500, {"ok": False, "code": "internal", "message": "internal error"})

    return Handler


def make_server(service: EligibilityService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    return server
