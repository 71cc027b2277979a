"""Start and stop pcscd instances for the simulated station.

Two kinds:

* the *system* pcscd (Debian's vpcd config: "Virtual PCD 00 00" on TCP 35963 and
  "Virtual PCD 00 01" on 35964), started here if it is not already running;
* a *private* pcscd in its own mount and network namespaces, with a tmpfs on /run/pcscd and
  its own vpcd reader.conf on ports we choose. Its vpcd ports exist only in its network
  namespace, which holds nothing but a loopback: no network reaches them, and a card enters
  that namespace to connect (sim/netns.py, ``card_args``). Clients reach pcscd through
  ``PCSCLITE_CSOCK_NAME=/proc/<pid>/root/run/pcscd/pcscd.comm``. This is how tests, helpers
  and fleet workers each get their own two card slots on one machine without colliding
  (one pcscd only ever has two vpcd slots: see shared notes, pcsc-sim.md).

libpcsclite reads PCSCLITE_CSOCK_NAME once per process, so a process talks to one pcscd.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from sim.netns import namespace_of, tcp_listening
from sim.reaping import register

log = logging.getLogger(__name__)

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
SYSTEM_SOCKET = Path("/run/pcscd/pcscd.comm")
SYSTEM_VPCD_PORT = 35963
SOCKET_ENV = "PCSCLITE_CSOCK_NAME"


class PcscdError(RuntimeError):
    """pcscd could not be started or is not usable."""


@dataclass
class PcscdInstance:
    """A running pcscd: where clients find it and which vpcd ports its two slots listen on."""

    socket_path: Path
    vpcd_port: int  # slot 0; slot 1 listens on vpcd_port + 1
    pid: int | None = None  # set only when we started it
    private: bool = False
    workdir: Path | None = None
    log_path: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def netns(self) -> Path | None:
        """The network namespace its vpcd ports are in; None: the host's (the system pcscd)."""
        return namespace_of(self.pid) if self.private and self.pid is not None else None

    def card_args(self, slot: int) -> list[str]:
        """How a card process (``python -m sim.card serve``) reaches this slot's vpcd port."""
        args = ["--vpcd", f"127.0.0.1:{self.slot_port(slot)}"]
        netns = self.netns
        return args + (["--vpcd-netns", str(netns)] if netns is not None else [])

    def vpcd_listening(self, slot: int) -> bool:
        """Is this slot's vpcd port listening (where its cards connect)?"""
        return tcp_listening(self.slot_port(slot), self.pid if self.private else None)

    @property
    def reader_names(self) -> list[str]:
        return ["Virtual PCD 00 00", "Virtual PCD 00 01"]

    def slot_port(self, slot: int) -> int:
        if slot not in (0, 1):
            raise ValueError(f"vpcd slot must be 0 or 1, got {slot}")
        return self.vpcd_port + slot

    def client_env(self) -> dict[str, str]:
        """Environment a client process needs to talk to this pcscd."""
        if self.private:
            return {SOCKET_ENV: str(self.socket_path)}
        return {}

    def stop(self) -> None:
        """Stop pcscd if we started it. Idempotent."""
        if self.pid is None:
            return
        _terminate(self.pid, self._proc)
        self.pid = None
        if self.workdir and self.private:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _terminate(pid: int, proc: subprocess.Popen | None, timeout_s: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        proc.wait(timeout=2)


def pid_alive(pid: int, started_at: float | None = None) -> bool:
    """Is this process running (and not a zombie waiting to be reaped)? With ``started_at``
    (its :func:`process_started_at` when we started it), only if it is still *that* process:
    after a crash or a reboot the PID may belong to another program."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # the command name in parentheses may hold spaces: the state follows the last ')'
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        return False
    if started_at is None:
        return True
    now = process_started_at(pid)
    return now is not None and abs(now - started_at) < START_TIME_TOLERANCE_S


START_TIME_TOLERANCE_S = 0.5  # psutil's create_time of one process is stable to ~10 ms (clock ticks)


def process_started_at(pid: int) -> float | None:
    """When the process started (seconds since the epoch, as harness/records.py records it)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port_pair(start: int = 36000, stop: int = 60000) -> int:
    """A port p such that p and p+1 are both free (vpcd's two slots)."""
    rng = (os.getpid() * 7919 + int(time.time() * 1000)) % (stop - start)
    for i in range(0, stop - start, 2):
        p = start + (rng + i) % (stop - start)
        if _port_free(p) and _port_free(p + 1):
            return p
    raise PcscdError("no free pair of TCP ports for vpcd")


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise PcscdError(f"timed out after {timeout_s:.1f}s waiting for {what}")


def _check_installed() -> str:
    exe = shutil.which("pcscd")
    if exe is None:
        raise PcscdError("pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)")
    if not VPCD_DRIVER.exists():
        raise PcscdError(f"the vpcd driver {VPCD_DRIVER} is missing (apt-get install vsmartcard-vpcd)")
    return exe


def system_pcscd_running() -> bool:
    if not SYSTEM_SOCKET.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(SYSTEM_SOCKET))
        except OSError:
            return False
    return True


