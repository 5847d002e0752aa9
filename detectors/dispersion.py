"""Extra-binomial (minute-level) dispersion of a count, for tempering the ratio tests.

Called by `daemon.core.evaluation` once per minute with the baseline's counts (5xx, or requests
slower than the latency threshold), and by the benchmark and tests.

Model. In minute u an arm serves n_u requests and k_u of them are events, with a per-minute rate
p_u = p x v_u around a smooth path p, where the relative rate v_u has variance s^2 (a random
effect: a retry storm, a bad instance, a noisy neighbour; for log-normal v with log-sd sigma,
s^2 = e^(sigma^2) (e^(sigma^2) - 1)). Given the rate, k_u is binomial, so

    Var(k_u) ~= n_u p (1 - p) [1 + (n_u - 1) p (1 - p) s^2].

Estimate. Minute u's Pearson residual is taken around a *local* fit, the pooled rate of its
neighbours u-3..u+1 without u itself, so a slow drift is not read as dispersion; the minute is
scored when minute u+1 arrives, so the estimate used at minute t comes from minutes before t only
(it is predictable, which the tempered test needs). It is fed the baseline's counts, so a canary
regression's onset never looks like dispersion. With
N = the neighbours' requests, E[z_u^2] ~= 1 + n_u / N + (n_u - 1) p (1 - p) s^2, giving the moment
estimator

    s^2 = (w0 s0^2 + sum_u (z_u^2 - 1 - n_u / N_u)) / (w0 + sum_u (n_u - 1) p_u (1 - p_u)),

floored at 0, where the prior s0^2 (from the service's history) counts as w0 units of information
(one unit ~ one expected event). The canary's share of events then has per-minute log-odds
variance s_c^2 + s_b^2; with the canary assumed no more dispersed than its baseline, that is
2 s^2 (`share_variance`).
"""
from __future__ import annotations

from dataclasses import dataclass

BEFORE = 3  # the local fit of minute u: minutes u-3..u+1 without u
PRIOR_WEIGHT = 50.0  # w0, in expected events


@dataclass(frozen=True, slots=True)
class Dispersion:
    prior: float = 0.0  # s0^2 for one arm's per-minute log-odds
    weight: float = PRIOR_WEIGHT
    recent: tuple[tuple[float, float], ...] = ()  # last 2h+1 minutes' (events, requests)
    num: float = 0.0
    den: float = 0.0

    @property
    def variance(self) -> float:
        """s^2 of one arm's per-minute log-odds (prior and data pooled), >= 0."""
        total = self.weight + self.den
        if total <= 0:
            return 0.0
        return max(0.0, (self.weight * self.prior + self.num) / total)

    @property
    def share_variance(self) -> float:
        """Per-minute log-odds variance of the canary's share of events: both arms' dispersion."""
        return 2.0 * self.variance

    def update(self, events: float, requests: float) -> "Dispersion":
        """Add one minute of the arm (a minute without requests is skipped)."""
        if requests <= 0:
            return self
        recent = (self.recent + ((float(events), float(requests)),))[-(BEFORE + 2):]
        num, den = self.num, self.den
        if len(recent) >= 2:  # score the previous minute: up to BEFORE neighbours before it, one after
            k, n = recent[-2]
            others = recent[:-2] + recent[-1:]
            k_o, n_o = sum(x for x, _ in others), sum(y for _, y in others)
            p = (k_o + 0.5) / (n_o + 1.0)  # a pinch of smoothing: no division by zero at p = 0
            var = n * p * (1.0 - p)
            if var > 0 and n > 1:
                num += (k - n * p) ** 2 / var - 1.0 - n / n_o
                den += (n - 1.0) * p * (1.0 - p)
        return Dispersion(self.prior, self.weight, recent, num, den)


def temper(share_variance: float, events: float, q: float) -> float:
    """phi_t = 1 + (m_t - 1) q (1 - q) s^2 >= 1 for a minute with m_t events and null share q: the
    variance inflation of the canary's count; the test uses LR_t^(1/phi_t)."""
    return 1.0 + max(events - 1.0, 0.0) * q * (1.0 - q) * max(share_variance, 0.0)


@dataclass(frozen=True, slots=True)
class ShareDispersion:
    """Extra-binomial variance of the canary's *share* of events, estimated from both arms.

    For a count that both arms see with a large shared component (the latency location test: a
    drift of the whole service's latency moves both arms' share over the threshold together), the
    baseline's own dispersion reads the shared drift as noise and over-tempers. The share cancels
    it. Minute u's canary count is scored, when minute u+1 arrives, against the share predicted by
    its neighbours u-3..u+1 without u: their pooled canary/baseline rate ratio rho, carried to
    minute u's split, q_u = rho pi_u / (rho pi_u + 1 - pi_u). Then

        s^2 = (w0 s0^2 + sum_u (z_u^2 - 1)) / (w0 + sum_u (m_u - 1) q_u (1 - q_u)),   floored at 0,

    is the per-minute log-odds variance of the share itself (`share_variance`, no doubling). A
    regression that shifts the canary by a constant ratio moves rho, not the residuals; the
    estimate is predictable (minutes before t only), which is all the tempered test needs."""

    prior: float = 0.0
    weight: float = PRIOR_WEIGHT
    recent: tuple[tuple[float, float, float, float], ...] = ()  # (c, n_c, b, n_b)
    num: float = 0.0
    den: float = 0.0

    @property
    def share_variance(self) -> float:
        total = self.weight + self.den
        if total <= 0:
            return 0.0
        return max(0.0, (self.weight * self.prior + self.num) / total)

    def update(self, canary_events: float, canary_requests: float, baseline_events: float,
               baseline_requests: float) -> "ShareDispersion":
        """Add one minute with both arms (a minute without requests on either arm is skipped)."""
        if canary_requests <= 0 or baseline_requests <= 0:
            return self
        recent = (self.recent + ((float(canary_events), float(canary_requests), float(baseline_events),
                                  float(baseline_requests)),))[-(BEFORE + 2):]
        num, den = self.num, self.den
        if len(recent) >= 2:
            c, n_c, b, n_b = recent[-2]
            others = recent[:-2] + recent[-1:]
            rate_c = (sum(x[0] for x in others) + 0.5) / (sum(x[1] for x in others) + 1.0)
            rate_b = (sum(x[2] for x in others) + 0.5) / (sum(x[3] for x in others) + 1.0)
            rho = rate_c / rate_b
            pi = n_c / (n_c + n_b)
            q = rho * pi / (rho * pi + 1.0 - pi)
            m = c + b
            var = m * q * (1.0 - q)
            if var > 0 and m > 1:
                num += (c - m * q) ** 2 / var - 1.0
                den += (m - 1.0) * q * (1.0 - q)
        return ShareDispersion(self.prior, self.weight, recent, num, den)
