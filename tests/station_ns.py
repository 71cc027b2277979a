"""Run a program the way a user runs `facehil sim up` on the system pcscd, without touching the
machine's own pcscd, ports or home folder.

The program runs in a new mount and network namespace (``unshare -mn``, needs root): a tmpfs on
/run/pcscd, loopback up, and a pcscd with Debian's own vpcd configuration started there first,
as ``scripts/with-services.sh`` does. So the station sees *the system pcscd* (its socket at
/run/pcscd/pcscd.comm, vpcd on 35963/35964), while every other test's ports stay free. HOME is a
temporary folder and XDG_STATE_HOME is unset, so ``sim up`` resolves its *default* state folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_NS_SCRIPT = r"""
set -e
ip link set lo up
mkdir -p /run/pcscd
mount -t tmpfs tmpfs /run/pcscd
pcscd --foreground >"$NS_PCSCD_LOG" 2>&1 &
pcscd_pid=$!
for _ in $(seq 1 100); do [ -S /run/pcscd/pcscd.comm ] && break; sleep 0.05; done
set +e
"$@"
rc=$?
kill "$pcscd_pid" 2>/dev/null
wait "$pcscd_pid" 2>/dev/null
exit $rc
"""


def missing() -> str | None:
    """Why this machine cannot run a namespaced system pcscd, or None."""
    if os.geteuid() != 0:
        return "a private network namespace (unshare -mn) needs root"
    for tool in ("unshare", "ip", "pcscd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def run_with_system_pcscd(argv: list[str], home: Path, timeout_s: float) -> subprocess.CompletedProcess:
    """Run ``argv`` in the namespace with HOME=``home``; its output is captured as text."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_STATE_HOME", "PCSCLITE_CSOCK_NAME")}
    env.update(HOME=str(home), NS_PCSCD_LOG=str(home / "system-pcscd.log"), PYTHONPATH=str(ROOT))
    return subprocess.run(["unshare", "-mn", "--propagation", "private", "sh", "-c", _NS_SCRIPT, "sh", *argv],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]
