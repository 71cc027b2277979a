"""A station process's READY line is written in one piece.

Regression: with PYTHONUNBUFFERED=1 (set in this machine's environment and by `facehil run` for
its pytest child, and inherited by station processes), print() wrote the READY text and its
newline in two writes, and a logging thread's line landed between them in the shared log:
``READY control=441012026-11-29 ...`` and a station that would not start.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sim.context import SimContext
from sim.pcscd import PcscdInstance

REPORT_BUFFERING = "import sys; print(f'READY write_through={int(sys.stdout.write_through)}', flush=True)"


def _context(tmp_path: Path) -> SimContext:
    pcscd = PcscdInstance(socket_path=tmp_path / "pcscd.comm", vpcd_port=35963)
    return SimContext(state_dir=tmp_path, pcscd=pcscd, faces=None)  # type: ignore[arg-type]


def test_station_env_is_not_unbuffered(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    assert "PYTHONUNBUFFERED" not in _context(tmp_path).env()


def test_station_process_prints_ready_buffered(tmp_path, monkeypatch):
    """Through the real spawn and READY reader: the child's stdout is buffered, so print(...,
    flush=True) is one write of text and newline together."""
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # as under `facehil run`
    ctx = _context(tmp_path)
    fields = ctx.spawn_ready("buffering", [sys.executable, "-c", REPORT_BUFFERING], timeout_s=30)
    assert fields == {"write_through": "0"}
