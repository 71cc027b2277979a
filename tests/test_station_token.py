"""Issue 10 §4: a simulated station's TCP line ports (rig, reader control: sim/line_port.py) take
only a host holding the station's token, and a second host is refused or announced, never
silently put in place of the harness's connection."""

from __future__ import annotations

import logging
import os
import socket
import threading

import pytest

from drivers.rig import RigController, RigDisconnected, RigUnavailable
from drivers.station_auth import TOKEN_ENV
from sim.line_port import SocketPort
from sim.rig_process import SimProcess, rig_url

TOKEN = "ab" * 32


@pytest.fixture
def echo_port(request):
    """A SocketPort whose handler answers ``echo <line>``; the param is its token (None: open)."""
    port = SocketPort(256, token=request.param)
    thread = threading.Thread(target=port.serve, args=(lambda line: b"echo " + (line or b"?") + b"\n",), daemon=True)
    thread.start()
    yield port
    port.stop()
    thread.join(timeout=2)
    port.close()


def _connect(port: SocketPort) -> tuple[socket.socket, object]:
    s = socket.create_connection((port.host, port.port), timeout=5)
    return s, s.makefile("rb")


@pytest.mark.parametrize("echo_port", [TOKEN], indirect=True)
def test_a_host_without_the_token_is_refused_and_never_reaches_the_handler(echo_port):
    for first in (b"STATUS\n", b"AUTH " + b"0" * 64 + b"\n", b"AUTH\n"):
        s, rx = _connect(echo_port)
        with s:
            s.sendall(first + b"PLACE slot=1\n")
            assert rx.readline() == b"AUTH REFUSED\n"
            assert rx.readline() == b""  # closed; no "echo" ever came back


@pytest.mark.parametrize("echo_port", [TOKEN], indirect=True)
def test_the_token_holder_is_served_and_a_stranger_does_not_disturb_it(echo_port, caplog):
    caplog.set_level(logging.WARNING, logger="sim.line_port")
    host, rx = _connect(echo_port)
    with host:
        host.sendall(f"AUTH {TOKEN}\n".encode())
        assert rx.readline() == b"AUTH OK\n"
        host.sendall(b"HELLO\n")
        assert rx.readline() == b"echo HELLO\n"
        stranger, srx = _connect(echo_port)
        with stranger:
            stranger.sendall(b"HELLO\n")
            assert srx.readline() == b"AUTH REFUSED\n"
        host.sendall(b"STATUS\n")
        assert rx.readline() == b"echo STATUS\n"  # still the host
    assert "refused: no valid AUTH line" in caplog.text


@pytest.mark.parametrize("echo_port", [None], indirect=True)
def test_without_a_token_a_second_host_replaces_the_first_and_it_is_announced(echo_port, caplog):
    caplog.set_level(logging.WARNING, logger="sim.line_port")
    first, rx1 = _connect(echo_port)
    with first:
        first.sendall(b"A\n")
        assert rx1.readline() == b"echo A\n"
        second, rx2 = _connect(echo_port)
        with second:
            second.sendall(b"B\n")
            assert rx2.readline() == b"echo B\n"
            assert rx1.readline() == b""  # the first host sees its connection end, not silence
    assert "replaces the connected host" in caplog.text


@pytest.mark.timeout(60)
def test_the_rig_driver_sends_the_token_of_a_simulated_station(monkeypatch):
    env = dict(os.environ, **{TOKEN_ENV: TOKEN})
    with SimProcess("sim.rig", "--socket", "127.0.0.1:0", "--card", "1", env=env) as p:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
        with pytest.raises((RigUnavailable, RigDisconnected)):  # the port refuses and hangs up
            RigController(rig_url(p), timeout_s=2.0).open()
        monkeypatch.setenv(TOKEN_ENV, "0" * 64)
        with pytest.raises(RigUnavailable, match="refused the station token: AUTH REFUSED"):
            RigController(rig_url(p), timeout_s=2.0).open()
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        with RigController(rig_url(p), timeout_s=5.0) as rig:
            assert rig.status() is not None


def _post(control: str, path: str, payload: dict, token: str | None) -> int:
    import json
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    req = urllib.request.Request(control + path, data=json.dumps(payload).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.timeout(60)
def test_the_station_presenter_takes_orders_only_with_the_token_and_the_rig_has_it(monkeypatch):
    from harness.facedata import list_identities, resolve_faces

    env = dict(os.environ, **{TOKEN_ENV: TOKEN})
    who = list_identities(resolve_faces())[0].name
    with SimProcess("sim.camera", "--fps", "5", env=env) as cam:
        control = cam.ready["control"]
        assert _post(control, "/subject", {"mode": "subject", "id": who}, None) == 401
        assert _post(control, "/lighting", {"lux": 60}, "0" * 64) == 401
        assert _post(control, "/lighting", {"lux": 60}, TOKEN) == 200
        with SimProcess("sim.rig", "--socket", "127.0.0.1:0", "--presenter", control, env=env) as rp:
            monkeypatch.setenv(TOKEN_ENV, TOKEN)
            with RigController(rig_url(rp), timeout_s=5.0) as rig:
                rig.show_subject(who)  # the rig's presenter link sends the token it was given
