"""Detection v2: capped level tests, the dispersion estimate and tempering, the outage breaker.

Against closed forms (scipy) and by simulation of the false-alarm rate under continuous monitoring,
with the untempered test shown to fail the same check (so the check can fail).
"""
from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from scipy import stats

from detectors import rate
from detectors.dispersion import Dispersion, temper
from detectors.ratio import RatioSpec, log_e_process_array


# --- capped level test ----------------------------------------------------------------------------
def test_capped_level_without_a_cap_is_the_cumulative_test() -> None:
    rng = np.random.default_rng(1)
    state = rate.CappedLevel.empty(0.01)
    k_tot = n_tot = 0
    for _ in range(20):
        n = int(rng.poisson(300))
        k = int(rng.binomial(n, 0.012))
        state, k_tot, n_tot = state.update(k, n), k_tot + k, n_tot + n
        assert state.log_e == pytest.approx(rate.log_e_above(k_tot, n_tot, 0.01), rel=1e-9, abs=1e-9)


def test_capped_level_one_burst_minute_adds_at_most_the_cap_and_a_real_excess_still_rejects() -> None:
    cap = 0.5 * math.log(2000)
    burst = rate.CappedLevel.empty(0.01, cap).update(20, 22)  # a retry storm into a tiny canary
    assert burst.log_e <= cap + 1e-12
    assert rate.log_e_above(20, 22, 0.01) > math.log(2000)  # the uncapped test rolls back on it
    excess = rate.CappedLevel.empty(0.01, cap)
    for _ in range(5):
        excess = excess.update(15, 300)  # 5% for five minutes
    assert excess.log_e >= math.log(2000)


def test_capped_level_false_alarms_under_the_null_by_simulation() -> None:
    runs, looks, level, alpha = 4000, 40, 0.01, 0.05
    rng = np.random.default_rng(2)
    n = rng.poisson(100, (runs, looks))
    k = rng.binomial(n, level)  # on the boundary of the null
    cap = 0.5 * math.log(1 / alpha)
    coeffs = rate._coefficients(level, True)
    sums = np.zeros((runs, len(coeffs)))
    hit = np.zeros(runs, bool)
    for t in range(looks):
        llr = np.stack([k[:, t] * a + (n[:, t] - k[:, t]) * b for a, b in coeffs], axis=1)
        sums += np.minimum(llr, cap)
        top = sums.max(axis=1)
        hit |= top + np.log(np.exp(sums - top[:, None]).mean(axis=1)) >= math.log(1 / alpha)
    assert hit.mean() <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


# --- tempering ------------------------------------------------------------------------------------
@pytest.mark.parametrize("m,q,phi", [(5, 0.05, 1.0), (30, 0.25, 1.7), (60, 0.5, 4.0), (200, 0.5, 1.01)])
def test_tempered_likelihood_ratio_is_an_e_value_under_the_binomial_null(m: int, q: float, phi: float) -> None:
    """E[LR^(1/phi)] <= 1 for any phi >= 1 (Jensen): tempering never costs validity."""
    k = np.arange(m + 1)
    for r in (1.5, 2.0, 5.0, 50.0):
        q1 = r * q / (r * q + 1 - q)
        lr = stats.binom.pmf(k, m, q1) / stats.binom.pmf(k, m, q)
        assert float(np.sum(stats.binom.pmf(k, m, q) * lr ** (1 / phi))) <= 1 + 1e-9


def test_temper_is_the_variance_inflation() -> None:
    assert temper(0.0, 50, 0.5) == 1.0
    assert temper(0.5, 1, 0.5) == 1.0  # one event cannot be overdispersed
    assert temper(0.5, 61, 0.5) == pytest.approx(1 + 60 * 0.25 * 0.5)


