"""`python -m sim.reader`: the reference face-auth reader as a process (the simulated DUT).

    python -m sim.reader --station-dir DIR (--control socket://HOST:PORT | --pty)
        --camera URL --pcsc-reader NAME --eligibility URL [--firmware-dir DIR] [--firmware 1.4.0]
        [--reflash] [--faults a,b] [--variant pin_button=refuse,...] [--face-retries 3] [--face-timeout-ms 15000] [--no-return-to-face-mode]

Prints ``READY control=<url> supply=<host:port> touch=socket://HOST:PORT panel=http://HOST:PORT/stream.mjpg``
once the control, supply, touch and panel-video ports listen
(the reader then boots, which takes ``--boot-ms``). Writes the supply address to
``<station-dir>/reader-supply.addr`` for the rig's power relay and the touch port's to
``<station-dir>/reader-touch.addr`` for the rig's finger. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from sim.reader.assembly import SimulatedReader
from sim.reader.device import DeviceOptions
from sim.reader.firmware import DEFAULT_VERSION, FEATURES_BY_VERSION, ensure_firmware_dir, write_atomic
from sim.reader.flow import VARIANTS, Faults, FlowConfig, parse_variant
from sim.reader.transport import PtyTransport, SocketTransport

log = logging.getLogger("sim.reader")
SUPPLY_FILE = "reader-supply.addr"
TOUCH_FILE = "reader-touch.addr"  # the touch glass's port, for the rig's finger (sim/finger.py)
VARIANT_ENV = "FACEHIL_READER_VARIANT"  # default of --variant (e.g. for a whole pytest session's sim station)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.reader", description=__doc__.split("\n\n")[0])
    p.add_argument("--station-dir", type=Path, required=True, help="the simulated station's state folder")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--control", metavar="socket://HOST:PORT", help="serve the control port on TCP (PORT 0: any)")
    where.add_argument("--pty", action="store_true", help="serve the control port on a new pseudo-terminal")
    p.add_argument("--supply", default="127.0.0.1:0", metavar="HOST:PORT", help="supply port (power relay) address")
    p.add_argument("--camera", required=True, help="camera URL (e.g. http://127.0.0.1:8000/stream.mjpg)")
    p.add_argument("--pcsc-reader", required=True, action="append",
                   help='PC/SC reader name, e.g. "Virtual PCD 00 00" (repeat: one antenna over several slots)')
    p.add_argument("--eligibility", required=True, help="eligibility service URL")
    p.add_argument("--firmware-dir", type=Path, help="vendor key and signed images (default <station>/firmware)")
    p.add_argument("--state-dir", type=Path, help="the reader's storage (default <station>/reader)")
    p.add_argument("--deck", type=Path, action="append", default=[], help="deck folder(s): the printed card faces")
    p.add_argument("--pki-dir", type=Path, help="pki folder with terminal.pem/.key (default <station>/deck/pki)")
    p.add_argument("--firmware", default=DEFAULT_VERSION, choices=sorted(FEATURES_BY_VERSION),
                   help="factory firmware of an empty reader (with --reflash: of this one)")
    p.add_argument("--reflash", action="store_true", help="wipe the slots and install --firmware (factory reset)")
    p.add_argument("--faults", default="", help=f"faulty-reader options: {', '.join(Faults.names())}")
    p.add_argument("--variant", default=None,
                   help="the choices the notice leaves open, KEY=VALUE,...: "
                        + "; ".join(f"{k}={'|'.join(v)}" for k, v in VARIANTS.items())
                        + f" (default: ${VARIANT_ENV}, else the first of each)")
    p.add_argument("--face-retries", type=int, default=3)
    p.add_argument("--face-timeout-ms", type=int, default=15_000)
    p.add_argument("--screen-timeout-ms", type=int, default=60_000)
    p.add_argument("--card-reminder-ms", type=int, default=15_000)
    p.add_argument("--no-return-to-face-mode", action="store_true", help="stay in visual mode after a session")
    p.add_argument("--boot-ms", type=int, default=300)
    p.add_argument("--backend", default="dlib", help="face backend (harness.biometrics.load_backend)")
    p.add_argument("--threshold", default=None, help="match threshold or calibration JSON (default: backend's)")
    p.add_argument("--serial", default="SIM-READER-0001")
    p.add_argument("--power", choices=("on", "off"), default="on", help="power state at start")
    p.add_argument("--panel-fps", type=float, default=15.0, help="frame rate of the panel's MJPEG stream")
    p.add_argument("--log-level", default="INFO")
    return p


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    station = args.station_dir.resolve()
    firmware_dir = (args.firmware_dir or station / "firmware").resolve()
    state_dir = (args.state_dir or station / "reader").resolve()
    decks = args.deck or [station / "deck"]
    pki_dir = args.pki_dir or station / "deck" / "pki"
    try:
        faults = Faults.parse(args.faults)
        variant = parse_variant(args.variant if args.variant is not None else os.environ.get(VARIANT_ENV))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ensure_firmware_dir(firmware_dir)
    if args.reflash and (state_dir / "slots").exists():
        shutil.rmtree(state_dir / "slots")
    state_dir.mkdir(parents=True, exist_ok=True)

    from sim.reader.hw import RealHardware

    threshold = args.threshold
    if threshold is not None:
        try:
            threshold = float(threshold)
        except ValueError:
            threshold = Path(threshold)
    hardware = RealHardware(pcsc_readers=args.pcsc_reader, camera_url=args.camera, eligibility_url=args.eligibility,
                            deck_dirs=decks, pki_dir=pki_dir, reader_id=args.serial, backend=args.backend,
                            threshold=threshold)
    options = DeviceOptions(state_dir=state_dir, firmware_dir=firmware_dir, factory_version=args.firmware,
                            serial=args.serial, boot_ms=args.boot_ms, faults=faults,
                            flow_config=FlowConfig(face_retries=args.face_retries, face_timeout_ms=args.face_timeout_ms,
                                                   screen_timeout_ms=args.screen_timeout_ms,
                                                   card_reminder_ms=args.card_reminder_ms,
                                                   return_to_face_mode=not args.no_return_to_face_mode,
                                                   **variant))
    if args.pty:
        transport = PtyTransport()
    else:
        target = args.control.split("://", 1)[-1]
        transport = SocketTransport(*_hostport(target))
    reader = SimulatedReader(options, hardware, transport, *_hostport(args.supply))
    stopping = threading.Event()

    def stop(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=reader.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write_atomic(station / SUPPLY_FILE, reader.supply.address.encode())
    reader.start(power_on=args.power == "on")
    # its face (issue 13): the panel as MJPEG and the touch glass; the rig's finger finds the glass here
    from sim.reader.touch import PanelPorts

    panel = PanelPorts(reader.device, fps=args.panel_fps).start()
    write_atomic(station / TOUCH_FILE, panel.touch_url.encode())
    print(f"READY control={reader.url} supply={reader.supply.address} touch={panel.touch_url} "
          f"panel={panel.panel_url}", flush=True)
    # load the face model now (it is the reader's ROM) so the first session does not pay for it
    threading.Thread(target=hardware.matcher, name="matcher-load", daemon=True).start()
    reader.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
