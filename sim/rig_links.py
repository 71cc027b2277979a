"""What the simulated rig's actuators are wired to: card processes, the reader's supply, the presenter.

Each link is best effort with a short timeout: the rig firmware must never hang on a part of
the station that is down; it reports the failure (NAK E_HW or a HEALTH fault) instead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from drivers.station_auth import authenticate_socket
from sim.context import TOKEN_ENV
from sim.rig_model import Coupling

log = logging.getLogger(__name__)

LINK_TIMEOUT_S = 2.0


class LinkError(RuntimeError):
    """A part of the station the rig drives did not answer or refused."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class LinkRefused(LinkError):
    """The part answered but refused the request (bad subject id, ...)."""


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


@dataclass
class CardLink:
    """One deck card's process, driven through its control port (docs/interfaces.md).

    INSERT/REMOVE say whether the card is on the reader at all (picked from the deck or put
    back); COUPLING says how well it sits in the antenna field while it is there.
    """

    slot: int
    host: str
    port: int

    def _control(self):
        from sim.card.control import CardControl  # the card process's own client

        return CardControl(self.host, self.port, timeout_s=LINK_TIMEOUT_S)

    def _run(self, action) -> None:
        try:
            action(self._control())
        except (OSError, RuntimeError, ValueError) as exc:
            raise LinkError(f"card in slot {self.slot} ({self.host}:{self.port}): {exc}") from exc

    def enter(self) -> None:
        """The placer brings the card over the reader, still out of the field."""
        def act(ctl) -> None:
            ctl.coupling("absent")  # before INSERT, so the card does not touch the field on the way in
            ctl.insert()
        self._run(act)

    def apply(self, coupling: Coupling) -> None:
        if coupling.state == "flaky":
            self._run(lambda ctl: ctl.coupling("flaky", coupling.error_rate))
        else:
            self._run(lambda ctl: ctl.coupling(coupling.state))

    def leave(self) -> None:
        """The card is back in the deck."""
        self._run(lambda ctl: ctl.remove())

    def on_reader(self) -> bool:
        """Whether the card process says it is inserted (to adopt the station's state at boot)."""
        result = {}
        self._run(lambda ctl: result.update(ctl.status()))
        return result.get("inserted") == "1" and result.get("coupling") != "absent"


class SupplyLink:
    """The reader's supply port: ``POWER ON|OFF`` lines over loopback TCP.

    The address comes from ``--supply HOST:PORT`` or, when the reader starts after the rig,
    from a file it writes (``--supply-file``), re-read at every switch.
    """

    def __init__(self, address: str | None = None, address_file: Path | None = None):
        self.address = address
        self.address_file = address_file

    def _resolve(self) -> tuple[str, int] | None:
        if self.address:
            return parse_hostport(self.address)
        if self.address_file and self.address_file.exists():
            text = self.address_file.read_text().strip()
            if text:
                return parse_hostport(text)
        return None

    def switch(self, on: bool) -> str:
        """Returns "ok", or "none" when no supply port is configured. Raises LinkError."""
        try:
            target = self._resolve()
        except (OSError, ValueError) as exc:
            raise LinkError(f"reader supply address: {exc}") from exc
        if target is None:
            return "none"
        line = b"POWER ON\n" if on else b"POWER OFF\n"
        try:
            with socket.create_connection(target, timeout=LINK_TIMEOUT_S) as s:
                authenticate_socket(s, f"reader supply {target[0]}:{target[1]}", timeout_s=LINK_TIMEOUT_S)
                s.sendall(line)
                reply = _read_line(s)
        except OSError as exc:  # StationAuthError too
            raise LinkError(f"reader supply {target[0]}:{target[1]}: {exc}") from exc
        if not reply.startswith("OK"):
            raise LinkError(f"reader supply refused {line.decode().strip()}: {reply or 'no reply'}")
        return "ok"


def _read_line(s: socket.socket, limit: int = 512) -> str:
    buf = b""
    while b"\n" not in buf and len(buf) < limit:
        chunk = s.recv(256)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0].decode("ascii", "replace").strip()


@dataclass
class PresenterLink:
    """The subject presenter's HTTP control (sim/camera.py)."""

    base_url: str | None

    def post(self, path: str, payload: dict) -> dict:
        if not self.base_url:
            return {}
        headers = {"Content-Type": "application/json"}
        token = os.environ.get(TOKEN_ENV)  # the station's, given to the rig process (sim/context.py)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base_url.rstrip("/") + path, data=json.dumps(payload).encode(),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=LINK_TIMEOUT_S) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", str(exc))
            except ValueError:
                detail = str(exc)
            if 400 <= exc.code < 500:
                raise LinkRefused(f"presenter refused {path}: {detail}") from exc
            raise LinkError(f"presenter failed {path}: {detail}") from exc
        except (OSError, ValueError) as exc:
            raise LinkError(f"presenter {self.base_url}: {exc}") from exc
