"""Run a simulated device (rig controller, subject presenter) as its own process, for tests
and benches: started with ``python -m <module>``, ready when it prints ``READY k=v ...``,
always stopped by PID."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sim.context import PipeLines, wait_ready
from sim.reaping import register

READY_TIMEOUT_S = 20.0
ROOT = Path(__file__).resolve().parent.parent


class SimProcess:
    def __init__(self, module: str, *args: str, env: dict[str, str] | None = None,
                 timeout_s: float = READY_TIMEOUT_S):
        self.argv = [sys.executable, "-m", module, *args]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, env=env or dict(os.environ), cwd=str(ROOT))
        register(self.proc.pid)  # in the caller's process group: killed alone if a test session dies
        try:
            self.ready = self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self, timeout_s: float) -> dict[str, str]:
        return wait_ready(self.proc, PipeLines(self.proc.stdout), " ".join(self.argv[2:]), timeout_s)

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
