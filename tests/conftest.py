"""Shared test fixtures: one private pcscd for the whole session (see docs/interfaces.md)."""

from __future__ import annotations

import os

import pytest

from sim.pcscd import SOCKET_ENV, PcscdError, start_private_pcscd


@pytest.fixture(scope="session")
def pcscd():
    """A private pcscd with two vpcd slots, started for this test session and stopped after it.

    libpcsclite reads PCSCLITE_CSOCK_NAME once per process, so every PC/SC test in the
    session shares this one instance.
    """
    try:
        inst = start_private_pcscd()
    except PcscdError as exc:
        pytest.fail(f"cannot start a private pcscd: {exc}")
    previous = os.environ.get(SOCKET_ENV)
    os.environ.update(inst.client_env())
    yield inst
    inst.stop()
    if previous is None:
        os.environ.pop(SOCKET_ENV, None)
    else:
        os.environ[SOCKET_ENV] = previous
