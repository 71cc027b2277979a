"""`python tests/reaper.py WATCH_PID FILE`: wait until process WATCH_PID is gone, then SIGKILL
every process listed in FILE (sim/reaping.py) that is still the one registered.

tests/conftest.py starts one per test session, in its own session (a signal to pytest's process
group does not reach it), so services the tests started die with the session even when pytest
itself is SIGKILLed and runs no teardown. After a normal end the list holds only stopped
processes, and the reaper just exits. A parent-death signal alone would not do: pg_ctl
daemonizes the PostgreSQL server, so pytest is not its parent.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

import psutil

POLL_S = 0.5  # only where pidfd_open is missing


def wait_gone(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(POLL_S)
        return
    select.select([fd], [], [])  # readable once the process has exited
    os.close(fd)


def entries(path: str) -> list[tuple[int, float, bool]]:
    out = []
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[0].isdigit():
                    out.append((int(parts[0]), float(parts[1]), parts[2] == "group"))
    except (OSError, ValueError):
        pass
    return out


def still_ours(pid: int, started: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - started) < 0.5
    except psutil.Error:
        return False


def reap(path: str) -> int:
    killed = 0
    for pid, started, group in reversed(entries(path)):
        if not still_ours(pid, started):
            continue
        try:
            os.killpg(pid, signal.SIGKILL) if group else os.kill(pid, signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def main() -> int:
    watch, path = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is pytest's to handle
    wait_gone(watch)
    killed = reap(path)
    if killed:
        print(f"reaper: killed {killed} process(es) the test session left behind", file=sys.stderr)
    try:
        os.unlink(path)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
