"""Benchmark baselines against closed forms and brute force: SPRT boundaries, Clopper-Pearson,
Kayenta's Hodges-Lehmann estimate and CI, its scoring, and the methods' behaviour on known data."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import beta as beta_dist, norm, rankdata

from simulations import baselines as B, kayenta as K
from simulations.scenarios import get_scenario, simulate


def test_sprt_boundaries_and_wald_numerator():
    upper, lower = B.sprt_bounds(0.01, 0.05)
    assert upper == pytest.approx(math.log(0.95 / 0.01))
    assert lower == pytest.approx(math.log(0.05 / 0.99))
    # canary-statistics.md §5: 0.1% -> 0.5% known baseline, D = 0.00406 nats/req, N*1 ~ 1,030.
    d = float(B.kl_bernoulli(0.005, 0.001))
    assert d == pytest.approx(0.00406, abs=2e-5)
    assert B.expected_llr_to_detect(0.01, 0.05) / d == pytest.approx(1030, rel=0.01)


def test_two_sample_information_matches_the_reference():
    # Two-sample, w = 0.10: D = total error rate x KL(Bern(pi1) || Bern(pi)) ~ 3.3e-4 per total request.
    w, p0, r = 0.10, 0.001, 5.0
    rate = w * p0 * r + (1 - w) * p0
    pi1 = r * w / (r * w + 1 - w)
    d = rate * float(B.kl_bernoulli(pi1, w))
    assert d == pytest.approx(3.3e-4, rel=0.03)
    assert B.expected_llr_to_detect(0.01, 0.05) / d * w == pytest.approx(1249, rel=0.03)


@pytest.mark.parametrize("k, n", [(0, 100), (1, 100), (7, 50), (50, 50), (3, 10_000)])
def test_clopper_pearson_against_scipy(k, n):
    lower, upper = B.clopper_pearson(k, n)
    assert lower == pytest.approx(0.0 if k == 0 else beta_dist.ppf(0.025, k, n - k + 1))
    assert upper == pytest.approx(1.0 if k == n else beta_dist.ppf(0.975, k + 1, n - k))
    assert lower <= k / n <= upper


def _wdiff_scalar(x, y, mu, zq, correct):
    """R's wdiff, one sample at a time, with scipy's midranks."""
    z = np.concatenate([x - mu, y])
    ranks = rankdata(z)
    nx, ny = len(x), len(y)
    dz = ranks[:nx].sum() - nx * (nx + 1) / 2 - nx * ny / 2
    _, counts = np.unique(z, return_counts=True)
    n = nx + ny
    sigma = math.sqrt(nx * ny / 12 * ((n + 1) - (counts ** 3 - counts).sum() / (n * (n - 1))))
    return (dz - (np.sign(dz) * 0.5 if correct else 0.0)) / sigma - zq


def _brute_root(x, y, zq, correct):
    lo, hi = x.min() - y.max(), x.max() - y.min()
    f = lambda mu: _wdiff_scalar(x, y, mu, zq, correct)  # noqa: E731
    if f(lo) <= 0:
        return lo
    if f(hi) >= 0:
        return hi
    # wdiff is a non-increasing step function of mu that only jumps at pairwise differences x_i - y_j:
    # the root is the first difference after which the plateau (checked at its midpoint) is <= 0.
    candidates = np.unique(np.subtract.outer(x, y).ravel())
    plateaus = np.append((candidates[:-1] + candidates[1:]) / 2, hi)
    for c, mid in zip(candidates, plateaus):
        if f(mid) <= 0:
            return c
    return hi


def test_kayenta_known_values():
    # kayenta-mannwhitney's own test: control 1..4, experiment 10..40, 95%: CI [6, 39], estimate 22.5.
    est, lo, hi = K.hodges_lehmann_ci(np.array([[10.0, 20, 30, 40]]), np.array([[1.0, 2, 3, 4]]), 0.95)
    assert est[0] == pytest.approx(22.5, abs=1e-6)
    assert lo[0] == pytest.approx(6.0, abs=1e-6)
    assert hi[0] == pytest.approx(39.0, abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_hodges_lehmann_ci_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    nx, ny = rng.integers(4, 25, 2)
    if seed % 2:  # error-rate-like data with many ties
        x = rng.poisson(1.5, nx) / 300.0
        y = rng.poisson(6.0, ny) / 6000.0
    else:
        x = rng.lognormal(0.2, 0.5, nx)
        y = rng.lognormal(0.0, 0.5, ny)
    if np.unique(np.concatenate([x, y])).size < 2:
        pytest.skip("all tied")
    z = float(norm.ppf(0.99))
    est, lo, hi = K.hodges_lehmann_ci(x[None, :], y[None, :])
    for got, zq, correct in ((lo[0], z, True), (hi[0], -z, True)):
        want = _brute_root(x, y, zq, correct)
        scale = max(1e-9, np.ptp(np.concatenate([x, y])))
        assert got == pytest.approx(want, abs=1e-6 * scale)
    # The estimate is a root of the uncorrected statistic: wdiff changes sign around it.
    eps = 1e-7 * max(1e-9, np.ptp(np.concatenate([x, y])))
    assert _wdiff_scalar(x, y, est[0] - eps, 0.0, False) >= 0 >= _wdiff_scalar(x, y, est[0] + eps, 0.0, False)


def test_vectorised_wdiff_matches_scalar_with_nan_removal():
    rng = np.random.default_rng(11)
    x = rng.poisson(2, (8, 12)).astype(float)
    y = rng.poisson(2, (8, 15)).astype(float)
    x[0, :4] = np.nan
    y[3, 5:] = np.nan
    mu = rng.normal(0, 1, 8)
    got = K.wdiff(x, y, mu, 1.5, True)
    for row in range(8):
        xr, yr = x[row][~np.isnan(x[row])], y[row][~np.isnan(y[row])]
        assert got[row] == pytest.approx(_wdiff_scalar(xr, yr, mu[row], 1.5, True))


def test_kayenta_classification_and_scoring():
    rng = np.random.default_rng(3)
    worse = rng.normal(10.0, 1.0, (50, 30)) + 3.0
    base = rng.normal(10.0, 1.0, (50, 30))
    assert (K.classify(worse, base) == K.HIGH).mean() > 0.95
    assert (K.classify(base, base) == K.PASS_).all()  # identical samples pass
    assert (K.classify(np.full((2, 5), np.nan), base[:2, :5]) == K.NODATA).all()
    specs = [K.MetricSpec("e", "errors", critical=True), K.MetricSpec("m", "lat"), K.MetricSpec("p", "lat")]
    classes = {"e": np.array([0, 0, 1, 0, 2]), "m": np.array([0, 1, 0, 1, 2]), "p": np.array([0, 0, 0, 1, 0])}
    # row 0 all pass; row 1 latency 50 -> (100+50)/2; row 2 critical high -> 0; row 3 latency 0 -> 50;
    # row 4: two of three metrics Nodata (>= 50%) -> 0.
    assert K.score(classes, specs).tolist() == [100.0, 75.0, 0.0, 50.0, 0.0]


def test_hist_quantile_matches_histogram_quantile():
    from detectors.histogram import Histogram
    rng = np.random.default_rng(1)
    edges = 1.4 ** np.arange(41)
    counts = rng.poisson(2, (50, 42))
    counts[0] = 0
    got = B.hist_quantile(counts, edges, 0.99)
    for row, value in zip(counts, got):
        want = Histogram("exponential", tuple(edges), tuple(int(c) for c in row)).quantile(0.99)
        assert (want is None and np.isnan(value)) or value == pytest.approx(want)


def test_methods_on_a_clear_regression_and_an_aa():
    bad = get_scenario("S4-errors-x20")
    m = simulate(bad, np.random.default_rng(2), 100)
    rng = np.random.default_rng(0)
    for at in (B.oracle(m), B.kayenta_per_phase(m, bad, rng), B.naive(m, bad), B.flagger(m, bad)):
        assert np.mean(~np.isnan(at)) > 0.9
    assert np.nanmedian(B.oracle(m)) <= 3
    assert set(np.unique(B.kayenta_per_phase(m, bad, rng)[~np.isnan(B.kayenta_per_phase(m, bad, rng))])) <= {10, 25, 40}
    aa = get_scenario("S0-aa-clean")
    m0 = simulate(aa, np.random.default_rng(2), 400)
    assert np.isnan(B.oracle(m0)).all()  # no alternative differs: zero LLR
    assert np.mean(~np.isnan(B.naive(m0, aa))) > 0.3  # peeking at 0.05 every minute: far above 5%
    assert np.mean(~np.isnan(B.kayenta_per_phase(m0, aa, rng))) < 0.05


def test_harm_counts_excess_bad_requests_until_rollback():
    s = get_scenario("S5-outage")
    m = simulate(s, np.random.default_rng(1), 20)
    early = B.harm(m, s, np.full(20, 1.0))
    never = B.harm(m, s, np.full(20, np.nan))
    assert (early < never).all()
    expected = (m.n_c[:, 0] * (m.p_c[:, 0] - m.p_b[:, 0]))
    assert early == pytest.approx(expected, rel=0.05)


def test_oracle_analytic_minutes_headline():
    # 0.1% -> 0.5% at 100 rps, 5% canary: ~1,249-ish requests two-sample at w = 0.05 -> a few minutes.
    minutes = B.oracle_analytic_minutes(get_scenario("S4-errors-x5"))
    assert minutes is not None and 2 <= minutes <= 6
    assert B.oracle_analytic_minutes(get_scenario("S0-aa-clean")) is None
