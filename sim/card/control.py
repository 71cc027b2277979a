"""The card process's control port: a line protocol on loopback TCP, server and client.

One ASCII line per command, one reply line ``OK [k=v ...]`` or ``ERR <reason>``:

    INSERT | REMOVE | COUPLING PRESENT | COUPLING ABSENT | COUPLING FLAKY <rate 0..1> [<dropout_ms>]
    STATUS  -> OK inserted=0|1 coupling=present|absent|flaky rate=R connected=0|1 powered=0|1
               apdus=N dropouts=N persona=<id> profile=<profile>
               (connected: on vpcd's socket; powered: pcscd has seen and powered the card)
    REISSUE -> OK; retry counters back to their issued values (the lab re-issuing a locked test card)
    RELOAD  -> OK; serve the persona file's profile again (after `facehil sim card switch`, sim/card/switch.py)
    QUIT    -> OK, then the card process exits

A card process of a station started by `facehil sim up` holds the station's token (environment
``FACEHIL_STATION_TOKEN``, sim/context.py); then the first line of every connection must be
``AUTH <token>`` (-> ``OK``); anything else is answered ``ERR auth required`` and the
connection is closed, so no local user without the token can REISSUE (unblock a PIN) or move a
card. A card process started without a token (a test's own card) is open, as before.

The rig (sim/rig.py), the station and tests drive cards through ``CardControl``.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sim.card.vpcd import CardLink
from sim.context import TOKEN_ENV

log = logging.getLogger(__name__)

MAX_LINE = 256


class ControlError(RuntimeError):
    """The card answered ERR, or could not be reached."""


def handle_line(line: str, link: CardLink, info: dict[str, str], reload: Callable[[], None] | None = None) -> str:
    """The reply to one control line. Never raises. (QUIT is acted on by the caller, after
    the reply is sent.)"""
    words = line.strip().split()
    if not words:
        return "ERR empty command"
    cmd = words[0].upper()
    args = words[1:]
    try:
        if cmd == "INSERT" and not args:
            link.insert()
        elif cmd == "REMOVE" and not args:
            link.remove()
        elif cmd == "COUPLING" and args:
            mode = args[0].lower()
            if mode in ("present", "absent") and len(args) == 1:
                link.set_coupling(mode)
            elif mode == "flaky" and len(args) in (2, 3):
                rate = float(args[1])
                dropout_s = float(args[2]) / 1000.0 if len(args) == 3 else None
                if dropout_s is not None and not 0 <= dropout_s <= 60:
                    return "ERR dropout_ms must be within 0..60000"
                link.set_coupling("flaky", rate, dropout_s)
            else:
                return "ERR usage: COUPLING PRESENT | COUPLING ABSENT | COUPLING FLAKY <rate 0..1> [<dropout_ms>]"
        elif cmd == "STATUS" and not args:
            st = link.status()
            fields = {"inserted": int(st.inserted), "coupling": st.coupling, "rate": f"{st.error_rate:g}",
                      "connected": int(st.connected), "powered": int(st.powered), "apdus": st.apdus, "dropouts": st.dropouts, **info}
            return "OK " + " ".join(f"{k}={v}" for k, v in fields.items())
        elif cmd == "REISSUE" and not args:
            link.card.state.reissue()
        elif cmd == "RELOAD" and not args and reload is not None:
            reload()
        elif cmd == "QUIT" and not args:
            pass
        else:
            return f"ERR unknown command or wrong arguments: {line.strip()[:60]!r}"
    except ValueError as exc:
        return f"ERR {exc}"
    except Exception as exc:  # never let a control line take the card down
        log.exception("control command %r failed", line.strip()[:60])
        return f"ERR internal error: {type(exc).__name__}"
    return "OK"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: ControlServer = self.server  # type: ignore[assignment]
        if server.token is not None and not self._authenticate(server.token):
            return
        while True:
            try:
                raw = self.rfile.readline(MAX_LINE + 1)
            except OSError:
                return
            if not raw:
                return
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                self._send("ERR line too long")
                return
            try:
                line = raw.decode("ascii")
            except UnicodeDecodeError:
                self._send("ERR not ASCII")
                continue
            reply = handle_line(line, server.link, server.info, server.reload)
            sent = self._send(reply)
            if reply == "OK" and line.strip().upper() == "QUIT":
                server.request_quit()  # only now: the process may exit as soon as this runs
                return
            if not sent or server.quitting.is_set():
                return

    def _authenticate(self, token: str) -> bool:
        """The connection's first line must be ``AUTH <token>``."""
        try:
            raw = self.rfile.readline(MAX_LINE + 1)
        except OSError:
            return False
        words = raw.decode("ascii", "replace").split()
        if len(words) == 2 and words[0].upper() == "AUTH" and hmac.compare_digest(words[1].encode(), token.encode()):
            return self._send("OK")
        log.warning("control connection from %s:%d refused: no valid AUTH line", *self.client_address[:2])
        self._send("ERR auth required")
        return False

    def _send(self, reply: str) -> bool:
        try:
            self.wfile.write(reply.encode("ascii") + b"\n")
            self.wfile.flush()
            return True
        except OSError:
            return False


class ControlServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, link: CardLink, info: dict[str, str], token: str | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        # the station's token (sim/context.py); from the environment a station process is given
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.link = link
        self.info = info
        self.reload: Callable[[], None] | None = None  # RELOAD: set by the card process
        self.quitting = threading.Event()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def request_quit(self) -> None:
        self.quitting.set()
        threading.Thread(target=self.shutdown, daemon=True).start()


@dataclass
class CardControl:
    """Client of one card process's control port."""

    host: str
    port: int
    timeout_s: float = 5.0
    token: str | None = None  # the station's token; None: FACEHIL_STATION_TOKEN if set (a station process)

    def __repr__(self) -> str:  # never the token
        return f"CardControl({self.host}:{self.port})"

    @classmethod
    def from_address(cls, address: str, token: str | None = None) -> "CardControl":
        """From ``"127.0.0.1:<port>"`` as a station file's ``[[cards]] control`` holds it."""
        host, _, port = address.rpartition(":")
        return cls(host or "127.0.0.1", int(port), token=token)

    def command(self, line: str) -> str:
        """Send one line (after ``AUTH <token>`` when there is a token); return the reply after
        ``OK`` (raises ControlError on ERR)."""
        token = self.token or os.environ.get(TOKEN_ENV) or None
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout_s) as s:
                replies = s.makefile("rb")
                if token:
                    s.sendall(f"AUTH {token}\n".encode("ascii"))
                    auth = replies.readline().decode("ascii").strip()
                    if auth != "OK":
                        raise ControlError(f"card control {self.host}:{self.port} refused the token: "
                                           f"{auth or 'no reply'}")
                s.sendall(line.encode("ascii") + b"\n")
                reply = replies.readline().decode("ascii").strip()
        except OSError as exc:
            raise ControlError(f"card control {self.host}:{self.port} unreachable: {exc}") from None
        if reply == "OK" or reply.startswith("OK "):
            return reply[3:]
        raise ControlError(f"card control {self.host}:{self.port}: {reply or 'no reply'}")

    def insert(self) -> None:
        self.command("INSERT")

    def remove(self) -> None:
        self.command("REMOVE")

    def coupling(self, mode: str, error_rate: float | None = None, dropout_ms: int | None = None) -> None:
        line = f"COUPLING {mode.upper()}"
        if mode.lower() == "flaky":
            line += f" {error_rate if error_rate is not None else 0.1:g}"
            if dropout_ms is not None:
                line += f" {int(dropout_ms)}"
        self.command(line)

    def status(self) -> dict[str, str]:
        return dict(kv.split("=", 1) for kv in self.command("STATUS").split())

    def reissue(self) -> None:
        self.command("REISSUE")

    def reload(self) -> None:
        self.command("RELOAD")

    def quit(self) -> None:
        self.command("QUIT")
