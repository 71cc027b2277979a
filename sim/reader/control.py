"""The reference firmware's side of the control port: commands in, ACK/NAK out (hardware.md).

``ControlPort(device).handle(raw_line)`` returns the reply lines for one received line. While
the device is off or booting it returns nothing at all: a dead device does not answer.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from typing import Any

from drivers.reader import PROTOCOL_VERSION, decode_fields, format_ack, format_nak, unquote
from sim.reader.device import ReaderDevice
from sim.reader.flow import EnterPin, Press, Staff
from sim.reader.slots import FirmwareError

log = logging.getLogger(__name__)

STAFF_ACTIONS = {"VISUAL": "visual", "CONFIRM": "confirm", "REJECT": "reject", "FACE": "face"}
ACTION_TIMEOUT_S = 10.0
PROGRESS_STEP_PCT = 10


class _Nak(Exception):
    def __init__(self, code: str, message: str, **fields: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields


class ControlPort:
    def __init__(self, device: ReaderDevice):
        self.device = device
        self._last_progress_pct = -1

    def handle(self, raw: bytes) -> list[str]:
        if not self.device.booted:
            return []
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            return [format_nak(None, "SYNTAX", "non-ASCII bytes in the line")]
        tokens = line.strip().split()
        if not tokens:
            return []  # a bare LF: the host resynchronising
        try:
            seq = int(tokens[0])
            if not 1 <= seq <= 65535:
                raise ValueError
        except ValueError:
            return [format_nak(None, "SYNTAX", "a command starts with a sequence number 1..65535")]
        if len(tokens) < 2:
            return [format_nak(seq, "SYNTAX", "missing command")]
        verb, args = tokens[1].upper(), tokens[2:]
        handler = getattr(self, f"_cmd_{verb.lower()}", None)
        if handler is None:
            return [format_nak(seq, "UNKNOWN", f"unknown command {verb}")]
        try:
            fields = handler(args)
        except _Nak as nak:
            return [format_nak(seq, nak.code, nak.message, nak.fields)]
        except FirmwareError as exc:
            self.device.emit("fw", state="failed", code=exc.code, msg=exc.message)
            return [format_nak(seq, exc.code, exc.message, exc.fields)]
        after = fields.pop("_after", None) if fields else None
        out = [format_ack(seq, fields)]
        if after is not None:
            # e.g. REBOOT: acknowledge first, then go dark
            threading.Timer(0.05, after).start()
        return out

    # -- session and queries ----------------------------------------------------------------------
    def _cmd_hello(self, args: list[str]) -> dict:
        if args and args[0] != str(PROTOCOL_VERSION):
            raise _Nak("PROTO", f"this reader speaks protocol {PROTOCOL_VERSION}", proto=PROTOCOL_VERSION)
        info = self.device.info_fields()
        return {"proto": PROTOCOL_VERSION, "vendor": info["vendor"], "model": info["model"], "fw": info["fw"],
                "serial": info["serial"], "t_ms": self.device.uptime_ms()}

    def _cmd_ping(self, args: list[str]) -> dict:
        return {"t_ms": self.device.uptime_ms()}

    def _cmd_info(self, args: list[str]) -> dict:
        return {"proto": PROTOCOL_VERSION, **self.device.info_fields()}

    def _cmd_screen(self, args: list[str]) -> dict:
        return self.device.screen_fields()

    def _cmd_events(self, args: list[str]) -> dict:
        try:
            start = int(args[0]) if args else 1
        except ValueError:
            raise _Nak("ARGS", "EVENTS takes the first event number to resend") from None
        lines = self.device.replay(start)
        for line in lines:
            self.device._send_line(line)
        return {"count": len(lines)}

    # -- patient and staff ------------------------------------------------------------------------
    def _act(self, inp) -> dict:
        outcome = self.device.submit(inp, ACTION_TIMEOUT_S)
        if outcome is None:
            raise _Nak("BUSY", "the reader did not take the input in time")
        if not outcome.ok:  # msg: the patient's (Japanese) text; msg_en: the English (hardware.md 6.2)
            raise _Nak(outcome.code, outcome.message, msg_en=outcome.message_en or None)
        return {"screen": self.device.screen_fields().get("screen", "")}

    def _cmd_press(self, args: list[str]) -> dict:
        if len(args) != 1:
            raise _Nak("ARGS", "PRESS takes one button id")
        return self._act(Press(unquote(args[0])))

    def _cmd_pin(self, args: list[str]) -> dict:
        if len(args) != 1:
            raise _Nak("ARGS", "PIN takes the digits")
        return self._act(EnterPin(unquote(args[0])))

    def _cmd_staff(self, args: list[str]) -> dict:
        action = STAFF_ACTIONS.get(args[0].upper()) if len(args) == 1 else None
        if action is None:
            raise _Nak("ARGS", f"STAFF takes one of {', '.join(STAFF_ACTIONS)}")
        return self._act(Staff(action))

    # -- firmware -----------------------------------------------------------------------------
    def _cmd_reboot(self, args: list[str]) -> dict:
        return {"_after": self.device.reboot}

    def _cmd_fw(self, args: list[str]) -> dict:
        if not args:
            raise _Nak("ARGS", "FW takes BEGIN, CHUNK, END, COMMIT, ABORT or STATUS")
        sub, rest = args[0].upper(), args[1:]
        slots = self.device.slots
        if slots is None:
            raise _Nak("FW_STATE", "firmware storage not ready")
        with self.device.fw_lock:
            if sub == "BEGIN":
                f = decode_fields(rest)
                try:
                    size = int(f.get("size", ""))
                except ValueError:
                    raise _Nak("FW_ARGS", "FW BEGIN needs size=<bytes> sha256=<hex> sig=<base64>") from None
                slots.begin(size, f.get("sha256", ""), f.get("sig", ""), f.get("allow_downgrade") == "1")
                self._last_progress_pct = -1
                self.device.emit("fw", state="receiving", size=size)
                return {"size": size}
            if sub == "CHUNK":
                if len(rest) != 2:
                    raise _Nak("FW_ARGS", "FW CHUNK takes <offset> <base64>")
                try:
                    offset = int(rest[0])
                    data = base64.b64decode(rest[1], validate=True)
                except (ValueError, binascii.Error):
                    raise _Nak("FW_ARGS", "bad offset or base64") from None
                received = slots.chunk(offset, data)
                self._progress(received, slots.upload.size if slots.upload else received)
                return {"received": received}
            if sub == "END":
                manifest = slots.end()
                self.device.emit("fw", state="verified", version=manifest.version)
                return {"version": manifest.version, "features": ",".join(manifest.features)}
            if sub == "COMMIT":
                slot = slots.commit()
                self.device.emit("fw", state="committed", slot=slot)
                return {"slot": slot}
            if sub == "ABORT":
                slots.abort()
                self.device.emit("fw", state="aborted")
                return {}
            if sub == "STATUS":
                return slots.status()
        raise _Nak("ARGS", f"unknown FW subcommand {sub}")

    def _progress(self, received: int, size: int) -> None:
        pct = received * 100 // max(1, size)
        step = pct // PROGRESS_STEP_PCT * PROGRESS_STEP_PCT
        if step > self._last_progress_pct:
            self._last_progress_pct = step
            self.device.emit("fw", state="progress", received=received, size=size, pct=step)
