"""The private pcscd really serves two vpcd slots that PC/SC clients can see, and no network reaches them."""

import socket

import pytest
from smartcard.System import readers

from sim.netns import tcp_listening


def test_private_pcscd_lists_two_virtual_readers(pcscd):
    names = [str(r) for r in readers()]
    assert names == pcscd.reader_names
    assert pcscd.vpcd_listening(0) and pcscd.vpcd_listening(1)


@pytest.mark.parametrize("slot", [0, 1])
def test_private_vpcd_ports_are_off_the_host_network(pcscd, slot):
    """vpcd binds every interface (hardware.md 9.1): the private pcscd's live in a namespace that
    holds only a loopback. From the host no interface has them, and a connection (which would
    insert a card) is refused."""
    port = pcscd.slot_port(slot)
    assert pcscd.netns is not None and pcscd.netns.exists()
    assert tcp_listening(port, pcscd.pid) and not tcp_listening(port)
    for host in {"127.0.0.1", socket.gethostbyname(socket.gethostname())}:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=2).close()


def test_a_card_given_no_such_namespace_says_so(tmp_path, card_deck):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "sim.card", "serve", "--persona", str(card_deck / "personas" / "p001.toml"),
                        "--state", str(tmp_path / "s.json"), "--vpcd", "127.0.0.1:40000",
                        "--vpcd-netns", str(tmp_path / "gone")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot reach vpcd" in r.stderr and "gone" in r.stderr, r.stderr
