"""The reference reader's non-volatile storage: one folder, and the only way to change it.

Every step of the firmware that persists something (``sim/reader/slots.py``) goes through
:class:`NvStore`. Each primitive (create, append, fsync, rename, unlink, fsync of the folder)
is one *step*, named ``<phase>:<file>:<op>``, and the store calls ``hook(step)`` right after
it. Tests record the steps of a real update to learn every power-cut point, and raise
:class:`PowerCut` from the hook to cut the power there, so a new persisting step cannot be
missed: it is a new point by construction (tests also check slots.py persists nothing itself).

:class:`PowerCutDisk` simulates what a power cut does to storage: data not yet fsynced and
folder changes not yet made durable by an fsync of the folder are lost (``lose``), or the
folder changes reached the disk but unsynced data is torn, part new and part old (``tear``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("lose", "tear")
SECTOR_BYTES = 512


class PowerCut(BaseException):
    """Raised by a test hook: the power went at this point (BaseException: nothing may catch it)."""


class NvStore:
    """A flat folder of named files; ``hook(step)`` after every persisting primitive.

    ``sync=False`` skips the real ``os.fsync`` calls (tests that simulate power cuts with
    :class:`PowerCutDisk` and run hundreds of updates); the steps and hooks are the same.
    """

    def __init__(self, root: Path, hook: Callable[[str], None] | None = None, *, sync: bool = True,
                 observer: "PowerCutDisk | None" = None):
        self.root = root
        self.hook = hook or (lambda step: None)
        self.sync = sync
        self.observer = observer
        root.mkdir(parents=True, exist_ok=True)
        if observer is not None and observer.root is None:  # a reboot without a power cut keeps its view
            observer.scan(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def _step(self, phase: str, name: str, op: str) -> None:
        self.hook(f"{phase}:{name}:{op}")

    # -- primitives ---------------------------------------------------------------------------
    def create(self, name: str, data: bytes, phase: str) -> None:
        """Create or truncate ``name`` and write ``data`` (not synced)."""
        with open(self.path(name), "wb") as fh:
            fh.write(data)
        if self.observer:
            self.observer.create(name, data)
        self._step(phase, name, "create")

    def append(self, name: str, data: bytes, phase: str) -> None:
        with open(self.path(name), "ab") as fh:
            fh.write(data)
        if self.observer:
            self.observer.append(name, data)
        self._step(phase, name, "append")

    def fsync(self, name: str, phase: str) -> None:
        if self.sync:
            with open(self.path(name), "rb") as fh:
                os.fsync(fh.fileno())
        if self.observer:
            self.observer.fsync(name)
        self._step(phase, name, "fsync")

    def rename(self, src: str, dst: str, phase: str) -> None:
        os.replace(self.path(src), self.path(dst))
        if self.observer:
            self.observer.rename(src, dst)
        self._step(phase, dst, "rename")

    def unlink(self, name: str, phase: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return  # nothing changed: not a step
        if self.observer:
            self.observer.unlink(name)
        self._step(phase, name, "unlink")

    def fsync_dir(self, phase: str) -> None:
        if self.sync:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if self.observer:
            self.observer.fsync_dir()
        self._step(phase, ".", "fsync_dir")

    # -- composite ----------------------------------------------------------------------------
    def write_atomic(self, name: str, data: bytes, phase: str) -> None:
        """Temp file, fsync, rename, fsync of the folder: old or new content, and durable once done."""
        tmp = name + ".tmp"
        self.create(tmp, data, phase)
        self.fsync(tmp, phase)
        self.rename(tmp, name, phase)
        self.fsync_dir(phase)


@dataclass(eq=False)
class _Inode:
    data: bytes
    synced: bytes  # what survives a power cut for sure


@dataclass
class PowerCutDisk:
    """Follows what is durable in one NvStore folder and rewrites it as a power cut leaves it."""

    current: dict[str, _Inode] = field(default_factory=dict)  # the folder as programs see it
    durable: dict[str, _Inode] = field(default_factory=dict)  # the folder as of its last fsync
    root: Path | None = None

    def scan(self, root: Path) -> None:
        """At power-on everything on the storage is durable.

        A reboot that is not a power cut (``REBOOT``) does not flush the storage's cache, so a
        store created again on the same disk keeps following it instead of scanning again."""
        self.root = root
        self.current = {p.name: _Inode(p.read_bytes(), p.read_bytes()) for p in root.iterdir() if p.is_file()}
        self.durable = dict(self.current)

    def create(self, name: str, data: bytes) -> None:
        inode = self.current.get(name)
        if inode is None:  # a new file: its bytes are not on the disk yet
            self.current[name] = _Inode(data, b"")
        else:  # truncating an existing file keeps its inode
            inode.data = data

    def append(self, name: str, data: bytes) -> None:
        self.current[name].data += data

    def fsync(self, name: str) -> None:
        inode = self.current[name]
        inode.synced = inode.data

    def rename(self, src: str, dst: str) -> None:
        self.current[dst] = self.current.pop(src)

    def unlink(self, name: str) -> None:
        self.current.pop(name, None)

    def fsync_dir(self) -> None:
        self.durable = dict(self.current)

    def crash(self, mode: str, rng: random.Random) -> dict[str, str]:
        """Rewrite the folder as the power cut leaves it; returns what happened to each changed file."""
        if mode not in MODES:
            raise ValueError(f"power-cut mode must be one of {MODES}, got {mode!r}")
        assert self.root is not None
        entries = self.durable if mode == "lose" else self.current
        after: dict[str, bytes] = {}
        what: dict[str, str] = {}
        for name, inode in entries.items():
            if inode.synced == inode.data:
                after[name] = inode.data
            elif mode == "lose":
                after[name] = inode.synced
                what[name] = "lost"
            else:
                after[name] = _torn(inode.synced, inode.data, rng)
                what[name] = "torn"
        for p in self.root.iterdir():
            if p.is_file() and p.name not in after:
                p.unlink()
                what.setdefault(p.name, "gone")
        for name, data in after.items():
            self.root.joinpath(name).write_bytes(data)
        return what


def _torn(old: bytes, new: bytes, rng: random.Random) -> bytes:
    """Some leading sectors of the new data landed, the rest is the old data (or zeros past its end)."""
    sectors = (len(new) + SECTOR_BYTES - 1) // SECTOR_BYTES
    cut = rng.randint(0, max(0, sectors - 1)) * SECTOR_BYTES if sectors else 0
    length = rng.choice((len(old), len(new)))  # the size update may or may not have landed
    mixed = new[:cut] + old[cut:]
    return mixed[:length].ljust(length, b"\0")
