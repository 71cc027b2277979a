"""The judging helpers the issue-11 scenarios share (scenarios/steps.py), on hand-made events."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from drivers.reader import FirmwareInfo, ReaderEvent, ScreenState
from harness.config import DutConfig
from scenarios.steps import TAKE_CARD_REMINDER, reader_claim, reminded_to_take_card, require_feature, tells_to_use_face_auth


class _Reader:
    """The two queries the helpers make of a reader: INFO and SCREEN."""

    def __init__(self, features=(), screen="done", message="", **info):
        self._info = FirmwareInfo("1.4.0", frozenset(features), "A", "v", "m", 1, info)
        self._screen = ScreenState(screen, (), message, "face")

    def info(self):
        return self._info

    def screen(self):
        return self._screen


def _station(**dut):
    expect = tuple(dut.pop("expect_features", ()))
    return SimpleNamespace(dut=DutConfig(url="socket://x:1", expect_features=expect, extra=dut))


def _ev(seq, kind, **fields):
    return ReaderEvent(seq=seq, kind=kind, reader_ms=seq, host_monotonic_s=float(seq), fields=fields)


def test_a_declared_feature_that_is_missing_fails_not_skips():
    with pytest.raises(pytest.fail.Exception, match="declares the reader has visual_check_registration"):
        require_feature(_station(expect_features=["visual_check_registration"]), _Reader(), "visual_check_registration")
    with pytest.raises(pytest.skip.Exception):
        require_feature(_station(), _Reader(), "visual_check_registration")
    require_feature(_station(), _Reader(features=["visual_check_registration"]), "visual_check_registration")


def test_the_station_file_claim_wins_over_the_readers_info():
    assert reader_claim(_station(checkup_consent="as_pressed"), _Reader(checkup_consent="refuse_under40"),
                        "checkup_consent") == "as_pressed"
    assert reader_claim(_station(), _Reader(checkup_consent="refuse_under40"), "checkup_consent") == "refuse_under40"
    assert reader_claim(_station(), _Reader(), "checkup_consent") is None


@pytest.mark.parametrize("events,screen,message,expected", [
    ([_ev(1, "screen", id="done"), _ev(2, "remind", what="take_card")], "done", "", True),
    ([_ev(1, "screen", id="done", msg=f"終了しました。\n{TAKE_CARD_REMINDER}")], "done", "", True),
    ([_ev(1, "screen", id="error")], "error", f"x\n{TAKE_CARD_REMINDER}", True),
    # a reminder before the ending (on another screen) is not the ending's reminder
    ([_ev(1, "remind", what="take_card"), _ev(2, "screen", id="done")], "done", "", False),
    ([_ev(1, "screen", id="done")], "done", "終了しました。", False),
    ([_ev(1, "screen", id="method_select"), _ev(2, "remind", what="take_card")], "method_select", "", False),
])
def test_the_reminder_must_come_with_the_ending(events, screen, message, expected):
    visit = SimpleNamespace(dut=_Reader(screen=screen, message=message), events=lambda: events)
    assert reminded_to_take_card(visit) is expected


def test_pointing_to_face_authentication():
    assert tells_to_use_face_auth("「顔認証を行う」を選んでください。")
    assert tells_to_use_face_auth(None, "Use face authentication.")
    assert not tells_to_use_face_auth("この操作はできません。", "Not possible.")
