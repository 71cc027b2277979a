"""Suite definitions: which scenario files and markers make up `smoke` and `nightly`.

A suite is a pytest selection over the packaged `scenarios/` folder: files (in run order)
plus an optional marker expression. `facehil run <suite>` turns it into pytest arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Run order: the health check first (a failing station skips the rest), the firmware update
# last (it changes the reader under test, then re-runs every flow as a regression check).
FLOW_FILES: tuple[str, ...] = (
    "test_health.py",
    "test_card_io.py",
    "test_face_auth_card.py",
    "test_pin_counter.py",  # before test_standard_card.py, which locks the disposable card
    "test_standard_card.py",
    "test_visual_fallback.py",
    "test_assisted_placement.py",
    "test_several_faces.py",
    "test_take_card_reminder.py",  # before test_registration.py, which registers the unregistered cards
    "test_consent.py",
    "test_registration.py",
    "test_firmware_update.py",
)


class SuiteError(ValueError):
    """An unknown suite name."""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    files: tuple[str, ...]
    markexpr: str | None = None
    budget_s: float = 600.0  # what the suite must finish within on the simulated station
    root: Path | None = None  # folder of the files; None: facehil's own scenarios/

    def pytest_args(self) -> list[str]:
        """Paths and marker selection for pytest."""
        root = self.root or scenarios_path()
        args = [str(root / f) for f in self.files]
        if self.markexpr:
            args += ["-m", self.markexpr]
        return args


SUITES: dict[str, Suite] = {
    "smoke": Suite(
        name="smoke",
        description="station health, then one happy path per card profile",
        files=("test_health.py", "test_face_auth_card.py", "test_standard_card.py"),
        markexpr="health or smoke",
        budget_s=60.0,
    ),
    "nightly": Suite(
        name="nightly",
        description="every flow: happy and failure paths over cards x subjects x conditions",
        files=FLOW_FILES,
        budget_s=600.0,
    ),
}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise SuiteError(f"unknown suite {name!r}; known: {', '.join(SUITES)}") from None


def scenarios_path() -> Path:
    """The scenario folder shipped with facehil (a data package next to harness/)."""
    import scenarios

    # __path__, not __file__: an editable install may map it as a namespace package
    return Path(next(iter(scenarios.__path__))).resolve()
