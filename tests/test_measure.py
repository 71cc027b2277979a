"""harness.measure: limits, marginal bands, rate limits on confidence bounds, station limits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta, binom

from harness.measure import (Limit, MeasurementError, Measurements, Outcome, RateLimit, parse_limits,
                             rate_bounds, unit_from_name)


# -- plain limits -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (0.0, Outcome.PASS), (1200.0, Outcome.PASS), (1200.5, Outcome.MARGINAL), (1500.0, Outcome.MARGINAL),
    (1500.01, Outcome.FAIL), (math.inf, Outcome.FAIL), (math.nan, Outcome.FAIL),
])
def test_high_limit_with_marginal_band(value, expected):
    assert Limit(high=1500, marginal=1200).judge(value) is expected


@pytest.mark.parametrize("value, expected", [
    (10.0, Outcome.PASS), (5.0, Outcome.PASS), (4.9, Outcome.MARGINAL), (2.0, Outcome.MARGINAL),
    (1.99, Outcome.FAIL), (-math.inf, Outcome.FAIL),
])
def test_low_limit_with_marginal_band(value, expected):
    assert Limit(low=2, marginal=5).judge(value) is expected


def test_two_sided_limit_and_bands():
    lim = Limit(low=10, high=20, marginal_low=12, marginal_high=18)
    assert [lim.judge(v) for v in (9, 11, 15, 19, 21)] == [
        Outcome.FAIL, Outcome.MARGINAL, Outcome.PASS, Outcome.MARGINAL, Outcome.FAIL]


def test_marginal_shorthand_is_the_explicit_band():
    assert Limit(high=1500, marginal=1200) == Limit(high=1500, marginal_high=1200)
    assert Limit(low=1, marginal=3) == Limit(low=1, marginal_low=3)
    assert Limit().judge(1e300) is Outcome.PASS


@pytest.mark.parametrize("kwargs, words", [
    (dict(low=10, high=5), "above high"),
    (dict(high=10, marginal_high=11), "must not exceed"),
    (dict(low=10, marginal_low=9), "must not be below"),
    (dict(marginal_high=5), "needs a high limit"),
    (dict(low=1, high=2, marginal=1.5), "exactly one"),
    (dict(high="1500"), "real number"),
    (dict(high=True), "real number"),
])
def test_inconsistent_limits_are_refused(kwargs, words):
    with pytest.raises(MeasurementError, match=words):
        Limit(**kwargs)


def test_collector_judges_records_and_infers_units():
    m = Measurements()
    a = m("face_auth_latency_ms", 1000, limit=Limit(high=1500, marginal=1200))
    b = m("face_auth_latency_ms", 1300, high=1500, marginal=1200)
    c = m("card_offset_mm", 7.5, low=0, high=5)
    d = m("score", np.float64(0.7))  # numpy scalars are numbers too
    assert (a.outcome, b.outcome, c.outcome, d.outcome) == (Outcome.PASS, Outcome.MARGINAL, Outcome.FAIL,
                                                             Outcome.PASS)
    assert (a.unit, c.unit, d.unit) == ("ms", "mm", "")
    assert m.outcome is Outcome.FAIL
    assert m.failures() == [c] and m.marginals() == [b]
    assert "1300 ms" in b.message and "MARGINAL" in b.message
    json.dumps([r.as_record() for r in m.results])  # records are plain data


@pytest.mark.parametrize("bad", ["fast", None, [1.0], np.zeros((2, 2)), True])
def test_bad_values_get_a_clear_error(bad):
    with pytest.raises(MeasurementError, match="real number"):
        Measurements()("x_ms", bad)


def test_limit_and_keywords_together_are_ambiguous():
    with pytest.raises(MeasurementError, match="not both"):
        Measurements()("x_ms", 1, limit=Limit(high=2), high=3)


def test_unit_from_name():
    assert [unit_from_name(n) for n in ("a_ms", "b_lux", "c_s", "d_pct", "plain")] == ["ms", "lux", "s", "%", ""]


# -- rates --------------------------------------------------------------------------------------

def test_zero_errors_use_the_rule_of_3():
    lo, hi = rate_bounds(0, 100, 0.95)
    assert lo == 0.0
    assert hi == pytest.approx(3.0 / 100, rel=0.002)  # -ln(0.05)/n = 2.996/n


def test_rate_is_judged_on_the_bound_not_the_point_estimate():
    m = Measurements()
    # 0 errors in 50 attempts: point estimate 0%, but we are only 95% sure FNMR <= 6%
    few = m.rate("fnmr", 0, 50, high=0.05)
    many = m.rate("fnmr", 0, 100, high=0.05)
    assert few.value == 0.0 and few.outcome is Outcome.FAIL
    assert many.outcome is Outcome.PASS
    # 4% observed over 200 attempts is under 5%, but its upper bound is not
    close = m.rate("fnmr", 8, 200, high=0.05, confidence=0.95)
    assert close.value == 0.04 and close.bound_high > 0.05 and close.outcome is Outcome.FAIL


def test_rate_marginal_band_and_low_limits():
    m = Measurements()
    marginal = m.rate("fnmr", 1, 300, high=0.05, marginal_high=0.01)
    assert 0.01 < marginal.bound_high <= 0.05 and marginal.outcome is Outcome.MARGINAL
    # 97.5% observed, above the 95% floor, but the lower bound (94.8%) is not
    success = m.rate("face_success_rate", 195, 200, low=0.95)
    assert success.value > 0.95 > success.bound_low and success.outcome is Outcome.FAIL
    assert m.rate("face_success_rate", 199, 200, low=0.95).outcome is Outcome.PASS
    assert m.rate("face_success_rate", 180, 200, low=0.95).outcome is Outcome.FAIL


def test_no_trials_prove_nothing():
    r = Measurements().rate("fmr", 0, 0, high=0.01)
    assert r.outcome is Outcome.FAIL and math.isnan(r.value) and (r.bound_low, r.bound_high) == (0.0, 1.0)


@pytest.mark.parametrize("errors, trials", [(-1, 10), (11, 10), (1.5, 10), (1, "10"), (True, 10)])
def test_bad_counts_are_refused(errors, trials):
    with pytest.raises(MeasurementError):
        Measurements().rate("fnmr", errors, trials, high=0.05)


@pytest.mark.parametrize("kwargs", [dict(high=1.5), dict(high=0.1, confidence=0.3), dict(high=0.1, confidence=1.0)])
def test_bad_rate_limits_are_refused(kwargs):
    with pytest.raises(MeasurementError):
        RateLimit(**kwargs)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_bounds_are_clopper_pearson(counts, confidence):
    errors, trials = counts
    lo, hi = rate_bounds(errors, trials, confidence)
    assert 0.0 <= lo <= errors / trials <= hi <= 1.0
    alpha = 1 - confidence
    if errors:
        assert lo == pytest.approx(beta.ppf(alpha, errors, trials - errors + 1), rel=1e-9, abs=1e-12)
    if 0 < errors < trials:
        assert hi == pytest.approx(beta.ppf(confidence, errors + 1, trials - errors), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("p, n", [(0.02, 150), (0.05, 400), (0.01, 60)])
def test_upper_bound_covers_the_true_rate(p, n):
    """Exact coverage: the chance that the 95% upper bound lands below the true rate is <= 5%."""
    miss = sum(binom.pmf(x, n, p) for x in range(n + 1) if rate_bounds(x, n, 0.95)[1] < p)
    assert miss <= 0.05 + 1e-9


# -- station limits ------------------------------------------------------------------------------

def test_station_limits_override_the_scenario_defaults():
    limits = parse_limits({
        "face_auth_latency_ms": {"high": 1000, "marginal_high": 800},
        "fnmr": {"high": 0.10, "confidence": 0.90},
        "presence_detect_ms": {"high": 400, "unit": "msec"},
    })
    m = Measurements(limits=limits)
    assert m("face_auth_latency_ms", 900, limit=Limit(high=1500, marginal=1200)).outcome is Outcome.MARGINAL
    r = m.rate("fnmr", 0, 50, high=0.01)
    assert r.high == 0.10 and r.confidence == 0.90 and r.outcome is Outcome.PASS
    assert m("presence_detect_ms", 100).unit == "msec"
    assert m("unlisted_ms", 5, high=1).outcome is Outcome.FAIL


@pytest.mark.parametrize("table, words", [
    ({"x_ms": {"hihg": 3}}, r"limits\.x_ms: unknown key\(s\) hihg"),
    ({"x_ms": {"high": "fast"}}, r"limits\.x_ms\.high must be a real number"),
    ({"x_ms": {"high": 10, "marginal_high": 20}}, r"limits\.x_ms: marginal_high=20.0 must not exceed"),
    ({"fnmr": {"high": 2, "confidence": 0.95}}, r"limits\.fnmr: rate limit high=2.0"),
    ({"x_ms": 5}, r"limits\.x_ms must be a table"),
    ([1, 2], r"\[limits\] must be a table"),
])
def test_bad_station_limits_name_the_key(table, words):
    with pytest.raises(MeasurementError, match=words) as exc:
        parse_limits(table, source="lab.toml")
    assert "lab.toml" in str(exc.value)


# -- face-match scores ------------------------------------------------------------------------

def test_face_match_scores_hold_numbers_and_labels_only():
    m = Measurements()
    fm = m.face_match(np.float32(0.71), 0.6, True, condition="mask", subject_id="s07", genuine=True)
    assert set(fm.as_record()) == {"score", "threshold", "accepted", "condition", "subject_id", "genuine"}
    with pytest.raises(MeasurementError):
        m.face_match(np.zeros((112, 112, 3)), 0.6, False)  # an image is not a score
    with pytest.raises(MeasurementError):
        m.face_match(0.5, 0.6, False, subject_id=np.zeros(512))  # nor is an embedding a label
