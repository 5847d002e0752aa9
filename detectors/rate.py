"""Anytime-valid tests of one revision's own rate against an absolute level.

Used for the runbook's "error rate under 0.1%" (5xx per request) and, through exceedance counts,
for latency levels ("p99 under 500 ms" <=> at most 1% of requests slower than 500 ms). Called by
`daemon.core.evaluation` every minute and by the benchmark on arrays of runs.

The statistic is a mixture-of-likelihood-ratios e-process for H0: p <= L (or p >= L),

    E_L(k, n) = sum_j w_j (p_j / L)^k ((1 - p_j) / (1 - L))^(n - k),   p_j = L * f_j  (f_j > 1)

Each term is a test supermartingale for every rate path with p_t <= L per request (the ratio is
monotone in p), so E_L is too, whatever the rate does from minute to minute. By Ville's
inequality P(sup_t E_L >= 1/alpha) <= alpha: "above L" is declared only when E_L >= 1/alpha, at
any look. Inverting the test over L gives a time-uniform confidence sequence for the rate.
k may be fractional (interpolated exceedance counts): the bound above still holds for the
Bernoulli model it stands for, and the detectors only use fractions to make PASS harder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

# Alternatives as multiples of the level. Equal weights: a regression of any size between 1.25x and
# ~1000x costs at most log(len) = 2.5 nats over the oracle that knew its size.
LEVEL_FACTORS: tuple[float, ...] = (1.25, 1.6, 2.0, 3.0, 5.0, 8.0, 15.0, 30.0, 100.0, 300.0, 1000.0)
_MAX_ALT_RATE = 0.999


def _alternatives_above(level: float) -> list[float]:
    alts = [level * f for f in LEVEL_FACTORS if level * f < _MAX_ALT_RATE]
    if not alts:  # level close to 1: a single alternative between it and 1
        alts = [(level + 1.0) / 2.0]
    return alts


def _alternatives_below(level: float) -> list[float]:
    return [level / f for f in LEVEL_FACTORS if level / f > 1e-12]


def log_e_above(k: float, n: float, level: float) -> float:
    """log E for H0 "rate <= level" after k events in n trials (scalar, pure Python: ~3 us)."""
    if n <= 0 or level <= 0.0:
        return 0.0 if n <= 0 else (math.inf if k > 0 else 0.0)
    if level >= 1.0:
        return -math.inf if n > 0 else 0.0
    return _logmeanexp([k * a + (n - k) * b for a, b in _coefficients(level, True)])


def log_e_below(k: float, n: float, level: float) -> float:
    """log E for H0 "rate >= level": evidence that the rate is *under* the level."""
    if n <= 0 or level <= 0.0 or level > 1.0:
        return 0.0
    if level >= 1.0:
        return math.inf if k < n else 0.0
    terms = [k * a + (n - k) * b for a, b in _coefficients(level, False)]
    return _logmeanexp(terms) if terms else 0.0


@lru_cache(maxsize=1024)
def _coefficients(level: float, above: bool) -> tuple[tuple[float, float], ...]:
    """(log(p_j/L), log((1-p_j)/(1-L))) per alternative: log LR_j = k a_j + (n - k) b_j."""
    log_l, log_1l = math.log(level), math.log1p(-level)
    alts = _alternatives_above(level) if above else _alternatives_below(level)
    return tuple((math.log(p) - log_l, math.log1p(-p) - log_1l) for p in alts)


def log_e_above_array(k: np.ndarray, n: np.ndarray, level: float) -> np.ndarray:
    """Vectorised `log_e_above` over runs (any broadcastable shapes)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    alts = np.asarray(_alternatives_above(level))
    a = np.log(alts) - math.log(level)
    b = np.log1p(-alts) - math.log1p(-level)
    terms = k[..., None] * a + (n - k)[..., None] * b
    top = terms.max(axis=-1)
    return top + np.log(np.exp(terms - top[..., None]).mean(axis=-1))


@dataclass(frozen=True, slots=True)
class CappedLevel:
    """The level e-process accumulated minute by minute, each minute's log likelihood ratio capped
    at `cap` per alternative (a censored likelihood ratio, Huber's answer to contamination):

        log E_T = log mean_j exp( sum_t min(cap, k_t a_j + (n_t - k_t) b_j) ).

    min(cap, LR) has expectation <= E[LR] <= 1 under "rate <= level" in every minute, so this is
    still a test supermartingale: one burst minute (a retry storm into a small canary) adds at
    most `cap`, while a real excess keeps adding every minute. With cap = inf it equals
    `log_e_above` on the cumulative counts."""

    level: float
    cap: float
    sums: tuple[float, ...]

    @staticmethod
    def empty(level: float, cap: float = math.inf) -> "CappedLevel":
        return CappedLevel(float(level), float(cap), (0.0,) * len(_coefficients(float(level), True)))

    def update(self, k: float, n: float) -> "CappedLevel":
        if n <= 0:
            return self
        coeffs = _coefficients(self.level, True)
        return CappedLevel(self.level, self.cap, tuple(
            total + min(self.cap, k * a + (n - k) * b) for total, (a, b) in zip(self.sums, coeffs)))

    @property
    def log_e(self) -> float:
        return _logmeanexp(self.sums)


def confidence_sequence(k: float, n: float, alpha: float) -> tuple[float, float]:
    """Time-uniform (1 - alpha) bounds for the rate: each side at alpha/2, by bisection on the
    level in log-odds. Not on the per-minute hot path (about 100 us); used for reports and tests."""
    if n <= 0:
        return 0.0, 1.0
    target = math.log(2.0 / alpha)
    lower = 0.0
    if k > 0:
        lower = _bisect(lambda lv: log_e_above(k, n, lv) >= target, lo=1e-12, hi=min(k / n, 1 - 1e-12))
    upper = 1.0
    if k < n:
        upper = _bisect(lambda lv: log_e_below(k, n, lv) < target, lo=max(k / n, 1e-12), hi=1 - 1e-12)
    return lower, upper


def _bisect(rejected_at, lo: float, hi: float, iterations: int = 40) -> float:
    """Largest level in [lo, hi] (log scale) for which `rejected_at` still holds; assumes
    monotone. Returns lo when it never holds."""
    if not rejected_at(lo):
        return lo
    if rejected_at(hi):
        return hi
    a, b = math.log(lo), math.log(hi)
    for _ in range(iterations):
        mid = (a + b) / 2
        if rejected_at(math.exp(mid)):
            a = mid
        else:
            b = mid
    return math.exp(a)


def _logmeanexp(terms: Sequence[float]) -> float:
    top = max(terms)
    if top == -math.inf or top == math.inf:
        return top
    return top + math.log(sum(math.exp(t - top) for t in terms) / len(terms))
