"""A whole nightly run leaves no card secret and no face image in its logs, records or report.

The session's one `facehil run nightly` on the simulated station (``nightly_run`` in
tests/conftest.py: its station folder kept, so the logs of every station process can be read),
with one canary scenario appended that fails on purpose with a deck card in its assertion and
logs the card: pytest then carries the card's repr into
the failure text, the captured log, the records database and the report. Afterwards every log
file, every column of every table of the records database, the terminal output and every file
of the HTML report are searched for each persona's PIN, signing password, security code,
check code B and My Number, and for JPEG / JPEG 2000 data: raw magic bytes, their hex and
base64 forms, and images embedded as data URIs.
"""

from __future__ import annotations

import base64
import re
import sqlite3
from pathlib import Path

import pytest


# Signatures of JPEG and JPEG 2000 files (long enough not to occur by chance).
IMAGE_MAGIC = {
    "JPEG/JFIF": b"\xff\xd8\xff\xe0",
    "JPEG/Exif": b"\xff\xd8\xff\xe1",
    "JPEG/DQT": b"\xff\xd8\xff\xdb",
    "JPEG/Adobe": b"\xff\xd8\xff\xee",
    "JP2 signature box": b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    "J2K codestream": b"\xff\x4f\xff\x51",
}
DATA_URI = re.compile(rb"data:([\w/+.-]+);base64,([A-Za-z0-9+/=\s]+)")
def base64_forms(magic: bytes) -> list[bytes]:
    """The base64 characters that ``magic`` fixes, at each of the three byte alignments."""
    out = []
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + magic + b"\0\0")
        first = -(-8 * k // 6)  # the first character whose six bits all come from magic
        last = (8 * (k + len(magic))) // 6  # exclusive
        out.append(enc[first:last])
    return out


def image_needles() -> dict[bytes, str]:
    needles = {}
    for name, magic in IMAGE_MAGIC.items():
        needles[magic] = f"{name} bytes"
        needles[magic.hex().encode()] = f"{name} as hex"
        needles[magic.hex().upper().encode()] = f"{name} as HEX"
        needles[magic.hex(" ").encode()] = f"{name} as spaced hex"
        needles[magic.hex(" ").upper().encode()] = f"{name} as spaced HEX"
        for form in base64_forms(magic):
            needles[form] = f"{name} as base64"
    return needles


def persona_secrets(state_dir: Path) -> dict[str, str]:
    """Every secret of every persona the station's cards were issued for: value -> what it is."""
    from sim.card.persona import Persona

    found = {}
    for path in sorted(state_dir.rglob("personas/*.toml")):
        p = Persona.load(path)
        for what in ("pin", "signing_password", "security_code", "check_code_b", "my_number"):
            value = getattr(p, what)
            if value:
                found[value] = f"{p.id} {what}"
    return found


QUOTE = rb"""(?:['"]|&#39;|&#34;|&quot;|&#x27;)"""


def secret_patterns(secrets: dict[str, str]) -> list[tuple[re.Pattern, str]]:
    """Long secrets anywhere; a 4-digit one where a repr, JSON or a key names it (four bare
    digits also occur as ports, times and counts)."""
    out = []
    for value, what in secrets.items():
        v = re.escape(value.encode())
        if len(value) >= 6:
            out.append((re.compile(rb"(?<![0-9A-Za-z])" + v + rb"(?![0-9A-Za-z])"), what))
        else:
            out.append((re.compile(QUOTE + v + QUOTE), what))
            out.append((re.compile(rb"(?i)(?:pin|code|password|secret|pw)[\w ]{0,20}[=:] ?" + QUOTE + rb"?" + v
                                   + rb"(?![0-9])"), what))
    return out


def scan(blob: bytes, where: str, patterns, needles) -> list[str]:
    problems = []
    for m in DATA_URI.finditer(blob):  # an embedded image: judge it by what it decodes to
        try:
            decoded = base64.b64decode(re.sub(rb"\s", b"", m.group(2)), validate=False)
        except ValueError:
            continue
        if any(decoded.startswith(magic) for magic in IMAGE_MAGIC.values()) or b"jpeg" in m.group(1) \
                or b"jp2" in m.group(1):
            problems.append(f"{where}: an embedded {m.group(1).decode()} image")
    rest = DATA_URI.sub(b"data:...", blob)  # PNG charts: their base64 says nothing about faces
    for needle, what in needles.items():
        if needle in rest:
            problems.append(f"{where}: {what}")
    for pattern, what in patterns:
        if pattern.search(blob):
            problems.append(f"{where}: the secret {what}")
    return problems


def scan_database(db_path: Path, patterns, needles) -> tuple[list[str], int]:
    problems, cells = [], 0
    with sqlite3.connect(db_path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                for (value,) in db.execute(f'SELECT "{column}" FROM "{table}"'):
                    if isinstance(value, str):
                        value = value.encode()
                    if isinstance(value, bytes):
                        cells += 1
                        problems += scan(value, f"records {table}.{column}", patterns, needles)
    return problems, cells


def test_scan_finds_what_it_looks_for(tmp_path):
    """The scanner itself: each kind of leak is found, harmless look-alikes are not."""
    needles = image_needles()
    patterns = secret_patterns({"4821": "p001 pin", "ABCD2345": "p001 signing_password",
                                "123456789018": "p001 my_number"})
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256))
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(range(100))
    leaks = [b"DeckCard(id='c1', pin='4821')", b'{"pin": "4821"}', b"pin=4821 ok", b"pw ABCD2345.",
             b"my number 123456789018", jpeg, jpeg.hex().encode(), jp2.hex(" ").upper().encode(),
             b"x" + base64.b64encode(b"ab" + jpeg), b"y" + base64.b64encode(b"a" + jp2),
             b'<img src="data:image/png;base64,' + base64.b64encode(jpeg) + b'">',
             b'<img src="data:image/jpeg;base64,AAAA">', b"&#39;4821&#39;"]
    for leak in leaks:
        assert scan(leak, "t", patterns, needles), leak
    harmless = [b"port 48210 and 4821 ms", b"DeckCard(id='c1', pin=***)", b"1234567890181",
                b'<img src="data:image/png;base64,' + base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(300)) + b'">']
    for ok in harmless:
        assert not scan(ok, "t", patterns, needles), ok


