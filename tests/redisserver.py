"""A throwaway Redis (Debian `redis-server`) on loopback, in a temp dir, for the fleet tests.

Persistence is the append-only file with fsync on every write, as a lab broker should run
(hardware.md, "Running a fleet"): a broker killed and restarted keeps its queued jobs.
`kill()` is SIGKILL (no save on shutdown), so a restart proves the AOF, not a final dump.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sim.reaping import register


class RedisServerError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    exe: str
    root: Path
    port: int
    appendonly: bool = True
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        argv = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
                "--protected-mode", "no", "--daemonize", "no", "--logfile", str(self.root / "redis.log")]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        register(self.proc.pid, group=True)  # dies with the test session even if pytest is SIGKILLed
        deadline = time.monotonic() + timeout_s
        while not _ping(self.port):
            if self.proc.poll() is not None:
                raise RedisServerError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RedisServerError(f"redis-server did not answer on port {self.port}: {self.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: nothing is saved on the way down."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart_after_kill(self) -> None:
        self.kill()
        self.start()

    def log_tail(self, n_chars: int = 1500) -> str:
        try:
            return (self.root / "redis.log").read_text()[-n_chars:]
        except OSError:
            return ""


def start_redis() -> RedisServer:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RedisServerError("redis-server is not installed (apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="facehil-redis-"))
    last: Exception | None = None
    for _ in range(3):  # another process may take the free port first
        server = RedisServer(exe, root, _free_port())
        try:
            server.start()
            return server
        except RedisServerError as exc:
            last = exc
    shutil.rmtree(root, ignore_errors=True)
    raise RedisServerError(str(last))


@pytest.fixture(scope="module")
def redis_server():
    """A Redis broker with AOF persistence, for one test module; skips without redis-server."""
    if shutil.which("redis-server") is None:
        pytest.skip("Debian redis-server is not installed (apt-get install redis-server)")
    try:
        server = start_redis()
    except RedisServerError as exc:
        pytest.fail(f"cannot start a throwaway redis-server: {exc}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
