"""Type-I error under continuous monitoring: A/A sequences looked at every minute, seeded.

Each e-process must reject at most alpha of healthy sequences over all looks (Ville), up to
Monte-Carlo slack (3 standard errors). The default run uses 2,000 sequences of 60 looks; the
`slow` variants use 20,000. A naive fixed-horizon test looked at every minute is shown to fail the
same check, so the check can fail.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import rate
from detectors.latency import mann_whitney_buckets
from detectors.ratio import RatioSpec, log_e_process_array

ALPHA = 0.05
LOOKS = 60


def slack(runs: int, alpha: float = ALPHA) -> float:
    return 3.0 * math.sqrt(alpha * (1 - alpha) / runs)


def traffic(rng: np.random.Generator, runs: int, rps: float) -> tuple[np.ndarray, np.ndarray]:
    """Runbook phases (5% for 10 min, 25% for 15, 50% for the rest) with a shared traffic nuisance."""
    share = np.where(np.arange(LOOKS) < 10, 0.05, np.where(np.arange(LOOKS) < 25, 0.25, 0.5))
    volume = 60 * rps * rng.lognormal(0.0, 0.3, (runs, LOOKS))
    return rng.poisson(volume * share), rng.poisson(volume * (1 - share))


def drifting_rate(rng: np.random.Generator, runs: int, p0: float) -> np.ndarray:
    """A shared AR(1) log-normal nuisance on the base error rate (the rate drifts, both arms alike)."""
    log_v = np.zeros((runs, LOOKS))
    for t in range(1, LOOKS):
        log_v[:, t] = 0.9 * log_v[:, t - 1] + rng.normal(0, 0.3, runs)
    return p0 * np.exp(log_v)


def level_rejections(runs: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    level = 0.001
    n = rng.poisson(300, (runs, LOOKS))
    p = np.minimum(drifting_rate(rng, runs, level / 2), level)  # every minute at or below the level
    p[: runs // 2] = level  # half the runs sit exactly on the boundary
    k = rng.binomial(n, p)
    log_e = rate.log_e_above_array(np.cumsum(k, axis=1), np.cumsum(n, axis=1), level)
    return float((log_e >= math.log(1 / ALPHA)).any(axis=1).mean())


def ratio_rejections(runs: int, seed: int, r0: float, cap_share: float | None) -> float:
    rng = np.random.default_rng(seed)
    n_c, n_b = traffic(rng, runs, rps=100.0)
    p_b = drifting_rate(rng, runs, 0.002)
    c, b = rng.binomial(n_c, np.minimum(r0 * p_b, 1.0)), rng.binomial(n_b, p_b)  # on the null boundary
    cap = math.inf if cap_share is None else cap_share * math.log(1 / ALPHA)
    log_e = log_e_process_array(RatioSpec.make(r0, cap), c, n_c, b, n_b)
    return float((log_e >= math.log(1 / ALPHA)).any(axis=1).mean())


@pytest.mark.parametrize("seed", [1])
def test_level_e_process_type_one_error(seed: int) -> None:
    assert level_rejections(2000, seed) <= ALPHA + slack(2000)


@pytest.mark.parametrize("r0,cap_share", [(1.0, None), (1.25, 0.5), (2.0, None)])
def test_ratio_e_process_type_one_error_with_phase_changes_and_drift(r0: float, cap_share: float | None) -> None:
    assert ratio_rejections(2000, 11, r0, cap_share) <= ALPHA + slack(2000)


def test_naive_peeking_fails_the_same_check() -> None:
    """Mann-Whitney on cumulative buckets, looked at every minute at 0.05: far above alpha."""
    runs, looks = 300, 30
    rng = np.random.default_rng(31)
    probs = np.full(12, 1 / 12)
    c = np.cumsum(rng.multinomial(rng.poisson(40, (runs, looks)), probs), axis=1)
    b = np.cumsum(rng.multinomial(rng.poisson(400, (runs, looks)), probs), axis=1)
    rejected = [any(mann_whitney_buckets(c[i, t], b[i, t], "two-sided").p_value < ALPHA for t in range(looks))
                for i in range(runs)]
    assert np.mean(rejected) > 2 * ALPHA


@pytest.mark.slow
def test_level_e_process_type_one_error_20k() -> None:
    assert level_rejections(20000, 2) <= ALPHA + slack(20000)


@pytest.mark.slow
@pytest.mark.parametrize("r0,cap_share", [(1.0, None), (1.25, 0.5), (1.5, 0.5)])
def test_ratio_e_process_type_one_error_20k(r0: float, cap_share: float | None) -> None:
    assert ratio_rejections(20000, 12, r0, cap_share) <= ALPHA + slack(20000)
