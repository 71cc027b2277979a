"""The simulated reader's supply port: where the rig's power relay connects (loopback TCP).

One ASCII line per command, one reply line:

* ``POWER ON`` / ``POWER OFF`` -> ``OK power=on|off`` (OFF is a power cut: volatile state is lost);
* ``STATUS`` -> ``OK power=on|off booted=0|1 fw=<version>``;
* ``FAULTS <name,...>|none`` -> ``OK faults=<names>`` (simulator only: make it a faulty reader);
* anything else -> ``ERR <reason>``.

With a station token (``FACEHIL_STATION_TOKEN``, as every station process has it) the first line
of a connection must be ``AUTH <token>`` (-> ``AUTH OK``); anything else gets ``AUTH REFUSED`` and
the connection is closed (hardware.md 9.1): a stray local program cannot cut the reader's power or
make it faulty.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import threading

from sim.context import TOKEN_ENV

from sim.reader.device import ReaderDevice
from sim.reader.flow import Faults

log = logging.getLogger(__name__)


class SupplyPort:
    def __init__(self, device: ReaderDevice, host: str = "127.0.0.1", port: int = 0, token: str | None = None):
        self.device = device
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.listener = socket.create_server((host, port))
        self.host, self.port = self.listener.getsockname()[:2]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="reader-supply", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _authorised(self, line: bytes) -> bool:
        words = line.strip().split()
        return (len(words) == 2 and words[0] == b"AUTH" and self.token is not None
                and hmac.compare_digest(words[1], self.token.encode()))

    def _client(self, conn: socket.socket) -> None:
        conn.settimeout(30.0)
        authed = self.token is None
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(1024)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                if len(buf) > 4096 and b"\n" not in buf:
                    buf = b""
                    conn.sendall(b"ERR line too long\n")
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not authed:
                        authed = self._authorised(line)
                        conn.sendall(b"AUTH OK\n" if authed else b"AUTH REFUSED\n")
                        if not authed:
                            log.warning("supply port: a connection without a valid AUTH line was refused")
                            return
                        continue
                    reply = self.handle(line.decode("ascii", "replace").strip())
                    try:
                        conn.sendall(reply.encode("ascii", "replace") + b"\n")
                    except OSError:
                        return

    def handle(self, line: str) -> str:
        words = line.split()
        cmd = [w.upper() for w in words[:2]]
        if cmd == ["POWER", "ON"] and len(words) == 2:
            self.device.power_on()
            return "OK power=on"
        if cmd == ["POWER", "OFF"] and len(words) == 2:
            self.device.power_off()
            return "OK power=off"
        if cmd[:1] == ["STATUS"]:
            d = self.device
            version = d.manifest.version if d.booted and d.manifest else ""
            return (f"OK power={'on' if d.powered else 'off'} booted={int(d.booted)} fw={version}"
                    + (f" error={d.boot_error.replace(' ', '_')}" if d.boot_error else ""))
        if cmd[:1] == ["FAULTS"]:
            try:
                faults = Faults.parse(",".join(words[1:]))
            except ValueError as exc:
                return f"ERR {exc}"
            self.device.set_faults(faults)
            return f"OK faults={','.join(faults.active()) or 'none'}"
        return "ERR unknown command (POWER ON|OFF, STATUS, FAULTS)"

    def stop(self) -> None:
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
