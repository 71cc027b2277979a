"""The reader's client of the eligibility service (the ``EligibilityPort`` of sim/reader/ports.py)."""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any

from sim.reader.ports import CertStatus, Challenge, EligibilityUnavailable, ServiceResult

log = logging.getLogger(__name__)


class EligibilityClient:
    def __init__(self, base_url: str, *, reader_id: str = "", timeout_s: float = 5.0, token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self._token = token or os.environ.get("FACEHIL_STATION_TOKEN")  # for /admin/* (hardware.md 9.1)
        self.reader_id = reader_id
        self.timeout_s = timeout_s

    def _call(self, path: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if path.startswith("/admin/") and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(self.base_url + path, data=data, method="GET" if body is None else "POST",
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            raise EligibilityUnavailable(f"{path}: HTTP {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise EligibilityUnavailable(f"{path}: {exc}") from exc

    @staticmethod
    def _b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    def status(self, certificate_der: bytes) -> CertStatus:
        r = self._call("/status", {"certificate": self._b64(certificate_der)})
        return CertStatus(cert_status=str(r.get("cert_status", "malformed")), registered=bool(r.get("registered")))

    def challenge(self) -> Challenge:
        r = self._call("/challenge", {})
        try:
            return Challenge(id=str(r["id"]), nonce=base64.b64decode(r["nonce"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise EligibilityUnavailable(f"/challenge: bad answer {r!r:.120}") from exc

    def _result(self, r: Any) -> ServiceResult:
        if not isinstance(r, dict):
            raise EligibilityUnavailable(f"bad answer {r!r:.120}")
        return ServiceResult(ok=bool(r.get("ok")), code=str(r.get("code", "")), message=str(r.get("message", "")),
                             transaction_id=r.get("transaction_id"), fields=r)

    def register(self, challenge_id: str, signature: bytes, certificate_der: bytes, method: str) -> ServiceResult:
        return self._result(self._call("/register", {
            "challenge_id": challenge_id, "signature": self._b64(signature),
            "certificate": self._b64(certificate_der), "method": method, "reader": self.reader_id}))

    def query(self, challenge_id: str, signature: bytes, certificate_der: bytes, method: str,
              consents: dict[str, str]) -> ServiceResult:
        return self._result(self._call("/eligibility", {
            "challenge_id": challenge_id, "signature": self._b64(signature),
            "certificate": self._b64(certificate_der), "method": method, "consents": consents,
            "reader": self.reader_id}))

    def transactions(self, limit: int = 100) -> list[dict]:
        return self._call(f"/transactions?limit={int(limit)}")

    def unregister(self, serial_hex: str) -> int:
        """Simulator only: forget a card's registration; returns how many were removed."""
        return int(self._call("/admin/unregister", {"serial": serial_hex}).get("removed", 0))

    def registrations(self) -> list[dict]:
        return self._call("/registrations")

    def health(self) -> bool:
        try:
            return bool(self._call("/health").get("ok"))
        except EligibilityUnavailable:
            return False
