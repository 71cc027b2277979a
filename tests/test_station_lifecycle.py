"""The simulated station's lifecycle (issue 10, section 1): `sim up` works again after `sim down`
and after a crash, on the default state folder and the system pcscd; `sim down` never kills a
PID that has since gone to another program; the components declare their start order."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sim.context import (COMPONENTS, PROCESSES_FILE, Component, SimContext, StationError, check_order,
                         parse_ready)
from sim.pcscd import PcscdInstance, pid_alive
from sim.station import sim_down, sim_status, start_components
import station_ns

ROOT = Path(__file__).resolve().parent.parent
CYCLES = int(os.environ.get("FACEHIL_STATION_CYCLES", "2"))  # benches/bench_station_cycles.py runs 10


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory, card_deck):
    """One run of tests/station_cycles.py in a namespace with its own system pcscd: CYCLES
    up/down cycles, then an up after every station process was SIGKILLed."""
    reason = station_ns.missing()
    if reason:
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("home")
    out = station_ns.run_with_system_pcscd(
        station_ns.python(str(ROOT / "tests" / "station_cycles.py"), str(CYCLES), str(card_deck)), home,
        timeout_s=120 + 60 * CYCLES)
    return out, home / ".local" / "state" / "facehil" / "sim"


@pytest.mark.timeout(400)
def test_up_down_up_on_the_default_folder_with_the_system_pcscd(lifecycle):
    """The README tour twice: the second `sim up` used to read the first one's READY lines from the
    appended logs and wire the rig to dead card control ports."""
    out, state = lifecycle
    cycles = [line for line in out.stdout.splitlines() if line.startswith("CYCLE")]
    assert cycles == [f"CYCLE {i} ok" for i in range(CYCLES)], out.stdout[-3000:] + out.stderr[-3000:]
    assert "has not powered" not in out.stderr, out.stderr[-2000:]
    assert (state / "logs.previous").is_dir()


@pytest.mark.timeout(400)
def test_up_after_a_station_whose_processes_were_sigkilled(lifecycle):
    out, state = lifecycle
    assert "KILLED" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.returncode == 0 and "UP AFTER KILL ok" in out.stdout and "DONE" in out.stdout, \
        out.stdout[-3000:] + out.stderr[-3000:]
    assert not (state / PROCESSES_FILE).exists()


# -- sim down and reused PIDs ------------------------------------------------------------------
def _write_processes(state_dir: Path, proc: subprocess.Popen, started_at: float) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / PROCESSES_FILE).write_text(json.dumps([{
        "name": "card-p001", "pid": proc.pid, "argv": ["python", "-m", "sim.card"], "log_path": "",
        "started_at": started_at, "kind": "process"}]))


def test_sim_down_leaves_a_pid_that_now_belongs_to_another_program(tmp_path):
    """After a crash or a reboot the saved PID may be another program's: same PID, other start time."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        started = psutil.Process(other.pid).create_time()
        _write_processes(tmp_path, other, started - 3600.0)  # our card process started an hour earlier
        assert [p["alive"] for p in sim_status(tmp_path)] == [False]
        assert sim_down(tmp_path, timeout_s=1.0) == []
        time.sleep(0.2)
        assert other.poll() is None and pid_alive(other.pid)
        # the same record with the right start time is ours, and is stopped
        _write_processes(tmp_path, other, started)
        assert sim_down(tmp_path, timeout_s=5.0) == ["card-p001"]
        assert other.wait(timeout=5) is not None
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


# -- one READY reader, fresh logs ----------------------------------------------------------------
def _ctx(tmp_path: Path) -> SimContext:
    from harness.facedata import resolve_faces

    return SimContext(state_dir=tmp_path, pcscd=PcscdInstance(socket_path=Path("/nonexistent"), vpcd_port=1),
                      faces=resolve_faces())


def test_spawn_ready_reads_only_what_this_process_wrote(tmp_path):
    """A log holding an earlier process's READY line (the state folder of an earlier up)."""
    ctx = _ctx(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "card-x.log").write_text("READY control=11111\nold run\n")
    code = "import time; time.sleep(0.3); print('READY control=22222', flush=True); time.sleep(30)"
    fields = ctx.spawn_ready("card-x", [sys.executable, "-c", code], timeout_s=20)
    try:
        assert fields == {"control": "22222"}
    finally:
        sim_down(tmp_path)


def test_a_process_that_dies_before_ready_is_a_station_error_naming_its_log(tmp_path):
    ctx = _ctx(tmp_path)
    with pytest.raises(StationError, match=r"card-y exited with 3; see .*card-y\.log:\n.*boom"):
        ctx.spawn_ready("card-y", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], timeout_s=20)


def test_parse_ready():
    assert parse_ready("READY url=http://127.0.0.1:5/stream.mjpg control=http://127.0.0.1:5") == {
        "url": "http://127.0.0.1:5/stream.mjpg", "control": "http://127.0.0.1:5"}
    assert parse_ready("READY pty=/dev/pts/3\n") == {"pty": "/dev/pts/3"}
    assert parse_ready("READYNESS x=1") is None and parse_ready("INFO READY x=1") is None


# -- declared start order ------------------------------------------------------------------------
def test_the_declared_order_is_consistent():
    check_order(COMPONENTS)
    provided = set().union(*(c.provides for c in COMPONENTS))
    assert {"cards", "pki", "camera", "rig", "eligibility", "dut", "screen"} <= provided


def test_a_wrong_start_order_is_refused_before_anything_starts(tmp_path):
    ctx = _ctx(tmp_path)
    reader = next(c for c in COMPONENTS if c.name == "reader")
    reader_first = (reader,) + tuple(c for c in COMPONENTS if c is not reader)
    with pytest.raises(StationError, match="component reader needs .*camera"):
        start_components(ctx, reader_first)
    assert ctx.processes == [] and not (tmp_path / "logs").exists()


def start_nothing(ctx: SimContext) -> None:
    """A component start that forgets to add its section."""


def test_a_component_that_does_not_provide_what_it_declared_is_refused(tmp_path):
    ctx = _ctx(tmp_path)
    liar = Component("camera", f"{__name__}:start_nothing", provides=frozenset({"camera"}))
    with pytest.raises(StationError, match="camera did not provide camera"):
        start_components(ctx, (liar,))


COMPONENT_FILES = ["sim/card/station.py", "sim/camera.py", "sim/rig.py", "sim/eligibility/station.py",
                   "sim/reader/station.py", "sim/screen_camera.py"]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):  # function-level (lazy) imports count too
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_component_imports_the_station_or_another_component():
    modules = {c.entry.partition(":")[0] for c in COMPONENTS}
    assert {f.removesuffix(".py").replace("/", ".") for f in COMPONENT_FILES} == modules
    for path in COMPONENT_FILES:
        own = path.removesuffix(".py").replace("/", ".")
        bad = _imported_modules(ROOT / path) & ((modules - {own}) | {"sim.station"})
        assert not bad, f"{path} imports {bad}"
    assert not _imported_modules(ROOT / "sim/context.py") & (modules | {"sim.station"})
