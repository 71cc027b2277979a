"""The preamble a simulated station's TCP device ports require (hardware.md 9.1): when this
process holds a station token (``FACEHIL_STATION_TOKEN``, set by the harness for a simulated
station), the first line sent on a ``socket://`` device port is ``AUTH <token>`` and the port
answers ``AUTH OK``. Serial lines and ptys carry no preamble: their file mode guards them.

Used by drivers/rig.py and drivers/reader.py right after opening the port, and on the reader's
supply port (a plain socket) by the rig's power relay."""

from __future__ import annotations

import os
import time

TOKEN_ENV = "FACEHIL_STATION_TOKEN"
REPLY_TIMEOUT_S = 3.0


class StationAuthError(OSError):
    """The device port refused the token, or never answered it."""


def authenticate(port, url: str, timeout_s: float = REPLY_TIMEOUT_S, token: str | None = None) -> bool:
    """Send the preamble on ``port`` (a pyserial object) if ``url`` is TCP and a token is held
    (``token``, else the environment's); True if it was sent and accepted. Raises
    StationAuthError when refused."""
    token = token or os.environ.get(TOKEN_ENV)
    if not token or not url.startswith("socket://"):
        return False
    port.write(f"AUTH {token}\n".encode("ascii"))
    buf = b""
    deadline = time.monotonic() + timeout_s
    while not buf.endswith(b"\n") and len(buf) < 64 and time.monotonic() < deadline:
        buf += port.read(1) or b""  # byte by byte: pyserial drops what it read when the peer then hangs up
    return _accepted(buf, url)


def authenticate_socket(sock, where: str, timeout_s: float = REPLY_TIMEOUT_S, token: str | None = None) -> bool:
    """The same preamble on a plain TCP socket (the reader's supply port: sim/reader/supply.py)."""
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        return False
    sock.sendall(f"AUTH {token}\n".encode("ascii"))
    sock.settimeout(timeout_s)
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < 64:
        chunk = sock.recv(1)  # byte by byte: what follows the reply is the caller's
        if not chunk:
            break
        buf += chunk
    return _accepted(buf, where)


def _accepted(reply: bytes, where: str) -> bool:
    line = reply.split(b"\n", 1)[0].strip()
    if line != b"AUTH OK":
        raise StationAuthError(f"{where} refused the station token: {line.decode('ascii', 'replace') or 'no reply'}")
    return True
