"""The card's persistent state: retry counters (a counter at 0 is a blocked credential).

Real cards keep counters in EEPROM, so they survive power-off, reset, removal and a restart
of the card process. We keep them in a small JSON file written atomically (temporary file in
the same folder, fsync, ``os.replace``, fsync of the folder): a kill or a power cut at any
moment leaves the old or the new file, never a torn one, and a finished write is durable.
Without a path the state lives in memory only (pure-object tests).

The file carries a SHA-256 of its content, so damage that still parses (a flipped digit) is
caught too. A state file that cannot be trusted (unparseable, a foreign format, a checksum that
does not match, a counter that is not an integer or lies outside 0..maximum) fails safe: it is kept aside as ``.corrupt`` and *every*
counter starts blocked (0). Starting from the issued values instead would let anyone who can
damage the file unblock a blocked PIN. The card control port's ``REISSUE`` (what a lab does to
a locked test card) restores the issued values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
LEGACY_VERSIONS = (1,)  # written before the checksum: read, then rewritten with one


class CorruptState(ValueError):
    """The state file cannot be trusted; the message says which part."""


@dataclass
class CardState:
    path: Path | None = None
    tries: dict[str, int] = field(default_factory=dict)
    initial: dict[str, int] = field(default_factory=dict)  # as issued: what a re-issue restores
    maximum: dict[str, int] = field(default_factory=dict)  # no counter may ever exceed these
    failed_safe: bool = False  # True when load() found a corrupt file and blocked everything

    @classmethod
    def load(cls, path: Path | None, initial: dict[str, int], maximum: dict[str, int] | None = None) -> "CardState":
        """Counters from ``path`` (a missing file is a freshly issued card: ``initial``).

        Counters the file does not name (added by a newer card layout) start at ``initial``.
        An untrustworthy file blocks every counter (see the module doc).
        """
        maximum = dict(maximum if maximum is not None else initial)
        for name, value in initial.items():
            if not 0 <= value <= maximum.get(name, value):
                raise ValueError(f"issued counter {name}={value} outside 0..{maximum.get(name)}")
        tries = dict(initial)
        failed_safe = False
        if path is not None and path.exists():
            try:
                tries.update(_parse(path.read_bytes(), maximum))
            except (OSError, CorruptState) as exc:
                aside = path.with_suffix(path.suffix + ".corrupt")
                log.error("card state %s cannot be trusted (%s): kept as %s; every counter is blocked "
                          "until the card is re-issued (card control REISSUE)", path, exc, aside)
                try:
                    os.replace(path, aside)
                except OSError:
                    pass
                tries = {name: 0 for name in initial}
                failed_safe = True
        state = cls(path=path, tries=tries, initial=dict(initial), maximum=maximum, failed_safe=failed_safe)
        state.save()
        return state

    def reissue(self) -> None:
        """Every counter back to its issued value: what a lab does to a locked test card."""
        self.tries = dict(self.initial)
        self.failed_safe = False
        self.save()

    def get(self, name: str) -> int:
        return self.tries[name]

    def set(self, name: str, value: int) -> None:
        if not 0 <= value <= self.maximum.get(name, value):
            raise ValueError(f"counter {name}={value} outside 0..{self.maximum.get(name)}")
        if self.tries.get(name) == value:
            return
        self.tries[name] = value
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        doc = {"version": FORMAT_VERSION, "updated": time.time(), "tries": self.tries}
        doc["sha256"] = _digest(doc)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        fsync_dir(folder)  # the rename itself is durable only once the folder is synced


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(raw: bytes, maximum: dict[str, int]) -> dict[str, int]:
    """The stored counters, each checked against its maximum; raises CorruptState."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:  # also UnicodeDecodeError
        raise CorruptState(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") not in (FORMAT_VERSION, *LEGACY_VERSIONS):
        raise CorruptState(f"not a version-{FORMAT_VERSION} card state")
    if doc["version"] == FORMAT_VERSION and doc.get("sha256") != _digest(doc):
        raise CorruptState("checksum does not match the content")
    stored = doc.get("tries")
    if not isinstance(stored, dict):
        raise CorruptState("no 'tries' table")
    out = {}
    for name, value in stored.items():
        if name not in maximum:
            continue  # a counter this card layout no longer has
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum[name]:
            raise CorruptState(f"counter {name}={value!r} outside 0..{maximum[name]}")
        out[name] = value
    return out


def _digest(doc: dict) -> str:
    """SHA-256 of the document without its checksum, in a canonical form."""
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
