"""`facehil sim up` / `sim down`, ten times in a row, then an up after a SIGKILLed station (issue 10 §1).

The same run as tests/test_station_lifecycle.py (tests/station_cycles.py in a namespace with its
own system pcscd, the *default* state folder under a temporary HOME), with
``FACEHIL_STATION_CYCLES`` cycles (default 10) instead of the test's 2. Prints the goal as MET or
MISSED and the time per cycle.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import station_ns  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CYCLES = int(os.environ.get("FACEHIL_STATION_CYCLES", "10"))


@pytest.mark.timeout(1800)
def test_ten_up_down_cycles_then_up_after_sigkill(tmp_path):
    reason = station_ns.missing()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    out = station_ns.run_with_system_pcscd(
        station_ns.python(str(ROOT / "tests" / "station_cycles.py"), str(CYCLES)), tmp_path, timeout_s=1700)
    elapsed_s = time.monotonic() - started
    ok = [line for line in out.stdout.splitlines() if line.startswith("CYCLE")]
    met = out.returncode == 0 and len(ok) == CYCLES and "UP AFTER KILL ok" in out.stdout
    print(f"\n{CYCLES} up/down cycles + up after SIGKILL on the default folder, system pcscd: "
          f"{len(ok)}/{CYCLES} cycles ok, {elapsed_s:.0f} s ({elapsed_s / (CYCLES + 2):.1f} s per up/down): "
          f"{'MET' if met else 'MISSED'}")
    assert met, out.stdout[-3000:] + out.stderr[-3000:]
