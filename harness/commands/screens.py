"""`facehil screens learn|station`: onboard a reader model through its screen (issue 13).

* ``learn --station FILE`` watches the reader's screen through the station's screen camera while
  a person (or the rig's finger, ``--tap``) walks it through its screens; every new stable screen
  is read by Tesseract and kept. It writes a draft screen map (TOML: one ``[screens.screen_NN]``
  per screen, its text lines as candidate key phrases, the labels read on its buttons) and the
  reference frames, for a person to review: rename the ids, cut the phrases to the words that tell
  the screens apart, add the ``[[events]]`` rules.
* ``station SRC --out DST`` writes a copy of a station file that drives its reader through the
  screen: ``[dut] adapter = "screen"`` on the screen camera, the old control port kept only as
  ``[staff]``.
"""

from __future__ import annotations

import logging
import time
import tomllib
from pathlib import Path

import cv2
import tomli_w
import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()
log = logging.getLogger(__name__)


def screen_station(src: dict, *, screen_map: str = "reference", finger: str = "grbl") -> dict:
    """The station table ``src`` rewritten to drive its reader through the screen."""
    dut = dict(src.get("dut") or {})
    screen = dict(src.get("screen") or {})
    if not screen.get("camera"):
        raise ValueError("the station has no screen camera ([screen] camera): nothing to see the reader with")
    if finger == "touch":
        if not dut.get("touch"):
            raise ValueError("finger = touch needs the reader's touch port ([dut] touch)")
        finger_spec = f"touch:{dut['touch']}"
    elif finger == "grbl":
        grbl = ((src.get("rig") or {}).get("finger") or {}).get("grbl")
        if not grbl:
            raise ValueError("finger = grbl needs the rig's Grbl finger line ([rig.finger] grbl)")
        finger_spec = f"grbl:{grbl}"
    else:
        raise ValueError(f"finger {finger!r}: use touch or grbl")
    out = dict(src)
    out["staff"] = {"adapter": dut.get("adapter", "reference"), "url": dut.get("url")}
    out["dut"] = {k: v for k, v in dut.items() if k not in ("adapter", "url")}
    out["dut"].update(adapter="screen", url=screen["camera"])
    out["screen"] = {**screen, "map": screen_map, "finger": finger_spec}
    return out


@app.command("station")
def station_cmd(src: Path = typer.Argument(..., help="A station file whose reader has a screen camera."),
                out: Path = typer.Option(..., "--out", help="Where to write the screen-driven station file."),
                screen_map: str = typer.Option("reference", "--map", help="Screen map name or path."),
                finger: str = typer.Option("grbl", help="grbl (the rig's Grbl finger, fitted through the camera) "
                                                        "or touch (the reader's touch port, panel pixels)")) -> None:
    """Write a copy of SRC whose reader is driven through its screen ([dut] adapter = "screen")."""
    try:
        data = tomllib.loads(src.read_text(encoding="utf-8"))
        table = screen_station(data, screen_map=screen_map, finger=finger)
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        console.print(f"[red]screens station:[/red] {src}: {exc}")
        raise typer.Exit(2)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(tomli_w.dumps(table), encoding="utf-8")
    except OSError as exc:
        console.print(f"[red]screens station:[/red] cannot write {out}: {exc}")
        raise typer.Exit(2)
    print(out)


def _calibrated_grabber(station_path: Path):
    from drivers.screen import Bezel, Calibration, FrameGrabber, calibrate_bezel

    data = tomllib.loads(station_path.read_text(encoding="utf-8"))
    screen = data.get("screen") or {}
    source = screen.get("camera") or (data.get("dut") or {}).get("panel")
    if not source:
        raise ValueError(f"{station_path} has no [screen] camera nor [dut] panel to watch")
    grabber = FrameGrabber(source).open()
    _, _, frame = grabber.latest()
    if "marker_side_mm" in screen:
        cal = calibrate_bezel(frame, Bezel.from_table(screen))
        console.print(f"calibrated: reprojection {cal.reprojection_px:.2f} px over {cal.markers} markers")
    else:
        cal = Calibration.identity((frame.shape[1], frame.shape[0]))
    return grabber, cal, data


