"""drivers/screen.py and the screen adapter (issue 13): calibration, finger fit, identification
with real Tesseract jpn, and ScreenReader against a live reference reader's panel and touch port."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.screen import (
    REPROJECTION_LIMIT_PX,
    Bezel,
    CalibrationError,
    ScreenMap,
    ScreenRecognizer,
    calibrate_bezel,
    fit_finger,
)
from sim.fixture import Fixture
from sim.reader.display import render_panel
from sim.reader.screens import (
    BUTTONS,
    MESSAGES,
    NOT_RECOGNISED,
    ONLY_HOLDER,
    TAKE_CARD,
    TAKE_CARD_SCREENS,
    USE_FACE_AUTH,
    Screen,
    Text,
    label,
)

tesserocr = pytest.importorskip("tesserocr", reason="tesserocr (pip) with Debian tesseract-ocr-jpn is needed")

sys.path.insert(0, str(Path(__file__).parent))
from panel_reader import panel_reader  # noqa: E402

MAP = Path(__file__).resolve().parent.parent / "harness" / "screens" / "reference.toml"


def state(scr: Screen, msg: Text | None = None) -> dict:
    buttons = BUTTONS.get(scr, ())
    text = msg or MESSAGES[scr]
    if scr in TAKE_CARD_SCREENS and msg is None:
        text = text + TAKE_CARD
    return {"screen": scr.value, "msg": text.ja, "buttons": list(buttons), "labels": [label(scr, b) for b in buttons]}


def bezel_view(panel: np.ndarray, fixture: Fixture, homography: np.ndarray, px_per_mm: float = 6.0,
               size=(1280, 720)) -> np.ndarray:
    """The fixture as a camera sees it: bezel with its four ArUco markers, the panel inside, warped."""
    margin = fixture.marker_side_mm
    w_mm, h_mm = fixture.width_mm + 2 * margin, fixture.height_mm + 2 * margin
    canvas = np.full((int(h_mm * px_per_mm), int(w_mm * px_per_mm), 3), 235, np.uint8)
    d = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50)

    def at(x_mm, y_mm):
        return int(round((x_mm + margin) * px_per_mm)), int(round((y_mm + margin) * px_per_mm))

    side_px = int(round(fixture.marker_side_mm * px_per_mm))
    for mid, (cx, cy) in fixture.marker_centres_mm().items():
        x0, y0 = at(cx - fixture.marker_side_mm / 2, cy - fixture.marker_side_mm / 2)
        marker = cv2.aruco.generateImageMarker(d, mid, side_px)
        canvas[y0:y0 + side_px, x0:x0 + side_px] = marker[:, :, None]
    x0, y0 = at(fixture.panel_x_mm, fixture.panel_y_mm)
    pw, ph = int(round(fixture.panel_w_mm * px_per_mm)), int(round(fixture.panel_h_mm * px_per_mm))
    canvas[y0:y0 + ph, x0:x0 + pw] = cv2.resize(panel, (pw, ph), interpolation=cv2.INTER_AREA)
    view = cv2.warpPerspective(canvas, homography, size, borderValue=(40, 40, 40))
    return cv2.GaussianBlur(view, (3, 3), 0)


def oblique(fixture: Fixture = Fixture(), px_per_mm: float = 6.0) -> np.ndarray:
    """A camera looking down at the fixture from an angle (a keystone, not a plain scale); the
    bezel fills a 1280x720 frame."""
    w = (fixture.width_mm + 2 * fixture.marker_side_mm) * px_per_mm
    h = (fixture.height_mm + 2 * fixture.marker_side_mm) * px_per_mm
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[30, 12], [1255, 40], [1230, 712], [60, 700]])
    return cv2.getPerspectiveTransform(src, dst)


@pytest.fixture(scope="module")
def recognizer():
    return ScreenRecognizer(ScreenMap.load(MAP))


def test_bezel_calibration_rectifies_the_panel_and_holds_its_limit():
    fixture = Fixture()
    panel = render_panel(state(Screen.METHOD_SELECT))
    frame = bezel_view(panel, fixture, oblique())
    bezel = Bezel.from_table(fixture.station_table())
    cal = calibrate_bezel(frame, bezel)
    assert cal.markers == 4 and cal.reprojection_px <= REPROJECTION_LIMIT_PX
    seen = cal.rectify(frame)
    assert seen.shape == panel.shape
    # the rectified panel is the panel (edges blurred by two resamplings)
    assert np.abs(seen.astype(int) - panel.astype(int)).mean() < 12
    # a station file whose geometry is wrong is caught by the reprojection error, not trusted
    wrong = Bezel.from_table({**fixture.station_table(), "marker_side_mm": fixture.marker_side_mm * 1.3})
    with pytest.raises(CalibrationError, match="reprojection error"):
        calibrate_bezel(frame, wrong)
    # a hidden marker is named
    covered = frame.copy()
    covered[:, :400] = 40
    with pytest.raises(CalibrationError, match=r"markers \[.*\] not seen"):
        calibrate_bezel(covered, bezel)


def test_finger_fit_from_four_observed_taps():
    # a finger mounted 1.5 degrees off and 2 mm out: the fit must find it from taps alone
    a = np.deg2rad(1.5)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) / 0.1926

    def truth(x, y):
        return rot @ (np.array([x, y]) - [18 + 2.0, 18 - 1.0])

    rng = np.random.default_rng(3)
    taps = [(40.0, 30.0), (150.0, 32.0), (148.0, 100.0), (45.0, 98.0), (95.0, 65.0)]
    seen = [tuple(truth(*t) + rng.normal(0, 0.7, 2)) for t in taps]
    fm = fit_finger(taps, seen)
    assert fm.residual_px < 2.0
    for x, y in ((60, 50), (130, 90)):
        assert np.allclose(fm.to_px(x, y), truth(x, y), atol=1.5)
        assert np.allclose(fm.to_mm(*fm.to_px(x, y)), (x, y), atol=1e-6)
    with pytest.raises(CalibrationError, match="at least 4"):
        fit_finger(taps[:3], seen[:3])
    with pytest.raises(CalibrationError, match="residual"):
        fit_finger(taps, seen[:4] + [(seen[4][0] + 60, seen[4][1])])  # one tap misread


VARIANTS = [(s, state(s)) for s in Screen] + [
    (Screen.METHOD_SELECT, state(Screen.METHOD_SELECT, USE_FACE_AUTH)),
    (Screen.FACE_AUTH, state(Screen.FACE_AUTH, ONLY_HOLDER)),
    (Screen.FACE_AUTH, state(Screen.FACE_AUTH, NOT_RECOGNISED)),
    (Screen.ERROR, state(Screen.ERROR, Text("カードを読み取れませんでした。受付職員にお声がけください。", "") + TAKE_CARD)),
    (Screen.STAFF_CALL, state(Screen.STAFF_CALL, Text("顔認証を行えませんでした。受付職員にお声がけください。", ""))),
    (Screen.DONE, state(Screen.DONE, Text("終了しました。", "") + TAKE_CARD)),
    (Screen.ERROR, state(Screen.ERROR, Text("180秒間操作がなかったため終了しました。", "") + TAKE_CARD)),
]


def test_every_screen_is_identified_through_the_camera_and_never_wrongly(recognizer):
    fixture = Fixture()
    bezel = Bezel.from_table(fixture.station_table())
    wrong, missed = [], []
    for want, st in VARIANTS:
        frame = bezel_view(render_panel(st), fixture, oblique())
        v = recognizer.recognise(calibrate_bezel(frame, bezel).rectify(frame))
        if v.found and v.screen != want.value:
            wrong.append((want.value, v.screen))
        elif not v.found:
            missed.append((want.value, v.state, v.screen))
        else:
            spec = recognizer.map.screens[want.value]  # the PIN screen's keypad too: every key can be tapped
            assert set(v.buttons) == set(BUTTONS.get(want, ())) | set(spec.keypad), \
                f"{want.value}: buttons read {sorted(v.buttons)}"
    assert not wrong, f"wrong screens: {wrong}"
    assert not missed, f"not identified: {missed}"


def test_a_small_margin_is_ambiguous_never_found(recognizer):
    # the consent buttons without their question: surgery or care? the reader must wait
    st = {"screen": "consent_x", "msg": "", "buttons": ["consent", "decline"], "labels": ["同意する", "同意しない"]}
    v = recognizer.recognise(render_panel(st))
    assert v.state != "found", v
    # a text no screen has is unknown, not the nearest screen
    v = recognizer.recognise(render_panel({"screen": "x", "msg": "本日は休診です。"}))
    assert v.state == "unknown" and not v.found


def _read(text: str, *labels: str) -> list:
    """OCR lines reading ``text`` (what Tesseract gave on a camera frame) and button labels, for judge()."""
    from drivers.screen import OcrLine

    return [OcrLine(text, (40, 60, 720, 60), 80.0)] + [OcrLine(lb, (40 + 200 * i, 380, 180, 70), 80.0)
                                                        for i, lb in enumerate(labels)]


def test_a_misread_phrase_inside_another_screens_longer_phrase_is_not_that_screen(recognizer):
    """Seen in the identification bench (harsh camera, glare on the message): the lock
    screen's N16 reminder misread as マイナンバパーカード出してください scored idle's
    マイナンバーカードを置いてください at 0.82, a hair above the reminder's own 0.82, and the frame
    was *found* as idle; the timeout error, half glared, was found as done. A fuzzy short phrase
    inside a longer phrase read there, even in part, is only that one misread: wait."""
    seen = ("同計証付きカードリーダーがロックされましたお住まいの市区町|口に\\合わせください"
            "忘れずに、きカードリーダーからマイナンバパーカード出してください||")
    from drivers.screen import template_signature

    sig = template_signature(render_panel(state(Screen.PIN_LOCKED)))
    v = recognizer.judge(_read(seen), sig)
    assert not (v.found and v.screen == "idle"), v
    # the timeout error with 操作がなかったため glared: its 終了しま... is not done's 終了しました
    timeout = state(Screen.ERROR, Text("180秒間操作がなかったため終了しました。", "") + TAKE_CARD)
    v = recognizer.judge(_read("|かったため終了しまし/記れずに、きカードリーターからマイナ|ンパーカード2り出"),
                         template_signature(render_panel(timeout)))
    assert not (v.found and v.screen == "done"), v
    # but a longer phrase that only shares the words (the care consent holds the surgery one's, plus
    # 以外の診療・お薬) explains nothing: the surgery consent with its first glyph lost is still itself
    surgery = state(Screen.CONSENT_SURGERY)
    v = recognizer.judge(_read("症付きカードリーダー去の手術情報を当機関に提供することに同意しますか。", "同意する", "同意しない"),
                         template_signature(render_panel(surgery)))
    assert v.found and v.screen == "consent_surgery", v
    # read verbatim, the short phrase is the screen it belongs to, whatever longer phrase is near
    idle = recognizer.judge(_read("マイナンバーカードを置いてください"),
                            template_signature(render_panel(state(Screen.IDLE))))
    assert idle.found and idle.screen == "idle", idle


def test_one_glyph_that_tells_two_phrases_apart_must_be_read(recognizer):
    """あと2回 / あと1回 differ in one glyph, the news: あと0回 (in no phrase of the map) is neither."""
    from drivers.screen import template_signature

    sig = template_signature(render_panel(state(Screen.PIN_ENTRY)))
    for tries, want in (("2", "あと2回間違えるとロックされます"), ("1", "あと1回間違えるとロックされます"), ("0", None)):
        v = recognizer.judge(_read(f"暗証番号が違います。あと{tries}回間違えるとロックされます", "キャンセル"), sig)
        assert v.found and v.screen == "pin_entry", v
        also = [line for line in v.message.splitlines() if line.startswith("あと")]
        assert also == ([want] if want else []), (tries, v.message)


def test_a_screen_seen_again_is_named_without_ocr_but_one_glyph_changed_is_read(recognizer):
    """The watcher keeps the panels it has shown: the same panel again (through the camera, a
    little later) takes its verdict without OCR; あと1回 after あと2回, one glyph apart, is read."""
    from drivers.screen import StableScreen
    from sim.screen_camera import Effects, ScreenCamera

    cam = ScreenCamera(Effects(), seed=3)
    bezel = Bezel.from_table(Fixture().station_table())
    wrong_pin = {t: state(Screen.PIN_ENTRY, Text(f"暗証番号が違います。あと{t}回間違えるとロックされます。", ""))
                 for t in (2, 1)}
    sequence = [state(Screen.IDLE), state(Screen.METHOD_SELECT), state(Screen.IDLE), state(Screen.METHOD_SELECT),
                wrong_pin[2], wrong_pin[1]]
    watcher = StableScreen(recognizer, frames=2)
    shown, t, no = [], 0.0, 0
    for st in sequence:
        plate = cam.compose(render_panel(st))
        for _ in range(3):
            no, t = no + 1, t + 0.1
            frame = cam.view(plate, t_s=t)
            got = watcher.feed(no, t, calibrate_bezel(frame, bezel).rectify(frame))
            if got is not None:
                shown.append((got.screen, got.verdict.message))
    assert [s for s, _ in shown] == ["idle", "method_select", "idle", "method_select", "pin_entry", "pin_entry"], \
        (shown, watcher.recalls, watcher.ocr_runs)
    assert "あと2回間違えるとロックされます" in shown[4][1] and "あと1回間違えるとロックされます" in shown[5][1], shown[4:]
    assert watcher.recalls == 2 and watcher.ocr_runs == 4, (watcher.recalls, watcher.ocr_runs)


def test_ocr_that_drops_dakuten_still_reads_the_phrase():
    from drivers.screen import normalise, partial_similarity

    assert normalise("本人確認の方法を選んでください") == normalise("本人確認の方法を選んてくたさい")
    assert normalise("パ ピ") == normalise("ハヒ") and normalise("ｶﾞ") == normalise("カ")
    assert partial_similarity(normalise("暗証番号を入力"), normalise("xx暗証番号を入力yy"))[0] == 1.0


def test_button_shapes_are_found_through_glare_and_moire(recognizer):
    """Through the harsh camera the glare makes the page pure white and the moiré stripes are
    ~20 grey levels darker: they had joined the buttons into one panel-wide band (no button)."""
    from sim.screen_camera import Effects, ScreenCamera

    harsh = Effects(perspective_deg=30.0, glare=0.6, blur=0.6, exposure_drift=0.6, moire=0.4)
    cam = ScreenCamera(harsh, seed=13)
    frame = cam.view(cam.compose(render_panel(state(Screen.METHOD_SELECT))), t_s=0.4)
    panel = calibrate_bezel(frame, Bezel.from_table(Fixture().station_table())).rectify(frame)
    shapes = recognizer.ocr.read_buttons(panel)
    assert len(shapes) == 3, [(b.text, b.box) for b in shapes]
    assert all(b.box[1] > 300 for b in shapes)  # the button row, not the message


def test_a_glared_label_is_read_again_at_a_larger_scale(recognizer):
    """Seen through the screen in a fault-proof run: the face-auth card's method screen (PIN button
    hidden) was shown offering only 終了する. Under the station's default camera this frame's 顔認証を行う
    reads as 馴婦証を行う at the usual scale, and the same again on every reread of the same glare;
    the reread at a larger scale reads it."""
    from drivers.screen import StableScreen
    from sim.screen_camera import Effects, ScreenCamera

    st = state(Screen.METHOD_SELECT)
    st["buttons"] = ["face", "end"]
    st["labels"] = [label(Screen.METHOD_SELECT, b) for b in st["buttons"]]
    cam = ScreenCamera(Effects(), seed=13)
    frame = cam.view(cam.compose(render_panel(st)), t_s=6 * 0.37)
    panel = calibrate_bezel(frame, Bezel.from_table(Fixture().station_table())).rectify(frame)
    first = recognizer.recognise(panel)
    assert first.found and first.unread_buttons == 1 and "face" not in first.buttons, first  # the glare
    watcher, shown = StableScreen(recognizer, frames=2), None
    for no in range(1, 12):  # the same glared frame over and over: only a new scale can read it
        shown = watcher.feed(no, no * 0.066, panel) or shown
    assert shown is not None and set(shown.verdict.buttons) == {"face", "end"}, shown


def test_template_must_confirm_the_ocr(recognizer):
    # the idle words on a panel laid out like no reference frame (text low, header gone)
    img = np.full((480, 800, 3), 255, np.uint8)
    img[:] = (30, 120, 30)
    st_img = render_panel(state(Screen.IDLE))
    img[300:400, :] = st_img[70:170, :]
    v = recognizer.recognise(img)
    assert v.screen == "idle" and v.state == "ambiguous" and v.template_ncc < 0.55, v


WAIT_S = 8.0


def test_screen_reader_drives_a_visit_through_the_panel_and_the_touch_port(tmp_path):
    from drivers.screen_reader import ScreenReader

    with panel_reader(tmp_path, fps=15.0) as (sim, hw, control, panel):
        # no [staff] here: the control port has one host, and this test reads the truth from it
        sr = ScreenReader(panel.panel_url, finger=f"touch:{panel.touch_url}")
        with sr:
            assert sr.wait_for_screen("idle", WAIT_S).id == "idle"
            control.clear_events()
            sr.clear_events()
            hw.insert()
            ev = sr.wait_for_event("card", WAIT_S, state="inserted")
            st = sr.wait_for_screen("method_select", WAIT_S)
            assert st.buttons == ("face", "pin", "end")
            sr.press("face")  # read the label, tap its centre on the glass
            auth = sr.wait_for_event("auth", 15.0)
            assert auth.get("method") == "face" and auth.get("result") == "ok"
            for item, screen in (("consent", "consent_surgery"), ("decline", "consent_care"),
                                 ("consent", "consent_checkup")):
                sr.wait_for_screen(screen, WAIT_S)
                sr.press(item)
            elig = sr.wait_for_event("eligibility", WAIT_S)
            assert elig.get("result") == "ok" and elig.get("method") == "face"
            assert sr.wait_for_event("remind", WAIT_S).get("what") == "take_card"
            consents = {e.get("item"): e.get("choice") for e in sr.history() if e.kind == "consent"}
            assert consents == {"surgery": "consent", "care": "decline", "checkup": "consent"}
            assert consents == {e.get("item"): e.get("choice") for e in control.history() if e.kind == "consent"}
            hw.remove()
            sr.wait_for_event("card", WAIT_S, state="removed")
            sr.wait_for_screen("idle", WAIT_S)
            # what the screen saw against what the reader says it showed: same screens, same times
            truth = [e for e in control.history() if e.kind == "screen"]
            seen = [e for e in sr.history() if e.kind == "screen"]
            # a screen shown for less than two frames may be missed; none may be invented or reordered
            truth_ids = [e.get("id") for e in truth]
            seen_ids = [e.get("id") for e in seen]
            brief = {a.get("id") for a, b in zip(truth, truth[1:]) if b.host_monotonic_s - a.host_monotonic_s < 0.3}
            assert set(truth_ids) - set(seen_ids) <= brief, (truth_ids, seen_ids)
            assert seen_ids == [i for i in truth_ids if i in seen_ids], (truth_ids, seen_ids)
            # timed by the frame that first showed it, not by when OCR finished (0.2-1 s a read): the
            # bench measures the p95 against one frame interval; here a loaded machine's MJPEG lag is allowed
            for s in seen:
                if s.get("implied") == "1":
                    continue
                t = next(e for e in truth if e.get("id") == s.get("id"))
                assert abs(s.host_monotonic_s - t.host_monotonic_s) <= 0.5, (s, t)
            assert ev.host_monotonic_s <= seen[0].host_monotonic_s
            with pytest.raises(Exception, match="invisible"):
                sr.wait_for_event("face", 0.1)


def test_screens_learn_drafts_a_map_a_recognizer_can_use(tmp_path):
    """`facehil screens learn` walks a reader through its screens by taps on the glass and writes
    a draft map and reference frames; that draft, as written, identifies the screens it saw."""
    import tomllib

    import cv2
    from typer.testing import CliRunner

    from drivers.screen import ScreenMap, ScreenRecognizer
    from harness.cli import app
    from sim.reader.display import button_rects

    x, y, w, h = button_rects({"screen": "method_select", "buttons": "face,pin,end"})["end"]
    with panel_reader(tmp_path, fps=15.0) as (sim, hw, control, panel):
        hw.insert()
        control.wait_for_screen("method_select", WAIT_S)
        station = tmp_path / "station.toml"
        station.write_text(f'[dut]\npanel = "{panel.panel_url}"\ntouch = "{panel.touch_url}"\n')
        out = tmp_path / "draft"
        result = CliRunner().invoke(app, ["screens", "learn", "--station", str(station), "--out", str(out),
                                          "--screens", "2", "--duration-s", "40", "--tap", f"{x + w / 2},{y + h / 2}"])
        assert result.exit_code == 0, result.output
        assert control.screen().id == "done", "the tap on 終了する did not reach the reader"
    draft = tomllib.loads((out / "map.toml").read_text(encoding="utf-8"))
    assert set(draft["screens"]) == {"screen_01", "screen_02"}, draft
    first, second = draft["screens"]["screen_01"], draft["screens"]["screen_02"]
    assert any("本人確認の方法" in p for p in first["phrases"]), first
    assert "終了する" in first["buttons"].values(), first
    assert any("終了しました" in p for p in second["phrases"]), second
    frames = {p.stem: cv2.imread(str(p)) for p in (out / "reference").glob("*.png")}
    assert set(frames) == {"screen_01", "screen_02"} and all(f.shape[:2] == (480, 800) for f in frames.values())
    recognizer = ScreenRecognizer(ScreenMap.load(out / "map.toml"))
    for sid, frame in frames.items():
        v = recognizer.recognise(frame)
        assert v.found and v.screen == sid, (sid, v)


def test_screens_station_writes_a_screen_driven_copy_into_a_new_folder(tmp_path):
    """The README's `facehil screens station … --out out/screen-station.toml`, with no out/ yet."""
    import tomllib

    from typer.testing import CliRunner

    from harness.cli import app

    src = tmp_path / "station.toml"
    src.write_text('[dut]\nadapter = "reference"\nurl = "socket://127.0.0.1:9"\ntouch = "socket://127.0.0.1:8"\n'
                   '[screen]\ncamera = "http://127.0.0.1:7/stream.mjpg"\n[rig.finger]\ngrbl = "serial:/dev/pts/9"\n')
    out = tmp_path / "out" / "screen-station.toml"
    result = CliRunner().invoke(app, ["screens", "station", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = tomllib.loads(out.read_text())
    assert table["dut"]["adapter"] == "screen" and table["dut"]["url"] == "http://127.0.0.1:7/stream.mjpg"
    assert table["staff"] == {"adapter": "reference", "url": "socket://127.0.0.1:9"}
    assert table["screen"]["finger"] == "grbl:serial:/dev/pts/9"
    bad = CliRunner().invoke(app, ["screens", "station", str(src), "--out", str(src / "x.toml")])
    assert bad.exit_code == 2 and "cannot write" in bad.output, bad.output  # a file as the folder
