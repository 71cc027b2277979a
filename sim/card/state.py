"""The card's persistent state: retry counters (a counter at 0 is a blocked credential).

Real cards keep counters in EEPROM, so they survive power-off, reset, removal and a restart
of the card process. We keep them in a small JSON file written atomically (temporary file in
the same folder, fsync, ``os.replace``): a kill at any moment leaves the old or the new file,
never a torn one. Without a path the state lives in memory only (pure-object tests).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class CardState:
    path: Path | None = None
    tries: dict[str, int] = field(default_factory=dict)
    initial: dict[str, int] = field(default_factory=dict)  # as issued: what a re-issue restores

    @classmethod
    def load(cls, path: Path | None, initial: dict[str, int]) -> "CardState":
        """Counters from ``path``; counters it does not know start at ``initial``.

        A file that cannot be parsed (hand-edited, foreign) is kept aside as ``.corrupt`` and
        the card starts from the initial counters: a card must still answer.
        """
        tries = dict(initial)
        if path is not None and path.exists():
            try:
                doc = json.loads(path.read_text())
                stored = doc["tries"]
                for name, value in stored.items():
                    if name in tries and isinstance(value, int):
                        tries[name] = max(0, value)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                aside = path.with_suffix(path.suffix + ".corrupt")
                log.warning("card state %s unreadable (%s); kept as %s, starting fresh", path, exc, aside)
                try:
                    os.replace(path, aside)
                except OSError:
                    pass
        state = cls(path=path, tries=tries, initial=dict(initial))
        state.save()
        return state

    def reissue(self) -> None:
        """Every counter back to its issued value: what a lab does to a locked test card."""
        self.tries = dict(self.initial)
        self.save()

    def get(self, name: str) -> int:
        return self.tries[name]

    def set(self, name: str, value: int) -> None:
        if self.tries.get(name) == value:
            return
        self.tries[name] = value
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": FORMAT_VERSION, "updated": time.time(), "tries": self.tries}
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
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
