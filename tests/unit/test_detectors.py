"""Detectors against references: scipy, closed forms, and raw (unbinned) samples."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from detectors import rate
from detectors.combine import split_alpha
from detectors.histogram import Histogram
from detectors.latency import (count_above_pessimistic, count_at_or_above, mann_whitney_buckets,
                               quantile_bucket_edge)
from detectors.ratio import RatioSpec, RatioState, log_e_process_array
from detectors.utilization import Cusum, InstanceRun, LevelRun

LAYOUTS = {
    "exponential": Histogram.exponential(40, 1.4, 1.0, []).edges,
    "linear": Histogram.linear(30, 25.0, 0.0, []).edges,
    "explicit": Histogram.explicit([5, 10, 20, 50, 100, 150, 200, 300, 500, 1000, 2000], []).edges,
}


def binned(samples: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Cloud Monitoring bucketing: underflow (-inf, e0), [e_{i-1}, e_i), overflow [e_N, inf)."""
    index = np.searchsorted(np.asarray(edges), samples, side="right")
    return np.bincount(index, minlength=len(edges) + 1).astype(float)


# --- canary rate against a level ------------------------------------------------------------------
@pytest.mark.parametrize("k,n,level", [(0, 100, 0.001), (3, 1000, 0.001), (12, 2000, 0.002), (40, 50, 0.5)])
def test_level_e_value_is_the_mean_binomial_likelihood_ratio(k: int, n: int, level: float) -> None:
    alts = [level * f for f in rate.LEVEL_FACTORS if level * f < 0.999]
    expected = np.mean([stats.binom.pmf(k, n, p) / stats.binom.pmf(k, n, level) for p in alts])
    assert rate.log_e_above(k, n, level) == pytest.approx(math.log(expected), rel=1e-9, abs=1e-9)
    assert rate.log_e_above_array(np.array([k]), np.array([n]), level)[0] == pytest.approx(
        rate.log_e_above(k, n, level), rel=1e-12)


@pytest.mark.parametrize("k,n", [(0, 500), (5, 1000), (30, 3000), (400, 1000)])
def test_rate_confidence_sequence_contains_clopper_pearson(k: int, n: int) -> None:
    """A time-uniform interval is wider than the fixed-n exact interval at the same level."""
    alpha = 0.05
    lower, upper = rate.confidence_sequence(k, n, alpha)
    cp = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="exact")
    assert lower <= cp.low + 1e-12 and upper >= cp.high - 1e-12
    assert lower <= k / n <= upper
    assert upper < 1.0 and (k == 0 or lower > 0)


def test_rate_level_needs_evidence_not_a_point_estimate() -> None:
    # 2 errors in 1000 requests is 0.2%, twice the 0.1% level, yet nowhere near evidence
    assert rate.log_e_above(2, 1000, 0.001) < math.log(1 / 0.01)
    assert rate.log_e_above(30, 3000, 0.001) > math.log(1 / 0.01)  # 1% in 3000: overwhelming


# --- canary/baseline rate ratio ---------------------------------------------------------------------
def test_ratio_one_minute_is_the_conditional_binomial_likelihood_ratio() -> None:
    spec = RatioSpec.make(1.5)
    c, n_c, b, n_b = 7, 500, 20, 9500
    state = RatioState.empty(spec).update(spec, c, n_c, b, n_b)
    pi = n_c / (n_c + n_b)
    q = lambda r: r * pi / (r * pi + 1 - pi)  # noqa: E731
    lrs = [stats.binom.pmf(c, c + b, q(r)) / stats.binom.pmf(c, c + b, q(1.5)) for r in spec.alternatives]
    assert state.log_e == pytest.approx(math.log(np.mean(lrs)), rel=1e-9)
    assert state.p_value == pytest.approx(min(1.0, 1.0 / np.mean(lrs)), rel=1e-9)


def test_ratio_state_matches_the_vectorised_e_process() -> None:
    rng = np.random.default_rng(5)
    spec = RatioSpec.make(1.25, cap_log=3.0)
    n_c = rng.poisson(np.repeat([30, 150, 300], 10))
    n_b = rng.poisson(np.repeat([570, 450, 300], 10))
    c, b = rng.binomial(n_c, 0.004), rng.binomial(n_b, 0.001)
    state, trace = RatioState.empty(spec), []
    for t in range(30):
        state = state.update(spec, c[t], n_c[t], b[t], n_b[t])
        trace.append(state.log_e)
    np.testing.assert_allclose(log_e_process_array(spec, c, n_c, b, n_b), trace, rtol=1e-9, atol=1e-12)
    assert state.max_log_e == pytest.approx(max([0.0] + trace))


def test_ratio_confidence_sequence_brackets_the_truth_and_excludes_one_on_strong_evidence() -> None:
    rng = np.random.default_rng(6)
    spec = RatioSpec.make(1.0)
    state = RatioState.empty(spec)
    for _ in range(30):
        n_c, n_b = 2000, 8000
        state = state.update(spec, rng.binomial(n_c, 0.006), n_c, rng.binomial(n_b, 0.002), n_b)
    lower, upper = state.confidence_sequence(spec, 0.01)
    assert lower < 3.0 < upper
    assert lower > 1.5
    assert state.rejects(0.01)


def test_one_burst_minute_cannot_roll_back_when_capped() -> None:
    alpha = 0.0025
    capped = RatioSpec.make(1.25, cap_log=0.5 * math.log(1 / alpha))
    uncapped = RatioSpec.make(1.25)
    burst = dict(canary_events=25, canary_requests=300, baseline_events=6, baseline_requests=5700)
    assert RatioState.empty(uncapped).update(uncapped, **burst).rejects(alpha)
    assert not RatioState.empty(capped).update(capped, **burst).rejects(alpha)


