"""`python -m sim.eligibility --pki-dir DIR [--db URL] [--deck DIR] [--host H] [--port N]`

Prints ``READY url=http://HOST:PORT`` once listening; serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from sim.eligibility.service import EligibilityService, make_server

log = logging.getLogger("sim.eligibility")


def seed_from_deck(service: EligibilityService, deck: Path) -> int:
    """Register the deck's cards marked ``registered_for_insurance``; returns how many."""
    from sim.card.persona import Persona, PersonaError

    count = 0
    for path in sorted((deck / "personas").glob("*.toml")):
        try:
            persona = Persona.load(path)
        except (PersonaError, OSError) as exc:
            log.warning("persona %s skipped: %s", path.name, exc)
            continue
        cert = (persona.card_dir / "auth.pem") if persona.card_dir else None
        if not persona.registered_for_insurance or cert is None or not cert.exists():
            continue
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
        count += service.seed_registration(der)
    return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.eligibility", description=__doc__.split("\n\n")[0])
    p.add_argument("--pki-dir", type=Path, required=True, help="the station's pki folder (jpki-ca.pem, revoked.txt)")
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: sqlite in --state-dir)")
    p.add_argument("--state-dir", type=Path, default=Path("."), help="where the default SQLite file lives")
    p.add_argument("--deck", type=Path, help="deck folder: seed registrations of its registered personas")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--register-delay-ms", type=int, default=0, help="answer each registration this late (N17)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    if not (args.pki_dir / "jpki-ca.pem").exists():
        print(f"error: {args.pki_dir / 'jpki-ca.pem'} does not exist", file=sys.stderr)
        return 2
    args.state_dir.mkdir(parents=True, exist_ok=True)
    db = args.db or f"sqlite:///{(args.state_dir / 'eligibility.sqlite').resolve()}"
    service = EligibilityService(args.pki_dir, db, register_delay_ms=args.register_delay_ms)
    if args.deck:
        log.info("seeded %d registration(s) from %s", seed_from_deck(service, args.deck), args.deck)
    server = make_server(service, args.host, args.port)
    host, port = server.server_address[:2]
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"READY url=http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
