"""Station component of the reference reader (sim/station.py): ``start_reader`` spawns its
process through ``ctx.spawn_ready`` (tracked by PID), and adds the ``[dut]`` section to the
station file."""

from __future__ import annotations

import os
from pathlib import Path

from sim.context import SimContext, StationError


def _pcsc_readers(ctx) -> list[str]:
    """Every vpcd slot that holds a deck card: the reader's one antenna (see sim/reader/hw.py)."""
    names = ctx.pcscd.reader_names
    slots = sorted({int(c["slot"]) for c in ctx.station.get("cards", []) if "slot" in c})
    return [names[s] for s in slots] or [ctx.station["pcsc"]["reader"]]


def start_reader(ctx: SimContext) -> None:
    """The reference reader (the simulated DUT), booting firmware ``ctx.firmware``."""
    camera = ctx.station.get("camera", {}).get("url")
    eligibility = ctx.station.get("eligibility", {}).get("url")
    if not camera or not eligibility:
        raise StationError("the reader needs the camera and eligibility components started first")
    args = ["--station-dir", str(ctx.state_dir), "--camera", camera, "--eligibility", eligibility,
            "--firmware", ctx.firmware, "--reflash"]
    if ctx.options.get("reader_transport") == "socket":
        args += ["--control", "socket://127.0.0.1:0"]
    else:
        args += ["--pty"]
    for name in _pcsc_readers(ctx):
        args += ["--pcsc-reader", name]
    if ctx.options.get("reader_faults"):
        args += ["--faults", str(ctx.options["reader_faults"])]
    # the notice's open choices (sim/reader/flow.py VARIANTS): a station option, else the environment
    variant = ctx.options.get("reader_variant") or os.environ.get("FACEHIL_READER_VARIANT")
    if variant:
        args += ["--variant", str(variant)]
    ready = ctx.spawn_ready("reader", ctx.python("sim.reader", *args))
    if "control" not in ready or "supply" not in ready:
        raise StationError(f"the reader announced no control and supply ports: READY {ready}")
    control = ready["control"]
    url = control if control.startswith("socket://") else f"serial:{control}"
    ctx.station["dut"] = {"adapter": "reference", "url": url, "supply": ready["supply"],
                          "firmware": ctx.firmware, "firmware_dir": str(Path(ctx.state_dir) / "firmware")}
    if variant:
        ctx.station["dut"]["variant"] = str(variant)
    for key in ("panel", "touch"):  # its face (issue 13): panel video and touch glass, hardware.md 11
        if key in ready:
            ctx.station["dut"][key] = ready[key]