def test_confidence_bounds_agree_with_the_capped_test() -> None:
    """A decision shows the bounds beside the verdict: a capped burst minute that does not roll
    back must not show a lower bound above r0 (the uncapped bounds did: about 40x here)."""
    alpha = 0.0025
    capped = RatioSpec.make(1.25, cap_log=0.5 * math.log(1 / alpha))
    state = RatioState.empty(capped).update(capped, canary_events=25, canary_requests=300, baseline_events=6,
                                            baseline_requests=5700)
    assert not state.rejects(alpha)
    lower, upper = state.confidence_sequence(capped, alpha)
    assert lower < capped.r0 < upper
    rng = np.random.default_rng(11)
    for trial in range(40):  # random regressions and A/As: lower > r0 exactly when the test rejects
        ratio = [1.0, 1.5, 3.0, 8.0][trial % 4]
        st = RatioState.empty(capped)
        for _ in range(int(rng.integers(1, 15))):
            n_c, n_b = int(rng.poisson(300)), int(rng.poisson(5700))
            st = st.update(capped, rng.binomial(n_c, 0.002 * ratio), n_c, rng.binomial(n_b, 0.002), n_b)
            lo, hi = st.confidence_sequence(capped, alpha)
            assert (lo > capped.r0) == st.rejects(alpha) or (lo == capped.r0 and st.rejects(alpha))
            assert lo <= hi


def test_minutes_without_both_arms_carry_no_ratio_evidence() -> None:
    spec = RatioSpec.make(1.5)
    state = RatioState.empty(spec)
    for args in [(5, 100, 0, 0), (0, 0, 5, 100), (0, 100, 0, 1000)]:
        state = state.update(spec, *args)
    assert state.log_e == 0.0 and state.minutes == 0
    assert state.confidence_sequence(spec, 0.05) == (0.0, math.inf)


# --- latency on buckets ------------------------------------------------------------------------
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_mann_whitney_on_buckets_matches_scipy_on_expanded_samples(layout: str, alternative: str) -> None:
    edges = LAYOUTS[layout]
    rng = np.random.default_rng(len(layout) + len(alternative))
    canary_raw = rng.lognormal(math.log(110), 0.6, 400)
    baseline_raw = rng.lognormal(math.log(100), 0.6, 900)
    c, b = binned(canary_raw, edges), binned(baseline_raw, edges)
    ours = mann_whitney_buckets(c, b, alternative)
    # expanded samples: every request at its bucket index (ties within a bucket)
    xs = np.repeat(np.arange(c.size), c.astype(int))
    ys = np.repeat(np.arange(b.size), b.astype(int))
    ref = stats.mannwhitneyu(xs, ys, alternative=alternative, method="asymptotic", use_continuity=True)
    assert ours.u_canary == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
    assert ours.auc == pytest.approx(ref.statistic / (c.sum() * b.sum()))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("threshold", [7.0, 100.0, 333.0, 5000.0])
def test_exceedance_counts_bracket_the_true_count(layout: str, threshold: float) -> None:
    edges = LAYOUTS[layout]
    raw = np.random.default_rng(3).lognormal(math.log(120), 0.9, 5000)
    counts = binned(raw, edges)
    true = float((raw >= threshold).sum())
    low = float(count_at_or_above(edges, counts, threshold))
    high = float(count_above_pessimistic(edges, counts, threshold, layout))
    assert low <= true + 1e-9
    # the interpolated straddling bucket is an estimate: allow its sampling error, never the
    # conservative count above the pessimistic one
    assert low <= high
    straddle = counts[np.searchsorted(np.asarray(edges), threshold, side="right")]
    assert high >= true - straddle - 1e-9
    if threshold in edges:
        assert low == true == high


def test_quantile_bucket_edge() -> None:
    h = Histogram.explicit([10, 20, 50, 100], [0, 50, 40, 9, 1])
    assert quantile_bucket_edge(h, 0.5) == 10.0
    assert quantile_bucket_edge(h, 0.99) == 50.0
    assert quantile_bucket_edge(Histogram.explicit([10], [5, 0]), 0.5) is None


# --- utilisation ------------------------------------------------------------------------------------
def test_level_run_needs_consecutive_intervals_and_ignores_missing() -> None:
    run = LevelRun()
    for value in (0.96, 0.97, None, 0.5, 0.96, None, 0.97, 0.98):
        run = run.update(value, 0.8, 0.85, 0.95)
    assert run.above_critical == 3 and run.last == 0.98
    inst = InstanceRun()
    for count in (1, 2, 3, 4, 4):
        inst = inst.update(count, 4)
    assert inst.growing == 0 and inst.at_max == 2


def test_cusum_alarms_on_drift_not_on_noise() -> None:
    rng = np.random.default_rng(4)
    quiet, drifting = Cusum(), Cusum()
    alarm_at = None
    for t in range(120):
        quiet = quiet.update(0.40 + rng.normal(0, 0.01), 0.40 + rng.normal(0, 0.01), 0.10)
        drifting = drifting.update(0.40 + 0.004 * t + rng.normal(0, 0.01), 0.40, 0.10)
        if alarm_at is None and drifting.alarms(5.0):
            alarm_at = t
    assert not quiet.alarms(5.0) and quiet.peak < 5.0
    assert alarm_at is not None and 25 <= alarm_at <= 45  # crosses +10 points at t = 25


def test_split_alpha() -> None:
    shares = split_alpha(0.01, {"a": 1.0, "b": 1.0, "c": 2.0, "d": 0.0})
    assert sum(shares.values()) == pytest.approx(0.01)
    assert shares["c"] == pytest.approx(0.005) and shares["d"] == 0.0
    with pytest.raises(ValueError):
        split_alpha(0.0, {"a": 1.0})
