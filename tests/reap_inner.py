"""Run only by tests/test_session_reaper.py, as an inner pytest it then SIGKILLs: starts each kind
of service the tests start (the private pcscd, a PostgreSQL cluster, Redis, a station process),
writes their PIDs to $FACEHIL_REAP_PIDS, and waits to be killed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from harness.facedata import resolve_faces
from pgcluster import pg_cluster  # noqa: F401  (fixture)
from redisserver import redis_server  # noqa: F401  (fixture)
from sim.context import SimContext


def test_start_services_then_wait_to_be_killed(pcscd, pg_cluster, redis_server, tmp_path):  # noqa: F811
    ctx = SimContext(state_dir=tmp_path, pcscd=pcscd, faces=resolve_faces())
    ctx.spawn_ready("rig", [sys.executable, "-m", "sim.rig", "--pty"])  # a station process, as sim up starts it
    pids = {"pcscd": pcscd.pid, "postgres": pg_cluster.postmaster_pid(), "redis": redis_server.proc.pid,
            "rig": ctx.processes[0].pid}
    out = Path(os.environ["FACEHIL_REAP_PIDS"])
    out.with_suffix(".tmp").write_text("\n".join(f"{k} {v}" for k, v in pids.items()))
    out.with_suffix(".tmp").rename(out)
    time.sleep(600)