def _overdispersed_minutes(rng: np.random.Generator, runs: int, looks: int, rps: float, sd: float):
    share = np.where(np.arange(looks) < 10, 0.05, np.where(np.arange(looks) < 25, 0.25, 0.5))
    n_c = rng.poisson(60 * rps * share, (runs, looks))
    n_b = rng.poisson(60 * rps * (1 - share), (runs, looks))
    p_c = 0.001 * np.exp(rng.normal(0, sd, (runs, looks)))
    p_b = 0.001 * np.exp(rng.normal(0, sd, (runs, looks)))
    return rng.binomial(n_c, p_c), n_c, rng.binomial(n_b, p_b), n_b


def test_dispersion_estimate_recovers_the_per_minute_variance() -> None:
    rng = np.random.default_rng(3)
    # the variance of the per-minute relative rate exp(N(0, sd^2)): e^(sd^2) (e^(sd^2) - 1)
    for sd, want in ((0.0, 0.0), (0.5, math.exp(0.25) * (math.exp(0.25) - 1))):
        est = []
        for _ in range(200):
            d = Dispersion()
            n = rng.poisson(57_000, 40)
            k = rng.binomial(n, 0.001 * np.exp(rng.normal(0, sd, 40)))
            for t in range(40):
                d = d.update(k[t], n[t])
            est.append(d.variance)
        assert np.mean(est) == pytest.approx(want, abs=0.05)


def test_tempering_restores_the_false_alarm_rate_under_overdispersion() -> None:
    """At 1000 rps with per-arm minute effects of sd 0.5 (S2 without bursts), the r0 = 1 test looked
    at every minute rolls back far more than alpha; tempered by the baseline's dispersion estimated
    from earlier minutes only, it stays within alpha."""
    runs, looks, alpha = 1500, 40, 0.01
    rng = np.random.default_rng(4)
    c, n_c, b, n_b = _overdispersed_minutes(rng, runs, looks, 1000.0, 0.5)
    spec = RatioSpec.make(1.0, 0.5 * math.log(1 / alpha))
    plain = log_e_process_array(spec, c, n_c, b, n_b)
    phi = np.ones((runs, looks))
    for i in range(runs):
        d = Dispersion(prior=0.1)
        for t in range(looks):
            phi[i, t] = temper(d.share_variance, c[i, t] + b[i, t], n_c[i, t] / (n_c[i, t] + n_b[i, t]))
            d = d.update(b[i, t], n_b[i, t])
    tempered = log_e_process_array(spec, c, n_c, b, n_b, phi)
    level = math.log(1 / alpha)
    assert (plain >= level).any(axis=1).mean() > 3 * alpha
    assert (tempered >= level).any(axis=1).mean() <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


# --- the outage breaker, through the evaluation -----------------------------------------------------
def test_outage_breaker_rolls_back_in_one_minute_and_ignores_a_small_burst() -> None:
    from pathlib import Path

    from daemon.core.evaluation import MinuteSample, assess, new_evidence, observe
    from daemon.core.events import Metrics
    from policies.loader import load_policy

    policy = load_policy(Path(__file__).resolve().parents[2] / "policies" / "default.yaml")
    t0 = __import__("datetime").datetime(2026, 11, 28, 10, 0, tzinfo=__import__("datetime").timezone.utc)

    def minute(n_c: int, e_c: int) -> object:
        end = t0 + timedelta(minutes=1)
        canary = Metrics(end, "api", "c", 60, (("2xx", n_c - e_c), ("5xx", e_c)), None, 0.5, 0.3, 3, 100)
        baseline = Metrics(end, "api", "b", 60, (("2xx", 5700 - 6), ("5xx", 6)), None, 0.5, 0.3, 3, 100)
        ev = observe(new_evidence(policy), policy, MinuteSample(end, canary, baseline, 5))
        return assess(ev, policy, 0, open_alerts=0)

    outage = minute(300, 150).get("error_rate")
    assert outage.action == "rollback" and "outage" in outage.verdict.sentence
    burst = minute(30, 20).get("error_rate")  # 20 errors into 30 requests: a burst, not yet evidence
    assert burst.action != "rollback"