@app.command("learn")
def learn(station: Path = typer.Option(..., "--station", help="Station file with a screen camera."),
          out: Path = typer.Option(Path("screens-draft"), "--out", help="Folder for the draft map and frames."),
          duration_s: float = typer.Option(120.0, "--duration-s", help="Stop watching after this long."),
          screens: int = typer.Option(0, "--screens", help="Stop after this many distinct screens (0: no limit)."),
          tap: list[str] = typer.Option([], "--tap", help="x,y panel pixels the finger taps, in turn, after each new "
                                                          "screen (repeatable); without it a person drives the reader"),
          model: str = typer.Option("draft reader model", "--model")) -> None:
    """Watch the reader's screens (driven by a person, or by --tap) and write a draft map + frames."""
    from drivers.screen import JapaneseOcr, change_signature, panel_changed
    from drivers.screen_reader import TouchGlass

    try:
        grabber, cal, data = _calibrated_grabber(station)
    except (OSError, ValueError, RuntimeError) as exc:
        console.print(f"[red]screens learn:[/red] {exc}")
        raise typer.Exit(2)
    ocr = JapaneseOcr()
    finger = None
    if tap:
        touch = (data.get("dut") or {}).get("touch")
        if not touch:
            console.print("[red]screens learn:[/red] --tap needs the reader's touch port ([dut] touch)")
            raise typer.Exit(2)
        finger = TouchGlass(touch)
        finger.open()
    frames_dir = out / "reference"
    frames_dir.mkdir(parents=True, exist_ok=True)
    kept: list[tuple[str, object, list, list]] = []  # (id, signature, lines, button lines)
    last_sig = None
    run = 0
    no = 0
    deadline = time.monotonic() + duration_s
    taps = list(tap)
    try:
        while time.monotonic() < deadline and (not screens or len(kept) < screens):
            no, _, frame = grabber.wait_frame(no)
            panel = cal.rectify(frame)
            sig = change_signature(panel)
            if last_sig is None or panel_changed(sig, last_sig):
                last_sig, run = sig, 0
            run += 1
            if run != 3:  # stable over three frames, once
                continue
            if any(not panel_changed(sig, k[1]) for k in kept):
                continue  # seen before
            sid = f"screen_{len(kept) + 1:02d}"
            lines, buttons = ocr.read(panel), ocr.read_buttons(panel)
            cv2.imwrite(str(frames_dir / f"{sid}.png"), panel)
            kept.append((sid, sig, lines, buttons))
            console.print(f"{sid}: {' / '.join(l.text.replace(' ', '') for l in lines)[:100]}")
            if finger is not None and taps:
                x, y = (float(v) for v in taps.pop(0).split(","))
                finger.tap_px(x, y)
    except KeyboardInterrupt:
        pass
    finally:
        grabber.close()
        if finger is not None:
            finger.close()
    draft = {"model": model, "reference_frames": "reference", "screens": {}}
    for sid, _, lines, buttons in kept:
        texts = [l.text.replace(" ", "") for l in lines if len(l.text.replace(" ", "")) >= 4]
        draft["screens"][sid] = {"phrases": texts or ["(nothing read: add a phrase)"],
                                 "buttons": {f"button_{i + 1}": b.text.replace(" ", "") for i, b in enumerate(buttons)}}
    path = out / "map.toml"
    path.write_text("# Draft screen map written by `facehil screens learn`: review before use.\n"
                    + tomli_w.dumps(draft), encoding="utf-8")
    console.print(f"{len(kept)} screens; draft map {path}, reference frames in {frames_dir}")
    print(path)
