"""Run a simulated device (rig controller, subject presenter) as its own process, for tests
and benches: started with ``python -m <module>``, ready when it prints ``READY k=v ...``,
always stopped by PID."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

READY_TIMEOUT_S = 20.0
ROOT = Path(__file__).resolve().parent.parent


class SimProcess:
    def __init__(self, module: str, *args: str, env: dict[str, str] | None = None,
                 timeout_s: float = READY_TIMEOUT_S):
        self.argv = [sys.executable, "-m", module, *args]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, env=env or dict(os.environ), cwd=str(ROOT))
        try:
            self.ready = self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self, timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        buf = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
                for line in buf.decode("utf-8", "replace").splitlines():
                    if line.startswith("READY "):
                        return dict(part.split("=", 1) for part in line[len("READY "):].split() if "=" in part)
            elif self.proc.poll() is not None:
                break
        raise RuntimeError(f"{' '.join(self.argv[2:])} did not print READY (exit {self.proc.poll()}): "
                           f"{buf.decode('utf-8', 'replace')[-400:]}")

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> "SimProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def rig_url(p: SimProcess) -> str:
    """The device URL a ``python -m sim.rig`` process announced."""
    if "pty" in p.ready:
        return p.ready["pty"]
    return f"socket://{p.ready['socket']}"
