"""Processes a supervising session must kill if it dies without stopping them (a SIGKILLed test
run). When ``FACEHIL_REAP_FILE`` names a file, :func:`register` appends one line per process
started: ``<pid> <start time> <group|single>``. tests/reaper.py watches the session and, when it
is gone, kills every listed process that is still the one registered (same start time).

Without the variable (a user's `facehil sim up`), nothing is recorded: a station outlives the
command that started it on purpose.
"""

from __future__ import annotations

import logging
import os

import psutil

REAP_ENV = "FACEHIL_REAP_FILE"

log = logging.getLogger(__name__)


def register(pid: int, group: bool = False) -> None:
    """Record ``pid`` for the session's reaper; ``group``: it leads its own process group."""
    path = os.environ.get(REAP_ENV)
    if not path:
        return
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return  # already gone
    line = f"{pid} {started!r} {'group' if group else 'single'}\n".encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one small O_APPEND write: whole lines even from several processes
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot register pid %d for reaping in %s: %s", pid, path, exc)
