"""Network namespaces for the private pcscd: its vpcd ports live where no network reaches.

vpcd listens on every interface and cannot be told otherwise (hardware.md 9.1), so a private
pcscd runs in a network namespace of its own that holds only a loopback. A card reaches it by
entering that namespace in the one thread that opens its vpcd socket: a namespace belongs to a
thread, and a socket to the namespace it was made in, so the card's control port (made in the
main thread) stays on the host's loopback, where the rig and the harness reach it.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

CLONE_NEWNET = 0x40000000


class NetnsError(OSError):
    """A network namespace could not be entered."""


def namespace_of(pid: int) -> Path:
    """The network namespace a running process is in."""
    return Path(f"/proc/{pid}/ns/net")


def enter(path: str | os.PathLike) -> None:
    """Move the calling thread into the network namespace at ``path`` (needs CAP_SYS_ADMIN)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(exc.errno, f"network namespace {path}: {exc.strerror}") from exc
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(err, f"network namespace {path}: setns: {os.strerror(err)}")
    finally:
        os.close(fd)


def tcp_listening(port: int, pid: int | None = None) -> bool:
    """Is something listening on this TCP port, in the namespace of ``pid`` (default: ours)?
    Read from /proc, never by connecting: a connection to a vpcd port *is* a card insertion."""
    needle = f":{port:04X}"
    base = Path(f"/proc/{pid}/net") if pid is not None else Path("/proc/net")
    for table in ("tcp", "tcp6"):
        try:
            lines = (base / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and cols[1].endswith(needle) and cols[3] == "0A":
                return True
    return False
