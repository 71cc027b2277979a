"""The simulated rig controller: `python -m sim.rig --pty | --socket HOST:PORT [...]`.

Prints ``READY pty=/dev/pts/N`` or ``READY socket=HOST:PORT`` once it listens, then serves
the rig protocol of hardware.md until SIGTERM. Its actuators drive the rest of the simulated
station: deck cards through their control ports (``--card SLOT=HOST:PORT``), the reader's
power through its supply port (``--supply`` / ``--supply-file``) and the subject presenter
through its HTTP control (``--presenter``).

Also the station component ``start_rig(ctx)`` for sim/station.py.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from sim.context import SimContext, StationError
from sim.rig_firmware import FIRMWARE, RigFirmware
from sim.rig_links import CardLink, PresenterLink, SupplyLink, parse_hostport
from sim.rig_model import OperatingVolume
from sim.rig_protocol import PROTOCOL_VERSION, event
from sim.rig_transport import PtyTransport, SocketTransport

log = logging.getLogger("sim.rig")

SUPPLY_FILE = "reader-supply.addr"  # the reader component writes HOST:PORT here (docs/interfaces.md)


def _card_arg(text: str) -> tuple[int, CardLink | None]:
    slot, sep, addr = text.partition("=")
    if not slot.isdigit():
        raise argparse.ArgumentTypeError(f"expected SLOT[=HOST:PORT], got {text!r}")
    if not sep:
        return int(slot), None  # a deck slot with no card process: physical model only
    host, port = parse_hostport(addr)
    return int(slot), CardLink(int(slot), host, port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.rig", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument("--socket", metavar="HOST:PORT", help="serve on TCP (PORT 0: any free port)")
    p.add_argument("--card", action="append", type=_card_arg, default=[], metavar="SLOT[=HOST:PORT]",
                   help="a deck slot and its card process's control port (repeatable)")
    p.add_argument("--supply", metavar="HOST:PORT", help="the reader's supply port")
    p.add_argument("--supply-file", type=Path, help="file holding the supply port's HOST:PORT (read lazily)")
    p.add_argument("--presenter", metavar="URL", help="subject presenter control, e.g. http://127.0.0.1:8000")
    p.add_argument("--serial", default="SIM-RIG-0001", help="serial number reported by HELLO")
    # the finger over the reader's panel (issue 13, sim/finger.py): fitted when it has a glass to touch
    p.add_argument("--finger-touch-file", type=Path, help="file holding the reader's touch port (read lazily)")
    p.add_argument("--finger-mounting", default=None, metavar="ROT_DEG,DX_MM,DY_MM",
                   help="the finger gantry's hidden mounting error (default 0.6,0.9,-0.6)")
    p.add_argument("--finger-grbl", action="store_true", help="also serve the finger as Grbl G-code on its own pty")
    p.add_argument("--log-level", default="INFO")
    return p


def _finger(args):
    """The finger (and its Grbl line, served on a thread), or (None, None) when not fitted."""
    if args.finger_touch_file is None and not args.finger_grbl:
        return None, None
    import threading

    from sim.finger import Finger, GRBL_BANNER, GrblLine, Mounting, TouchLink
    from sim.line_port import PtyPort

    mounting = Mounting.parse(args.finger_mounting) if args.finger_mounting else Mounting()
    finger = Finger(TouchLink(args.finger_touch_file), mounting)
    if not args.finger_grbl:
        return finger, None
    grbl = PtyPort(256)
    threading.Thread(target=grbl.serve, args=(GrblLine(finger).handle,), name="finger-grbl", daemon=True).start()
    grbl.send_bytes(GRBL_BANNER)  # lost if nobody listens, as on a UART
    return finger, grbl


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    if args.socket:
        host, port = parse_hostport(args.socket)
        transport = SocketTransport(host, port)
    else:
        transport = PtyTransport()
    finger, grbl = _finger(args)
    firmware = RigFirmware(volume=OperatingVolume(), cards=dict(args.card),
                           supply=SupplyLink(args.supply, args.supply_file),
                           presenter=PresenterLink(args.presenter), send_event=transport.send,
                           serial=args.serial, finger=finger)
    firmware.adopt()
    signal.signal(signal.SIGTERM, lambda *_: transport.stop())
    signal.signal(signal.SIGINT, lambda *_: transport.stop())
    transport.send(event("BOOT", fw=FIRMWARE, proto=PROTOCOL_VERSION))  # lost if nobody listens, as on a UART
    print(f"READY {transport.describe()}" + (f" finger_grbl={grbl.path}" if grbl else ""), flush=True)
    try:
        transport.serve(firmware.handle)
    finally:
        firmware.shutdown()
        transport.close()
        if grbl is not None:
            grbl.stop()
    return 0


# -- station component -------------------------------------------------------------------------
def _card_control(card: dict) -> str | None:
    control = card.get("control")
    if control is None:
        return None
    if isinstance(control, int) or str(control).isdigit():
        return f"127.0.0.1:{int(control)}"
    text = str(control)
    return text.split("://", 1)[-1]


def start_rig(ctx: SimContext) -> None:
    """Station component: the rig controller on a pty (``ctx.options["rig_transport"]="socket"``
    for TCP), wired to the deck's card processes, the presenter and the reader's supply."""
    argv = ["--socket", "127.0.0.1:0"] if ctx.options.get("rig_transport") == "socket" else ["--pty"]
    for card in ctx.station.get("cards", []):
        slot = card.get("placer_slot")
        if slot is None:
            continue
        control = _card_control(card)
        argv += ["--card", f"{slot}={control}" if control else str(slot)]
    presenter = ctx.station.get("camera", {}).get("control")
    if presenter:
        argv += ["--presenter", presenter]
    supply = ctx.options.get("reader_supply")
    argv += ["--supply", supply] if supply else ["--supply-file", str(ctx.state_dir / SUPPLY_FILE)]
    # the finger over the reader's panel; the reader (started later) writes its touch port here
    argv += ["--finger-touch-file", str(ctx.state_dir / "reader-touch.addr"), "--finger-grbl"]
    if ctx.options.get("finger_mounting"):
        argv += ["--finger-mounting", str(ctx.options["finger_mounting"])]
    ready = ctx.spawn_ready("rig", ctx.python("sim.rig", *argv))
    if "pty" in ready:
        url = f"serial:{ready['pty']}"
    elif "socket" in ready:
        url = f"socket://{ready['socket']}"
    else:
        raise StationError(f"the rig controller announced neither a pty nor a socket: READY {ready}")
    ctx.station["rig"] = {"url": url}
    if "finger_grbl" in ready:  # [rig.finger] (hardware.md 11.3): which line drives the finger
        grbl = f"serial:{ready['finger_grbl']}"
        protocol = str(ctx.options.get("finger_protocol") or "facehil")
        if protocol not in ("facehil", "grbl"):
            raise StationError(f"finger_protocol must be facehil or grbl, not {protocol!r}")
        ctx.station["rig"]["finger"] = {"protocol": protocol, "port": grbl if protocol == "grbl" else url,
                                        "grbl": grbl}


if __name__ == "__main__":
    sys.exit(main())
