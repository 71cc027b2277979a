"""The simulated reader as a device: power, non-volatile storage, and the firmware running on it.

``ReaderDevice`` owns:

* the *power*: ``power_on()`` boots (the bootloader picks and verifies a slot, the firmware
  starts its main loop and announces ``EVT boot``); ``power_off()`` is a power cut: the flow, the
  upload session, the event numbering and visual mode are gone; only the slot files remain;
* the *main loop* thread, the only one that touches the flow: it takes inputs (card events,
  patient and staff actions) from a queue and sends ``Tick`` continuously while the face screen
  is up (each tick is one capture-and-match), every ``tick_ms`` otherwise;
* the *events*: numbered per boot, stamped in ms since boot, kept in a ring for replay.

Hardware (card reader, camera, matcher, eligibility client) comes from a ``Hardware`` object
started at each boot and stopped at power-off, so the same device runs on recorded ports in
tests and on the real parts in the reader process.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from drivers.reader import format_event
from sim.reader import firmware as fw
from sim.reader.flow import FlowConfig, FlowEvent, Faults, Input, Outcome, ReaderFlow, Tick
from sim.reader.ports import Ports
from sim.reader.screens import Screen
from sim.reader.slots import BootError, SlotStore

log = logging.getLogger(__name__)

VENDOR = "facehil"
EVENT_RING = 1024


class Hardware(Protocol):
    """The reader's parts, (re)started at every boot."""

    def start(self, submit: Callable[[Input], None]) -> Ports: ...
    def stop(self) -> None: ...


@dataclass
class DeviceOptions:
    state_dir: Path  # non-volatile storage: slots, trusted vendor key
    firmware_dir: Path  # where the factory image and the vendor public key come from
    factory_version: str = fw.DEFAULT_VERSION
    serial: str = "SIM-READER-0001"
    boot_ms: int = 300
    tick_ms: int = 50
    flow_config: FlowConfig = field(default_factory=FlowConfig)
    faults: Faults = field(default_factory=Faults)


@dataclass
class _Pending:
    inp: Input
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None


