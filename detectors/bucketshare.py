"""Bucket-share e-process: is the canary's latency distribution shifted toward slower buckets?

Reference §4, construction 1 (Lindon-Malek with 2K Poisson processes). Called by the benchmark and
available to `daemon.core.evaluation`; the default policy decides latency on exceedance counts
(`detectors.ratio` on requests above a pre-registered threshold), which is one-sided and has a
tolerance r0, while this test has none and catches whole-distribution shifts.

Null: in each minute both arms draw latencies from the same distribution. Given the number m_tk of
requests that landed in bucket k in minute t, the canary's count is Binomial(m_tk, pi_t) with
pi_t the canary's traffic share (Poisson thinning), independently across buckets. Alternative: the
canary's log-odds of landing in bucket k grows with the bucket's score z_k,

    logit q_tk(delta) = logit pi_t + delta z_k,     delta > 0,

with scores fixed in advance: z_k = 2 F(k) - 1 from a reference distribution's mid-CDF F (e.g. the
baseline's first minutes), the Wilcoxon scores, locally most powerful for a logistic shift. The
e-process is a mixture over a grid of delta of prod_{t,k} LR_tk(delta); each factor has mean 1 under
the null, so it is a test martingale and Ville's inequality gives anytime validity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DELTAS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)


def wilcoxon_scores(reference_counts: np.ndarray) -> np.ndarray:
    """z_k = 2 F_mid(k) - 1 in [-1, 1] from reference bucket counts; uniform over buckets if empty."""
    counts = np.asarray(reference_counts, dtype=float)
    total = counts.sum()
    if total <= 0:
        k = np.arange(counts.size, dtype=float)
        return 2.0 * (k + 0.5) / counts.size - 1.0
    below = np.concatenate(([0.0], np.cumsum(counts)[:-1]))
    return 2.0 * (below + counts / 2.0) / total - 1.0


def minute_log_lr(scores: np.ndarray, canary: np.ndarray, baseline: np.ndarray,
                  deltas: np.ndarray) -> np.ndarray:
    """log LR of one minute (or many: leading axes are runs/minutes, last axis buckets) for each delta.
    Returns shape (..., len(deltas)). Minutes where an arm is empty contribute 0."""
    c = np.asarray(canary, dtype=float)
    b = np.asarray(baseline, dtype=float)
    n_c, n_b = c.sum(axis=-1), b.sum(axis=-1)
    ok = (n_c > 0) & (n_b > 0)
    pi = np.where(ok, n_c / np.where(ok, n_c + n_b, 1.0), 0.5)[..., None, None]  # (..., 1, 1)
    logit = np.log(pi) - np.log1p(-pi)
    eta = logit + deltas[:, None] * scores[None, :]  # (..., D, K)
    # log q = eta - log(1 + e^eta); log(1 - q) = -log(1 + e^eta)
    soft = np.logaddexp(0.0, eta)
    soft0 = np.logaddexp(0.0, logit)
    log_q, log_1q = eta - soft, -soft
    log_p0, log_1p0 = logit - soft0, -soft0
    llr = (c[..., None, :] * (log_q - log_p0) + b[..., None, :] * (log_1q - log_1p0)).sum(axis=-1)
    return np.where(ok[..., None], llr, 0.0)


def log_e_process_array(scores: np.ndarray, canary: np.ndarray, baseline: np.ndarray,
                        deltas: tuple[float, ...] = DELTAS) -> np.ndarray:
    """log E_t after each minute for arrays (..., T, K) of bucket counts; returns (..., T)."""
    llr = minute_log_lr(np.asarray(scores, dtype=float), canary, baseline, np.asarray(deltas))
    cum = np.cumsum(llr, axis=-2)
    top = cum.max(axis=-1)
    return top + np.log(np.exp(cum - top[..., None]).mean(axis=-1))


@dataclass(frozen=True, slots=True)
class BucketShareState:
    """Scalar running state (immutable)."""

    scores: np.ndarray
    log_e_delta: np.ndarray
    log_e: float = 0.0
    max_log_e: float = 0.0
    minutes: int = 0

    @staticmethod
    def start(scores: np.ndarray) -> "BucketShareState":
        return BucketShareState(np.asarray(scores, dtype=float), np.zeros(len(DELTAS)))

    def update(self, canary: np.ndarray, baseline: np.ndarray) -> "BucketShareState":
        llr = minute_log_lr(self.scores, canary, baseline, np.asarray(DELTAS))
        log_e_delta = self.log_e_delta + llr
        top = float(log_e_delta.max())
        log_e = top + math.log(float(np.exp(log_e_delta - top).mean()))
        return BucketShareState(self.scores, log_e_delta, log_e, max(self.max_log_e, log_e), self.minutes + 1)

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e, 700.0))

    @property
    def p_value(self) -> float:
        return min(1.0, math.exp(-self.max_log_e))