@pytest.mark.timeout(900)
def test_nightly_run_leaks_no_secret_and_no_face_image(station_runs, nightly_run):
    run = station_runs.result(nightly_run)  # tests/conftest.py: the session's nightly, with its canary
    state, report, db, result = run.state, run.report, run.db, run.result
    log_text = run.log.read_text(errors="replace")
    # The run is whole (every scenario ran; how each ended is other tests' business) and the
    # canary's failure, with the card's repr, reached the records.
    assert sum(result.counts.values()) >= 80 and result.counts["passed"] > 50, (result.counts, log_text[-3000:])
    assert result.run_id is not None and result.report_path is not None
    assert "FAILED" in log_text and "test_canary_card_repr_in_a_failure" in log_text
    assert "canary: DeckCard(" in log_text and "pin=***" in log_text

    secrets = persona_secrets(state)
    assert len(secrets) >= 10, secrets  # the deck's personas were found
    patterns, needles = secret_patterns(secrets), image_needles()
    problems: list[str] = []
    logs = [p for p in (state / "logs", state / "logs.previous") if p.is_dir()]
    log_files = [run.log] + [f for d in logs for f in sorted(d.rglob("*")) if f.is_file()]
    assert len(log_files) >= 5, log_files  # pcscd, cards, rig, camera, reader...
    for f in log_files:
        problems += scan(f.read_bytes(), f"log {f.relative_to(run.workdir)}", patterns, needles)
    problems += scan(run.terminal.encode(), "terminal output", patterns, needles)
    db_problems, cells = scan_database(db, patterns, needles)
    problems += db_problems
    assert cells > 100
    report_files = [f for f in sorted(report.rglob("*")) if f.is_file()]
    assert any(f.suffix == ".html" for f in report_files)
    for f in report_files:
        problems += scan(f.read_bytes(), f"report {f.relative_to(report)}", patterns, needles)
    html = b"".join(f.read_bytes() for f in report_files if f.suffix == ".html")
    assert b"canary" in html  # the failure text is in the report too
    assert not problems, "\n".join(problems)
