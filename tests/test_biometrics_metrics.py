"""ISO/IEC 19795-1 metrics against hand-computed small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.biometrics import metrics as m

GEN = [0.9, 0.8, 0.7, 0.4]
IMP = [0.1, 0.2, 0.3, 0.5, 0.75]


def test_fmr_and_fnmr_at_a_threshold():
    assert m.fmr_at(IMP, 0.5) == pytest.approx(2 / 5)  # 0.5 and 0.75 are accepted (>=)
    assert m.fnmr_at(GEN, 0.5) == pytest.approx(1 / 4)  # 0.4 is rejected
    assert m.fmr_at(IMP, 0.76) == 0.0
    assert m.fnmr_at(GEN, 0.0) == 0.0


def test_threshold_at_target_fmr_accepts_at_most_the_allowed_impostors():
    t = m.threshold_at_fmr(IMP, 0.2)  # one impostor of five may pass: only 0.75
    assert 0.5 < t <= 0.75
    assert m.fmr_at(IMP, t) == pytest.approx(0.2)
    assert m.fnmr_at(GEN, t) == pytest.approx(0.25)
    t0 = m.threshold_at_fmr(IMP, 0.1)  # 0.5 impostors allowed -> none
    assert t0 > 0.75 and m.fmr_at(IMP, t0) == 0.0
    assert m.fnmr_at(GEN, t0) == pytest.approx(0.5)  # 0.7 and 0.4 fall below


def test_ties_never_push_fmr_over_the_target():
    imp = [0.5, 0.5, 0.5, 0.1]
    t = m.threshold_at_fmr(imp, 0.5)  # two of four allowed, but three tie at 0.5
    assert m.fmr_at(imp, t) == 0.0
    assert t > 0.5


def test_fnmr_at_fmr_operating_point():
    op = m.fnmr_at_fmr(m.ScoreSet(GEN, IMP), 0.2)
    assert op.fmr == pytest.approx(0.2) and op.fnmr == pytest.approx(0.25)
    assert op.false_matches == 1 and op.false_non_matches == 1


def test_eer_interpolates_between_operating_points():
    # thresholds 0.5: FMR .4 FNMR .25 ; 0.7: FMR .2 FNMR .25 -> crossing at alpha .75 -> .25
    e = m.equal_error_rate(m.ScoreSet(GEN, IMP))
    assert e.eer == pytest.approx(0.25)
    assert e.threshold == pytest.approx(0.7)


def test_eer_is_zero_when_classes_separate():
    e = m.equal_error_rate(m.ScoreSet([0.9, 0.8], [0.1, 0.2]))
    assert e.eer == 0.0
    assert 0.2 < e.threshold <= 0.8


def test_eer_is_half_when_classes_coincide():
    e = m.equal_error_rate(m.ScoreSet([0.5, 0.5], [0.5, 0.5]))
    assert e.eer == pytest.approx(0.5)


def test_det_curve_is_monotonic_and_spans_both_ends():
    thr, fmr, fnmr = m.det_curve(m.ScoreSet(GEN, IMP))
    assert fmr[0] == 1.0 and fnmr[0] == 0.0
    assert fmr[-1] == 0.0 and fnmr[-1] == 1.0 and math.isinf(thr[-1])
    assert np.all(np.diff(fmr) <= 0) and np.all(np.diff(fnmr) >= 0)


def test_weights_count_comparisons_multiple_times():
    imp = [0.1, 0.9]
    assert m.fmr_at(imp, 0.5, weights=[3, 1]) == pytest.approx(0.25)
    t = m.threshold_at_fmr(imp, 0.25, weights=[3, 1])
    assert t <= 0.9  # the 0.9 impostor is one quarter of the weight: allowed


def test_rule_of_three_and_upper_bounds():
    assert m.rule_of_three(300) == pytest.approx(0.01)
    assert m.rate_upper_bound(0, 3000) == pytest.approx(0.001)
    ub = m.rate_upper_bound(5, 100)
    assert 0.05 < ub < 0.15
    assert math.isnan(m.rule_of_three(0))


def test_generalized_rates_count_fta_as_errors():
    op = m.OperatingPoint(threshold=0.5, fmr=0.1, fnmr=0.2, false_matches=1, false_non_matches=2)
    gfmr, gfnmr = m.generalized_rates(op, fta_genuine=0.1, fta_impostor=0.2)
    assert gfmr == pytest.approx(0.08)
    assert gfnmr == pytest.approx(0.28)


def test_histograms_share_bins_and_count_everything():
    h = m.histograms(m.ScoreSet(GEN, IMP), bins=5)
    assert len(h["edges"]) == 6
    assert sum(h["genuine"]) == 4 and sum(h["impostor"]) == 5


def _synthetic(n_subjects=60, seed=1):
    rng = np.random.default_rng(seed)
    gs = np.repeat(np.arange(n_subjects), 3)
    gen = rng.normal(0.7, 0.1, gs.size)
    isub = np.stack([rng.integers(0, n_subjects, 600), rng.integers(0, n_subjects, 600)], axis=1)
    imp = rng.normal(0.3, 0.1, 600)
    return m.ScoreSet(gen, imp, genuine_subjects=gs, impostor_subjects=isub)


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    s = _synthetic()
    eer = m.equal_error_rate(s).eer
    ci = m.bootstrap_ci(s, n_boot=200, seed=3)
    assert ci["eer"][0] <= eer <= ci["eer"][1]
    assert ci["eer"][1] > ci["eer"][0]
    assert ci == m.bootstrap_ci(s, n_boot=200, seed=3)
    lo, hi = ci["fnmr_at_fmr"]["0.01"]
    assert lo <= m.fnmr_at_fmr(s, 0.01).fnmr <= hi


def test_bootstrap_resamples_subjects_not_comparisons():
    # one subject owns every genuine error: resampling subjects makes the FNMR swing widely
    gs = np.repeat(np.arange(10), 10)
    gen = np.where(gs == 0, 0.1, 0.9)
    imp = np.full(100, 0.2)
    isub = np.stack([np.arange(100) % 10, (np.arange(100) + 1) % 10], axis=1)
    s = m.ScoreSet(gen, imp, genuine_subjects=gs, impostor_subjects=isub)
    ci = m.bootstrap_ci(s, n_boot=300, seed=0)
    lo, hi = ci["fnmr_at_fmr"]["0.01"]
    assert lo == 0.0 and hi >= 0.2  # subject 0 drawn 0..3 times out of 10


def test_separated_scores_give_a_zero_width_interval():
    s = m.ScoreSet([0.9] * 20, [0.1] * 20, genuine_subjects=np.arange(20),
                   impostor_subjects=np.stack([np.arange(20), (np.arange(20) + 1) % 20], axis=1))
    ci = m.bootstrap_ci(s, n_boot=100)
    assert ci["eer"] == [0.0, 0.0]


def test_summarize_reports_every_figure():
    out = m.summarize(_synthetic(), fta_genuine=0.01, n_boot=50)
    for key in ("eer", "fnmr_at_fmr", "threshold_at_fmr", "ci95", "det", "histograms", "rule_of_3",
                "generalized_at_fmr"):
        assert key in out
    assert set(out["fnmr_at_fmr"]) == {"0.01", "0.001"}
    assert out["rule_of_3"]["impostors_needed"]["0.001"] == 3000
    assert out["generalized_at_fmr"]["0.01"]["gfnmr"] >= out["fnmr_at_fmr"]["0.01"]
