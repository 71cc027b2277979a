"""Card latency: the APDU round trip through pcscd next to the raw vpcd socket, and the time
to read the face photo. Run: ``.venv/bin/python -m pytest benches/bench_card.py``.

* pcscd: the driver's ``CardConnection.transmit`` (and bare ``SCardTransmit``) to a software
  card process in a vpcd slot of a private pcscd.
* raw socket: the SAME card program (``python -m sim.card serve``) connected to a loopback
  socket of ours that speaks vpcd's framing (2-byte length + payload), no pcscd.
* face photo: the card-face record (EF 0002, ~9 KB with the JPEG 2000 photo) read and
  parsed through pcscd, with access already open; then including the check-code-B VERIFY;
  then with extended-length reads.

Goals (issue 2): median round trip within 2x of the raw socket; photo read under 20 ms.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.mynumber import JPKI_AID, MyNumberCard
from drivers.pcsc import PcscReader

SELECT_JPKI = bytes.fromhex("00A4040C0A") + JPKI_AID
ROUND_TRIP_GOAL_X = 2.0
PHOTO_GOAL_MS = 20.0
EVENT_TIMEOUT_S = 10.0
MEDIANS = pytest.StashKey[dict]()
_READY = re.compile(r"^READY control=(\d+)")


@pytest.fixture(scope="module")
def persona(tmp_path_factory):
    from harness.facedata import resolve_faces
    from sim.card.deck import generate_deck, load_deck

    folder = tmp_path_factory.mktemp("deck")
    generate_deck(resolve_faces(None), folder, count=1, seed=3)
    (p,) = load_deck(folder)
    assert p.profile == "standard"
    return p


def _card_process(persona, state: Path, link: list[str]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "sim.card", "serve", "--persona", str(persona.source), "--state", str(state),
            *link, "--control-port", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not _READY.match(line):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"card process did not start: {line!r}")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()


@pytest.fixture(scope="module")
def pcsc_conn(pcscd, persona, tmp_path_factory):
    reader = PcscReader(pcscd.reader_names[0])
    reader.wait_for_removal(EVENT_TIMEOUT_S)
    proc = _card_process(persona, tmp_path_factory.mktemp("state") / "card.json", pcscd.card_args(0))
    try:
        reader.wait_for_insertion(EVENT_TIMEOUT_S)
        with reader.connect(log_size=64) as conn:
            yield conn
    finally:
        _stop(proc)
        reader.wait_for_removal(EVENT_TIMEOUT_S)


class RawVpcd:
    """Our end of the vpcd socket protocol, for one card process that connects to it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send(b"\x01")  # power on (no reply)
        self.atr = self.exchange(b"\x04")

    def _send(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("card closed the socket")
            buf += chunk
        return bytes(buf)

    def exchange(self, apdu: bytes) -> bytes:
        self._send(apdu)
        (n,) = struct.unpack(">H", self._recv_exact(2))
        return self._recv_exact(n)


@pytest.fixture(scope="module")
def raw_card(persona, tmp_path_factory):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(20)
    proc = _card_process(persona, tmp_path_factory.mktemp("state") / "raw.json",
                         ["--vpcd", f"127.0.0.1:{listener.getsockname()[1]}"])
    sock = None
    try:
        sock, _ = listener.accept()
        sock.settimeout(10)
        yield RawVpcd(sock)
    finally:
        _stop(proc)  # first: a card whose socket closes reconnects to a listener still open
        if sock is not None:
            sock.close()
        listener.close()


def _median_ms(benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median * 1000.0


def _remember(request, name: str, value: float | None) -> None:
    if value is not None:
        request.config.stash.setdefault(MEDIANS, {})[name] = value


@pytest.mark.benchmark(group="apdu-round-trip")
def test_round_trip_raw_socket(benchmark, raw_card, request):
    assert raw_card.atr.startswith(b"\x3B")
    resp = benchmark(raw_card.exchange, SELECT_JPKI)
    assert resp == b"\x90\x00"
    _remember(request, "raw", _median_ms(benchmark))


@pytest.mark.benchmark(group="apdu-round-trip")
def test_round_trip_pcscd_scardtransmit(benchmark, pcsc_conn, request):
    """Bare pyscard SCardTransmit: pcscd's cost without the driver's."""
    from smartcard import scard

    h = pcsc_conn._h  # the bench looks under the hood on purpose

    def send():
        return scard.SCardTransmit(h.card, h.protocol, list(SELECT_JPKI))

    hresult, resp = benchmark(send)
    assert hresult == 0 and resp == [0x90, 0x00]
    _remember(request, "scard", _median_ms(benchmark))


@pytest.mark.benchmark(group="apdu-round-trip")
def test_round_trip_pcscd_driver(benchmark, pcsc_conn, request, goals):
    resp = benchmark(pcsc_conn.transmit, SELECT_JPKI)
    assert resp.sw == 0x9000 and resp.elapsed_ms > 0
    driver = _median_ms(benchmark)
    _remember(request, "driver", driver)
    medians = request.config.stash.get(MEDIANS, {})
    if driver is not None and "raw" in medians:
        ratio = driver / medians["raw"]
        benchmark.extra_info.update(raw_median_ms=medians["raw"], ratio_to_raw=ratio)
        goals("APDU round trip through pcscd / raw vpcd socket (median)", ratio, f"<= {ROUND_TRIP_GOAL_X}x",
              "x", ratio <= ROUND_TRIP_GOAL_X)
        if "scard" in medians:
            goals("  of which bare SCardTransmit / raw", medians["scard"] / medians["raw"], "info", "x", True)


@pytest.fixture(scope="module")
def opened_card(pcsc_conn, persona):
    card = MyNumberCard(pcsc_conn)
    card.card_face(check_b=persona.check_code_b)  # opens EF 0002 for this AP session
    return card


@pytest.mark.benchmark(group="face-photo")
def test_face_photo_read(benchmark, opened_card, goals):
    face = benchmark(opened_card.card_face)
    assert face.photo_info.format == "JPEG 2000 (JP2)" and len(face.photo) > 1000
    median = _median_ms(benchmark)
    if median is not None:
        benchmark.extra_info.update(photo_bytes=len(face.photo))
        goals(f"face photo read, card-face record of {face.photo_info.describe()} (median)", median,
              f"< {PHOTO_GOAL_MS:g} ms", "ms", median < PHOTO_GOAL_MS)


@pytest.mark.benchmark(group="face-photo")
def test_face_photo_read_with_check_code_b(benchmark, pcsc_conn, persona):
    card = MyNumberCard(pcsc_conn)
    face = benchmark(card.card_face, check_b=persona.check_code_b)
    assert face.photo_info.format == "JPEG 2000 (JP2)"


@pytest.mark.benchmark(group="face-photo")
def test_face_photo_read_extended(benchmark, pcsc_conn, persona):
    card = MyNumberCard(pcsc_conn, extended=True)
    card.card_face(check_b=persona.check_code_b)
    face = benchmark(card.card_face)
    assert face.photo_info.format == "JPEG 2000 (JP2)"
