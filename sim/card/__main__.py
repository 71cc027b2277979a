"""`python -m sim.card serve --persona FILE --state FILE --vpcd HOST:PORT [--vpcd-netns PATH] --control-port N [--removed]`

One process per card. Prints ``READY control=<port>`` on stdout once the control port
listens (``--control-port 0`` picks a free port). SIGTERM and QUIT stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
from pathlib import Path

from sim.card.control import ControlServer
from sim.card.issue import IssueError
from sim.card.layout import build_card
from sim.card.persona import Persona, PersonaError
from sim.card.pki import PkiError
from sim.card.vpcd import CardLink

log = logging.getLogger("sim.card")


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m sim.card", description="Serve a simulated My Number Card.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve one card to pcscd through vpcd")
    s.add_argument("--persona", type=Path, required=True)
    s.add_argument("--state", type=Path, required=True, help="card state file (retry counters)")
    s.add_argument("--vpcd", type=_hostport, default=("127.0.0.1", 35963))
    s.add_argument("--vpcd-netns", type=Path, default=None,
                   help="the network namespace vpcd listens in (a private pcscd's /proc/PID/ns/net)")
    s.add_argument("--control-port", type=int, default=0)
    s.add_argument("--removed", action="store_true", help="start with the card off the reader")
    s.add_argument("--seed", type=int, default=None, help="seed for flaky coupling")
    s.add_argument("--verbose", "-v", action="store_true")
    return ap.parse_args(argv)


def serve(args: argparse.Namespace) -> int:
    try:
        persona = Persona.load(args.persona)
        card = build_card(persona, args.state)
    except (PersonaError, IssueError, PkiError, OSError, ValueError) as exc:
        print(f"ERROR {exc}", file=sys.stderr, flush=True)
        return 2
    host, port = args.vpcd
    link = CardLink(card, host, port, inserted=not args.removed, rng=random.Random(args.seed), netns=args.vpcd_netns)
    info = {"persona": persona.id, "profile": persona.profile}
    try:
        server = ControlServer(args.control_port, link, info)
    except OSError as exc:
        print(f"ERROR control port {args.control_port}: {exc}", file=sys.stderr, flush=True)
        return 2
    from sim.card.switch import reload_card  # RELOAD: the profile switched in place (N4)

    server.reload = lambda: reload_card(link, args.persona, args.state, info)
    link_thread = threading.Thread(target=link.run, name="vpcd-link", daemon=True)
    link_thread.start()
    link.started.wait()
    if link.start_error is not None:
        print(f"ERROR the card cannot reach vpcd: {link.start_error}", file=sys.stderr, flush=True)
        server.server_close()
        return 2
    signal.signal(signal.SIGTERM, lambda *_: server.request_quit())
    print(f"READY control={server.port}", flush=True)
    log.info("card %s (%s) on vpcd %s:%d, control port %d", persona.id, persona.profile, host, port, server.port)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        link.stop()
        link_thread.join(timeout=2.0)
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
