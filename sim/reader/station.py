"""Station component of the reference reader (sim/station.py): ``start_reader`` spawns its
process through ``ctx.spawn`` (tracked by PID), waits for its ``READY`` line and adds the
``[dut]`` section to the station file. ``spawn_ready`` is shared with sim/eligibility/station.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

READY_TIMEOUT_S = 30.0


def spawn_ready(ctx, name: str, argv: list[str], timeout_s: float = READY_TIMEOUT_S) -> dict[str, str]:
    """Spawn, then wait for ``READY k=v ...`` in the process's log; returns those fields."""
    from sim.station import StationError

    log_path = ctx.state_dir / "logs" / f"{name}.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    proc = ctx.spawn(name, argv)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_path.exists():
            with open(log_path, "rb") as fh:
                fh.seek(offset)
                for line in fh.read().decode("utf-8", "replace").splitlines():
                    if line.startswith("READY "):
                        return dict(tok.split("=", 1) for tok in line.split()[1:] if "=" in tok)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-800:] if log_path.exists() else ""
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"gave no READY within {timeout_s:.0f} s"
    raise StationError(f"{name} {state}; see {log_path}:\n{tail}")


def _pcsc_readers(ctx) -> list[str]:
    """Every vpcd slot that holds a deck card: the reader's one antenna (see sim/reader/hw.py)."""
    names = ctx.pcscd.reader_names
    slots = sorted({int(c["slot"]) for c in ctx.station.get("cards", []) if "slot" in c})
    return [names[s] for s in slots] or [ctx.station["pcsc"]["reader"]]


def start_reader(ctx) -> None:
    """The reference reader (the simulated DUT), booting firmware ``ctx.firmware``."""
    from sim.station import StationError

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
    ready = spawn_ready(ctx, "reader", ctx.python("sim.reader", *args))
    control = ready["control"]
    url = control if control.startswith("socket://") else f"serial:{control}"
    ctx.station["dut"] = {"adapter": "reference", "url": url, "supply": ready["supply"],
                          "firmware": ctx.firmware, "firmware_dir": str(Path(ctx.state_dir) / "firmware")}
    if variant:
        ctx.station["dut"]["variant"] = str(variant)
