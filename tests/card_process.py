"""Test helper: personas from the session's card deck, and one card served as its own process.

A card process is ``python -m sim.card serve`` (docs/interfaces.md) connected to one vpcd
slot of the session's private pcscd; it is tracked by PID and always stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sim.card.control import CardControl
from sim.context import PipeLines, wait_ready
from sim.reaping import register

READY_TIMEOUT_S = 20.0
EVENT_TIMEOUT_S = 10.0


def make_deck(folder: Path) -> tuple:
    """Two personas (standard, face-auth) with issued cards, generated under ``folder``."""
    from harness.facedata import resolve_faces
    from sim.card.deck import generate_deck

    generate_deck(resolve_faces(None), folder, count=2, seed=7)
    return pick_personas(folder)


def pick_personas(deck_dir: Path) -> tuple:
    """The first standard and the first face-auth persona of a deck (the ``card_deck`` fixture)."""
    from sim.card.deck import load_deck

    personas = load_deck(deck_dir)
    return (next(p for p in personas if p.profile == "standard"),
            next(p for p in personas if p.profile == "face-auth"))


class CardProcess:
    """One card process in a vpcd slot (``link``: ``PcscdInstance.card_args(slot)``); ``stop()``
    kills it by PID and waits."""

    def __init__(self, persona, state: Path, link: list[str], removed: bool = False, env: dict | None = None,
                 extra_args: tuple[str, ...] = ()):
        argv = [sys.executable, "-m", "sim.card", "serve", "--persona", str(persona.source), "--state", str(state),
                *link, "--control-port", "0", *extra_args]
        if removed:
            argv.append("--removed")
        self.persona = persona
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env or dict(os.environ), cwd=str(Path(__file__).resolve().parent.parent))
        register(self.proc.pid)  # dies with the test session even if pytest is SIGKILLed
        self.control = CardControl("127.0.0.1", self._wait_ready())

    def _wait_ready(self) -> int:
        try:
            fields = wait_ready(self.proc, PipeLines(self.proc.stdout), f"card {self.persona.id}", READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return int(fields["control"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
