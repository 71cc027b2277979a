"""Scenario scripts: one pytest file per reader flow, run with `facehil run smoke|nightly` (or plain
pytest, which loads the facehil plugin by its entry point).

A scenario talks to the reader under test only through the station's devices and drivers (the
`dut`, `rig`, `camera`, `card_reader` fixtures of harness/plugin.py), never through `sim`, so the
same file runs on the simulated station and on a real rig; only the station file differs.
`steps.py` holds the shared steps (a patient's `Visit`: place the card, show a face, authenticate,
consent, finish), `conftest.py` the `visit` fixture and the run order (health first, firmware
update last).

Station file keys the scenarios read besides those of hardware.md:
- `[[cards]] disposable = true`: a standard card whose PIN the lock scenario may lock for good;
- `[dut] firmware_dir`: the vendor's signed images, `<name>-<version>.fw` + `<name>-<version>.fw.sig`;
  `[dut] update_to` / `downgrade_to`: versions to use (default: the newest / the oldest older one);
- `[dut] match_threshold`: the reader's face-match threshold, to record its scores in the run.
"""
