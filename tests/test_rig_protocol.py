"""The rig line protocol: hardware.md's transcript replayed byte for byte against the simulated
rig on a real pty, and both sides' parsers against malformed input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import rig as drv
from sim.rig_firmware import RigFirmware
from sim.rig_process import SimProcess
from sim.rig_protocol import FrameError, parse_request

HARDWARE_MD = Path(__file__).resolve().parent.parent / "hardware.md"


def transcript() -> list[tuple[bytes, bytes]]:
    text = HARDWARE_MD.read_text()
    m = re.search(r"```rig-transcript\n(.*?)```", text, re.S)
    assert m, "hardware.md has no rig-transcript block"
    pairs, pending = [], None
    for line in m.group(1).splitlines():
        if line.startswith("> "):
            pending = line[2:].encode("ascii")
        elif line.startswith("< "):
            assert pending is not None, f"reply without request: {line}"
            pairs.append((pending, line[2:].encode("ascii")))
            pending = None
    return pairs


def test_hardware_md_transcript_replays_byte_for_byte_on_a_pty():
    pairs = transcript()
    assert len(pairs) >= 25
    with SimProcess("sim.rig", "--pty", "--card", "1", "--card", "2") as rig:
        port = serial.Serial(rig.ready["pty"], 115200, timeout=5)
        try:
            port.reset_input_buffer()  # the BOOT event, if it was buffered
            for request, expected in pairs:
                port.write(request + b"\n")
                got = port.readline()
                while got.startswith(b"! "):  # events may come between replies
                    got = port.readline()
                assert got.endswith(b"\n"), f"no complete reply to {request!r}: {got!r}"
                assert got[:-1] == expected, f"for {request!r}"
        finally:
            port.close()


def test_driver_frames_requests_as_documented():
    assert drv.encode_request(2, "PING") == b"2 PING*02\n"
    for request, _ in transcript():
        if b"*" in request and not request.endswith(b"*00"):
            seq, _, rest = request.partition(b" ")
            assert drv.encode_request(int(seq), rest.split(b"*")[0].decode()) == request + b"\n"


def test_driver_parses_every_documented_reply():
    for _, reply in transcript():
        item = drv.parse_line(reply)
        assert isinstance(item, drv.Reply)
        assert item.ok == (b" ACK" in reply)


@pytest.mark.parametrize("line", [b"", b"1 ACK", b"1 ACK*00", b"1 ACK*5b", b"x ACK*" + b"00", b"1 MAYBE*1F",
                                  b"1 ACK k*55", b"\xff\xfe*00"])
def test_driver_rejects_malformed_replies(line):
    with pytest.raises(drv._Unparseable):
        drv.parse_line(line)


def test_driver_parses_events():
    ev = drv.parse_line(b"! POWER power=off cause=cut supply=none*49")
    assert isinstance(ev, drv.RigEvent)
    assert ev.name == "POWER" and ev.fields == {"power": "off", "cause": "cut", "supply": "none"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=250))
def test_parsers_never_fail_unexpectedly_on_random_bytes(data):
    try:
        drv.parse_line(data)
    except drv._Unparseable:
        pass
    try:
        parse_request(data)
    except FrameError as exc:
        assert exc.code in ("E_FRAME", "E_CHECKSUM", "E_ARG")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ=_.-*abcxyz", max_size=80))
def test_firmware_answers_any_line_with_ack_or_nak(text):
    fw = RigFirmware(cards={1: None}, sleep=lambda s: None)  # motions included, at once
    try:
        reply = fw.handle(text.encode("ascii"))
    finally:
        fw.shutdown()
    if text == "":
        assert reply is None  # an empty line is the host's resync: no answer
        return
    assert reply is not None and reply.endswith(b"\n")
    item = drv.parse_line(reply[:-1])  # the firmware's own reply is always well framed
    assert isinstance(item, drv.Reply)
    assert item.ok or item.code.startswith("E_")
