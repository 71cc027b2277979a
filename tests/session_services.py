"""What every pytest session of ours sets up first, the tests' (tests/conftest.py) and the
benches' (benches/conftest.py) alike: a reaper (tests/reaper.py) that kills every service the
session started if pytest dies unstopped, and one private pcscd for the whole session."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sim.pcscd import PcscdError, private_pcscd_for_process
from sim.reaping import REAP_ENV


def start_reaper(config) -> None:
    """Start this session's reaper before any service: every service start registers itself with
    it through ``FACEHIL_REAP_FILE`` (sim/reaping.py), in this process and in its subprocesses."""
    fd, path = tempfile.mkstemp(prefix="facehil-reap-", suffix=".list")
    os.close(fd)
    os.environ[REAP_ENV] = path
    reaper = [sys.executable, str(Path(__file__).with_name("reaper.py")), str(os.getpid()), path]
    config._facehil_reaper = subprocess.Popen(reaper, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture(scope="session")
def pcscd():
    """A private pcscd with two vpcd slots for this session (sim.pcscd.private_pcscd_for_process).

    libpcsclite reads PCSCLITE_CSOCK_NAME once per process, so every PC/SC test in the
    session shares this one instance.
    """
    try:
        with private_pcscd_for_process() as inst:
            yield inst
    except PcscdError as exc:
        pytest.fail(f"cannot start a private pcscd: {exc}")
