"""Station component of the eligibility service (sim/station.py): ``start_eligibility``."""

from __future__ import annotations

import os

from sim.context import SimContext, StationError

DEFAULT_REGISTER_DELAY_MS = 800  # the simulated service answers a registration this late (N17)


def start_eligibility(ctx: SimContext) -> None:
    """The eligibility service, seeded with the deck's registered cards."""
    pki = ctx.station.get("pki", {}).get("dir") or str(ctx.state_dir / "deck" / "pki")
    state = ctx.state_dir / "eligibility"
    argv = ctx.python("sim.eligibility", "--pki-dir", pki, "--state-dir", str(state),
                      "--deck", str(ctx.state_dir / "deck"))
    if ctx.options.get("eligibility_db"):
        argv += ["--db", str(ctx.options["eligibility_db"])]
    # N17: registration takes a while; a station option, else the environment (a pytest session's
    # station), else a real service's pace: long enough that the waiting screen can be seen
    delay_ms = ctx.options.get("eligibility_register_delay_ms")
    if delay_ms is None:
        delay_ms = os.environ.get("FACEHIL_SIM_REGISTER_DELAY_MS", DEFAULT_REGISTER_DELAY_MS)
    if int(delay_ms):
        argv += ["--register-delay-ms", str(int(delay_ms))]
    ready = ctx.spawn_ready("eligibility", argv)
    if "url" not in ready:
        raise StationError(f"the eligibility service announced no url: READY {ready}")
    ctx.station["eligibility"] = {"url": ready["url"]}
