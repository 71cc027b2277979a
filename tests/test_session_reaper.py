"""Services the tests start die with the test session even when pytest is SIGKILLed (no teardown
runs): tests/conftest.py starts a reaper (tests/reaper.py) that every service registers with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
REAP_WITHIN_S = 5.0  # from pytest's death to every service gone


def _gone(pid: int, started: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() == psutil.STATUS_ZOMBIE or abs(p.create_time() - started) > 0.5
    except psutil.Error:
        return True


@pytest.mark.timeout(240)
def test_services_die_when_pytest_is_sigkilled(tmp_path):
    pids_file = tmp_path / "pids"
    env = dict(os.environ, FACEHIL_REAP_PIDS=str(pids_file))
    env.pop("PCSCLITE_CSOCK_NAME", None)
    inner = subprocess.Popen([sys.executable, "-m", "pytest", str(ROOT / "tests" / "reap_inner.py"), "-q", "-s",
                              "-p", "no:cacheprovider", "--timeout", "900"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not pids_file.exists():
            if inner.poll() is not None:
                pytest.fail(f"inner pytest ended early:\n{inner.stdout.read().decode(errors='replace')[-3000:]}")
            assert time.monotonic() < deadline, "inner pytest never started its services"
            time.sleep(0.1)
        pids = {name: int(pid) for name, pid in (line.split() for line in pids_file.read_text().splitlines())}
        started = {name: psutil.Process(pid).create_time() for name, pid in pids.items()}
        assert set(pids) == {"pcscd", "postgres", "redis", "rig"}
        os.kill(inner.pid, signal.SIGKILL)  # pytest alone: no fixture teardown, no atexit
        inner.wait(timeout=10)
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < REAP_WITHIN_S:
            alive = [n for n, pid in pids.items() if not _gone(pid, started[n])]
            if not alive:
                break
            time.sleep(0.05)
        assert not alive, f"still running {REAP_WITHIN_S:.0f} s after pytest was SIGKILLed: {alive}"
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
        if inner.stdout:
            inner.stdout.close()
