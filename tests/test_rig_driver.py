"""drivers/rig.py against devices that misbehave, each on a real pty (os.openpty).

The test plays the device on the pty's master side: silent, garbage, partial lines, stale
replies, a dropped first request, a closed port. Every case must end in a named exception
(or a recovered reply) within its deadline: never a hang.
"""

from __future__ import annotations

import os
import socket
import threading
import tty
from typing import Callable

import pytest

from drivers import rig as drv
from drivers.rig import (RigController, RigDisconnected, RigGarbage, RigNak, RigPartialLine, RigTimeout,
                         RigUnavailable, RigVersionMismatch)

pytestmark = pytest.mark.timeout(60)

Respond = Callable[[bytes, "FakeDevice"], "bytes | None"]


def frame(body: str) -> bytes:
    return body.encode() + b"*" + drv.xor_checksum(body.encode()).encode() + b"\n"


def hello_ok(seq: int, proto: str = "1.0") -> bytes:
    return frame(f"{seq} ACK proto={proto} fw=fake/1 serial=F1 slots=1 caps=power")


class FakeDevice:
    """The device end of a pty: reads request lines, answers with ``respond(line, self)``."""

    def __init__(self, respond: Respond):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.respond = respond
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                data = os.read(self.master, 1024)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line:
                    continue  # the host's resync LF
                self.received.append(line)
                out = self.respond(line, self)
                if out:
                    try:
                        os.write(self.master, out)
                    except OSError:
                        return

    def close(self) -> None:
        self._stop.set()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def seq_of(line: bytes) -> int:
    return int(line.split(b" ", 1)[0])


def is_hello(line: bytes) -> bool:
    return b" HELLO " in line


def polite(line: bytes, dev: FakeDevice) -> bytes:
    return hello_ok(seq_of(line)) if is_hello(line) else frame(f"{seq_of(line)} ACK")


@pytest.fixture
def device():
    made: list[FakeDevice] = []

    def make(respond: Respond) -> FakeDevice:
        d = FakeDevice(respond)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def controller(dev: FakeDevice, **kw) -> RigController:
    kw.setdefault("timeout_s", 0.4)
    kw.setdefault("backoff_s", 0.05)
    return RigController(dev.path, **kw)


def test_handshake_and_command_on_a_well_behaved_device(device):
    dev = device(polite)
    with controller(dev) as rig:
        assert rig.info.firmware == "fake/1" and rig.info.slots == (1,)
        assert rig.ping() >= 0
    # what went out on the wire is framed as hardware.md says
    assert all(drv.xor_checksum(line.split(b"*")[0]) == line.split(b"*")[1].decode() for line in dev.received)


def test_silent_device_times_out_after_one_retransmission(device):
    dev = device(lambda line, d: None)
    rig = controller(dev, retries=1)
    with pytest.raises(RigTimeout, match="no reply"):
        rig.open()
    assert len(dev.received) == 2 and dev.received[0] == dev.received[1]  # same seq, same bytes
    rig.close()


def test_garbage_only_raises_rig_garbage(device):
    dev = device(lambda line, d: b"\x00\xffnoise\x07\n" if not is_hello(line) else hello_ok(seq_of(line)))
    with controller(dev) as rig:
        with pytest.raises(RigGarbage, match="unparseable"):
            rig.ping()
        assert rig.stats["garbage_lines"] >= 2


def test_partial_line_raises_rig_partial_line(device):
    dev = device(lambda line, d: b"12 ACK power=o" if not is_hello(line) else hello_ok(seq_of(line)))
    with controller(dev, retries=0) as rig:
        with pytest.raises(RigPartialLine, match="without LF"):
            rig.ping()


def test_bad_checksum_is_garbage_not_a_reply(device):
    def respond(line, d):
        if is_hello(line):
            return hello_ok(seq_of(line))
        return f"{seq_of(line)} ACK*00\n".encode()
    dev = device(respond)
    with controller(dev, retries=0) as rig:
        with pytest.raises(RigGarbage):
            rig.ping()


def test_resync_skips_garbage_stale_replies_and_events(device):
    def respond(line, d):
        seq = seq_of(line)
        if is_hello(line):
            return hello_ok(seq)
        return (b"\x15\x15garbage\n" + frame(f"{(seq + 7) % 65535 + 1} ACK") + frame("! POWER power=off cause=cut")
                + frame(f"{seq} ACK lux=10 cct_k=3000 backlight_lux=0"))
    dev = device(respond)
    with controller(dev) as rig:
        assert rig.set_lighting(lux=10).lux == 10.0
        assert rig.stats["garbage_lines"] == 1 and rig.stats["stale_replies"] == 1
        assert [e.name for e in rig.events()] == ["POWER"]


def test_lost_reply_is_recovered_by_retransmitting_the_same_line(device):
    def respond(line, d):
        if is_hello(line):
            return hello_ok(seq_of(line))
        if sum(1 for r in d.received if r == line) == 1:
            return None  # the first reply is lost on the line
        return frame(f"{seq_of(line)} ACK power=on supply=ok")
    dev = device(respond)
    with controller(dev) as rig:
        rig.power_on()
        assert rig.stats["retransmits"] == 1
    power = [r for r in dev.received if b"POWER ON" in r]
    assert len(power) == 2 and power[0] == power[1]


def test_nak_raises_rig_nak_with_code(device):
    dev = device(lambda line, d: hello_ok(seq_of(line)) if is_hello(line)
                 else frame(f"{seq_of(line)} NAK E_SLOT no card in deck slot 4"))
    with controller(dev) as rig:
        with pytest.raises(RigNak) as info:
            rig.place_card(4)
    assert info.value.code == "E_SLOT" and "slot 4" in info.value.detail


@pytest.mark.parametrize("answer", ["proto2", "nak"])
def test_version_mismatch(device, answer):
    def respond(line, d):
        if answer == "proto2":
            return hello_ok(seq_of(line), proto="2.0")
        return frame(f"{seq_of(line)} NAK E_VERSION this rig speaks 2.0")
    dev = device(respond)
    with pytest.raises(RigVersionMismatch):
        controller(dev).open()


def test_closed_pty_raises_rig_disconnected_after_bounded_reconnects(device):
    dev = device(polite)
    rig = controller(dev, reconnect_attempts=2)
    rig.open()
    dev.close()  # the USB adapter is unplugged: the pty goes away
    with pytest.raises(RigDisconnected, match="reconnect"):
        rig.ping()
    with pytest.raises(RigDisconnected):
        rig.ping()  # and stays a clear error afterwards
    rig.close()


def test_unavailable_ports():
    with pytest.raises(RigUnavailable, match="/dev/ttyNOPE"):
        RigController("serial:/dev/ttyNOPE").open()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    with pytest.raises(RigUnavailable):
        RigController(f"socket://127.0.0.1:{port}").open()


def test_identifiers_that_would_break_the_line_are_refused_before_sending(device):
    dev = device(polite)
    with controller(dev) as rig:
        before = len(dev.received)
        with pytest.raises(ValueError):
            rig.show_subject("two words")
        with pytest.raises(ValueError):
            rig.show_subject("a*b")
        assert len(dev.received) == before
