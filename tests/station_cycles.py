"""`python tests/station_cycles.py N [DECK]`: the station lifecycle as a user lives it, on the
default state folder and whatever pcscd is the system one (tests/station_ns.py): N ups, each
after the previous station went down (N-1 by `sim down`, the last one's processes all SIGKILLed),
then one more up/down after the crash.

DECK, if given, is a folder of personas copied in as the station's deck (no key generation).
Prints ``CYCLE i ok`` per station that came up with the demo card powered on the reader,
``KILLED n`` after the crash, then ``DONE``; a failure prints ``FAILED <error>`` (exit 1)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time

from sim.card.control import CardControl
from sim.station import (PROCESSES_FILE, StationError, default_state_dir, read_station_token, sim_down, sim_status,
                         sim_up)

# the default layout (placer deck + reference card, demo card placed); a small deck keeps it cheap
OPTIONS = {"deck_size": 2}


def check_station() -> None:
    """Every part alive, and the placed deck card answers on the control port the file names."""
    dead = [p["name"] for p in sim_status() if not p["alive"]]
    if dead:
        raise StationError(f"parts died: {dead}")
    import tomllib

    station = tomllib.loads((default_state_dir() / "station.toml").read_text())
    token = read_station_token(default_state_dir())
    placed = [c for c in station["cards"]
              if CardControl.from_address(c["control"], token).status()["inserted"] == "1"]
    if len(placed) != 1 or CardControl.from_address(placed[0]["control"], token).status()["powered"] != "1":
        raise StationError(f"expected one powered deck card on the reader, got {placed}")


def up_down(cycles: int) -> None:
    for i in range(cycles):
        sim_up(options=OPTIONS)
        try:
            check_station()
        finally:
            sim_down()
        print(f"CYCLE {i} ok", flush=True)


def killed_then_up(cycle: int) -> None:
    """A station whose processes were all SIGKILLed (a crash, the OOM killer), then `sim up`."""
    sim_up(options=OPTIONS)
    try:
        check_station()
    except BaseException:
        sim_down()
        raise
    print(f"CYCLE {cycle} ok", flush=True)
    records = json.loads((default_state_dir() / PROCESSES_FILE).read_text())
    for rec in records:
        os.kill(rec["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(p["alive"] for p in sim_status()) and time.monotonic() < deadline:
        time.sleep(0.05)
    print("KILLED", len(records), flush=True)
    sim_up(options=OPTIONS)
    try:
        check_station()
    finally:
        sim_down()
    print("UP AFTER KILL ok", flush=True)


def main() -> int:
    if len(sys.argv) > 2:
        shutil.copytree(sys.argv[2], default_state_dir() / "deck")
    try:
        cycles = int(sys.argv[1])
        up_down(cycles - 1)
        killed_then_up(cycles - 1)
    except StationError as exc:
        print(f"FAILED {exc}", flush=True)
        return 1
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