def ensure_system_pcscd(timeout_s: float = 10.0, log_path: Path | None = None) -> PcscdInstance:
    """Use the system pcscd, starting it (foreground, in the background) if it is not running,
    logging to ``log_path`` (else a new private temporary file).

    The returned instance has ``pid`` set only if we started it, so ``stop()`` never kills a
    pcscd that someone else owns.
    """
    if system_pcscd_running():
        return PcscdInstance(socket_path=SYSTEM_SOCKET, vpcd_port=SYSTEM_VPCD_PORT)
    exe = _check_installed()
    SYSTEM_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="facehil-pcscd-", suffix=".log")  # created 0600, never raced
        logf = os.fdopen(fd, "w")
        log_path = Path(name)
    else:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(log_path, "a")
    with logf:
        proc = subprocess.Popen([exe, "--foreground"], stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    register(proc.pid, group=True)
    inst = PcscdInstance(socket_path=SYSTEM_SOCKET, vpcd_port=SYSTEM_VPCD_PORT, pid=proc.pid,
                         log_path=log_path, _proc=proc)
    try:
        _wait_for(system_pcscd_running, timeout_s, "the system pcscd socket")
        _wait_for(lambda: tcp_listening(SYSTEM_VPCD_PORT), timeout_s, "vpcd on port 35963")
    except PcscdError:
        inst.stop()
        raise
    return inst


def start_private_pcscd(vpcd_port: int | None = None, timeout_s: float = 10.0) -> PcscdInstance:
    """Start a pcscd of our own in private mount and network namespaces with its own vpcd ports."""
    exe = _check_installed()
    for tool, package in (("unshare", "util-linux"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            raise PcscdError(f"{tool} ({package}) is needed for a private pcscd")
    port = vpcd_port or free_port_pair()
    workdir = Path(tempfile.mkdtemp(prefix="facehil-pcscd-"))
    conf = workdir / "reader.conf.d"
    conf.mkdir()
    (conf / "vpcd").write_text(
        'FRIENDLYNAME "Virtual PCD"\n'
        f"DEVICENAME   /dev/null:0x{port:04X}\n"
        f"LIBPATH      {VPCD_DRIVER}\n"
        f"CHANNELID    0x{port:04X}\n"
    )
    log_path = workdir / "pcscd.log"
    # exec keeps pcscd as the pid we hold, so /proc/<pid>/root sees its private /run/pcscd and
    # /proc/<pid>/ns/net its network namespace (a loopback only: vpcd binds every interface).
    script = f"ip link set lo up && mount -t tmpfs tmpfs /run/pcscd && exec {exe} --foreground -c {conf}"
    Path("/run/pcscd").mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", script],
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    register(proc.pid, group=True)
    sock = Path(f"/proc/{proc.pid}/root/run/pcscd/pcscd.comm")
    inst = PcscdInstance(socket_path=sock, vpcd_port=port, pid=proc.pid, private=True,
                         workdir=workdir, log_path=log_path, _proc=proc)

    def ready() -> bool:
        if proc.poll() is not None:
            raise PcscdError(f"private pcscd exited with {proc.returncode}: {log_path.read_text()[-500:]}")
        return sock.exists() and inst.vpcd_listening(0) and inst.vpcd_listening(1)

    try:
        _wait_for(ready, timeout_s, f"private pcscd (vpcd port {port})")
    except PcscdError:
        inst.stop()
        raise
    log.info("private pcscd pid %d, vpcd ports %d/%d in its own network namespace", proc.pid, port, port + 1)
    return inst


@contextmanager
def private_pcscd_for_process() -> Iterator[PcscdInstance]:
    """A private pcscd that this whole process talks to (``PCSCLITE_CSOCK_NAME`` set in
    ``os.environ``), stopped and the variable restored on exit. libpcsclite reads the variable
    once per process, so a test or bench session holds exactly one of these."""
    inst = start_private_pcscd()
    previous = os.environ.get(SOCKET_ENV)
    os.environ.update(inst.client_env())
    try:
        yield inst
    finally:
        inst.stop()
        if previous is None:
            os.environ.pop(SOCKET_ENV, None)
        else:
            os.environ[SOCKET_ENV] = previous