class ReaderDevice:
    def __init__(self, options: DeviceOptions, hardware: Hardware, send_line: Callable[[str], None]):
        self.options = options
        self.hardware = hardware
        self._send_line = send_line
        self._power_lock = threading.RLock()
        self._teardown: threading.Thread | None = None  # the last power cut's part teardown
        self._emit_lock = threading.Lock()
        self.fw_lock = threading.Lock()
        self.powered = False
        self.booted = False
        self._gen = 0
        self._boot_mono_ms = 0
        self._evseq = 0
        self._ring: deque[tuple[int, str]] = deque(maxlen=EVENT_RING)
        self._inbox: queue.Queue[_Pending] = queue.Queue()
        self.flow: ReaderFlow | None = None
        self.slots: SlotStore | None = None
        self.manifest: fw.Manifest | None = None
        self.boot_slot = ""
        self._snapshot: dict[str, Any] = {}
        self._faults = options.faults
        getattr(hardware, "set_faults", lambda f: None)(options.faults)  # faults of the face hardware
        self.boot_error: str | None = None

    # -- faults (a property of the device build, switchable for scenario suites) -----------------
    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        self._faults = faults
        getattr(self.hardware, "set_faults", lambda f: None)(faults)
        if self.flow is not None:
            self.flow.faults = faults
        if self.slots is not None:
            self.slots.accept_downgrade = faults.accept_downgrade
            self.slots.accept_bad_signature = faults.accept_bad_signature

    # -- power ----------------------------------------------------------------------------------
    def power_on(self) -> None:
        with self._power_lock:
            if self.powered:
                return
            self.powered = True
            self._gen += 1
            gen = self._gen
        threading.Thread(target=self._boot, args=(gen,), name=f"reader-boot-{gen}", daemon=True).start()

    def power_off(self) -> None:
        """A power cut: everything volatile is lost at once."""
        with self._power_lock:
            if not self.powered:
                return
            self.powered = False
            self.booted = False
            self._gen += 1
            self.flow = None
            self.slots = None  # the upload session lived in RAM
            self._inbox = queue.Queue()
            self._snapshot = {}
            # A power cut is instant: the supply answers at once and the parts are torn down behind
            # it; the next boot waits for that teardown before it starts the parts again.
            self._teardown = threading.Thread(target=self._stop_hardware, name="reader-power-cut", daemon=True)
            self._teardown.start()

    def _stop_hardware(self) -> None:
        try:
            self.hardware.stop()
        except Exception:  # a part that fails to stop must not keep the power on
            log.exception("hardware stop failed")

    def reboot(self) -> None:
        """A firmware-initiated reboot (REBOOT command, or after an update)."""
        with self._power_lock:
            self.power_off()
            self.power_on()

    def _alive(self, gen: int) -> bool:
        return self._gen == gen and self.powered

    def _boot(self, gen: int) -> None:
        time.sleep(self.options.boot_ms / 1000)
        if not self._alive(gen):
            return
        try:
            slots = self._bootloader()
            result = slots.boot()
        except (BootError, OSError, fw.ImageError, Exception) as exc:  # a brick is reported, not raised
            log.exception("boot failed")
            self.boot_error = str(exc)
            return
        manifest = result.manifest
        teardown = self._teardown
        if teardown is not None:
            teardown.join()
        try:
            ports = self.hardware.start(lambda inp, g=gen: self._submit(inp, g))
        except Exception as exc:
            log.exception("hardware start failed")
            self.boot_error = f"hardware: {exc}"
            return
        with self._power_lock:
            if not self._alive(gen):
                return
            self.slots = slots
            self.manifest = manifest
            self.boot_slot = result.slot
            self._boot_mono_ms = int(time.monotonic() * 1000)
            self._evseq = 0
            self._ring.clear()
            self.flow = ReaderFlow(ports, features=frozenset(manifest.features), config=self.options.flow_config,
                                   faults=self._faults, sink=lambda ev, g=gen: self._emit_flow(ev, g))
            self.booted = True
            self.boot_error = None
        self.emit("boot", gen, boot_id=secrets.token_hex(4), version=manifest.version, slot=result.slot, rolled_back=int(result.rolled_back),
                  reason=result.error, features=",".join(manifest.features))
        self.flow.start()
        self._snapshot = self.flow.state()
        log.info("booted %s from slot %s", manifest.version, result.slot)
        self._main_loop(gen, self.flow)

    def _bootloader(self) -> SlotStore:
        root = self.options.state_dir / "slots"
        trusted = self.options.state_dir / "trusted-vendor.pub"
        if not trusted.exists():  # factory provisioning: the vendor key is fused in once
            root.mkdir(parents=True, exist_ok=True)
            fw.write_atomic(trusted, (self.options.firmware_dir / "vendor.pub").read_bytes())
        slots = SlotStore(root, fw.load_public_key(trusted), accept_downgrade=self._faults.accept_downgrade,
                          accept_bad_signature=self._faults.accept_bad_signature)
        if not slots.provisioned():
            slots.provision(*fw.load_image(self.options.firmware_dir, self.options.factory_version))
        return slots

    # -- main loop ------------------------------------------------------------------------------
    def _submit(self, inp: Input, gen: int | None = None) -> _Pending | None:
        if gen is not None and not self._alive(gen):
            return None
        pending = _Pending(inp)
        self._inbox.put(pending)
        return pending

    def submit(self, inp: Input, timeout_s: float = 10.0) -> Outcome | None:
        """Feed an input to the flow and wait for its outcome; None if off or no answer in time."""
        if not self.booted:
            return None
        pending = self._submit(inp)
        if pending is None or not pending.done.wait(timeout_s):
            return None
        return pending.outcome

    def post(self, inp: Input) -> bool:
        """Feed an input without waiting for its outcome (the touch glass does not wait for the
        application); False if the reader is off or booting."""
        return self.booted and self._submit(inp) is not None

    def _main_loop(self, gen: int, flow: ReaderFlow) -> None:
        inbox = self._inbox
        tick_s = self.options.tick_ms / 1000
        while self._alive(gen):
            busy = flow.screen is Screen.FACE_AUTH
            try:
                pending = inbox.get_nowait() if busy else inbox.get(timeout=tick_s)
            except queue.Empty:
                pending = _Pending(Tick())
            outcome = flow.handle(pending.inp)
            if not self._alive(gen):
                return  # the power went while we worked: nothing of this reaches the outside
            self._snapshot = flow.state()
            pending.outcome = outcome
            pending.done.set()

    # -- events ---------------------------------------------------------------------------------
    def _emit_flow(self, ev: FlowEvent, gen: int) -> None:
        if ev.kind in ("screen", "mode") and self.flow is not None and self._alive(gen):
            self._snapshot = self.flow.state()  # SCREEN answers what the patient sees now
        self.emit(ev.kind, gen, _t_mono_ms=ev.t_ms, **ev.fields)

    def emit(self, kind: str, gen: int | None = None, /, _t_mono_ms: int | None = None, **fields: Any) -> None:
        with self._emit_lock:
            if gen is not None and not self._alive(gen):
                return
            if not self.booted:
                return
            now = _t_mono_ms if _t_mono_ms is not None else int(time.monotonic() * 1000)
            self._evseq += 1
            line = format_event(self._evseq, max(0, now - self._boot_mono_ms), kind, fields)
            self._ring.append((self._evseq, line))
            self._send_line(line)

    def replay(self, from_seq: int) -> list[str]:
        with self._emit_lock:
            return [line for seq, line in self._ring if seq >= from_seq]

    # -- queries ----------------------------------------------------------------------------------
    def uptime_ms(self) -> int:
        return int(time.monotonic() * 1000) - self._boot_mono_ms

    def screen_fields(self) -> dict[str, Any]:
        return dict(self._snapshot)

    def info_fields(self) -> dict[str, Any]:
        m = self.manifest
        return {"fw": m.version if m else "", "features": ",".join(m.features) if m else "", "slot": self.boot_slot,
                "vendor": VENDOR, "model": fw.MODEL, "serial": self.options.serial,
                "mode": self._snapshot.get("mode", "face"),
                **self.options.flow_config.variant()}  # the choices the notice leaves open (hardware.md 6.6)
