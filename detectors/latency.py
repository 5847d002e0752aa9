"""Latency statistics on Cloud Monitoring bucket counts (reference §4).

Called by `daemon.core.evaluation` (exceedance counts for the p99 levels and the canary/baseline
slow-request comparison) and by the benchmark (Mann-Whitney as the Kayenta-compatible fixed-horizon
reference). Everything works on (edges, counts) of any layout: exponential, linear or explicit.
Bucket 0 is the underflow (-inf, edges[0]) and the last bucket the overflow [edges[-1], +inf).

Exceedances. "p99 is above L" <=> more than 1% of requests are slower than L. A bucket that
straddles L cannot be split exactly, so there are two counts:
  * `count_at_or_above`: only buckets entirely at or above L; never overstates, used to *fail*;
  * `count_above_pessimistic`: the straddling bucket's share interpolated inside the bucket
    (geometrically for exponential layouts, as `Histogram.quantile` does), and the unbounded
    underflow/overflow buckets counted whole; used to *pass*, so a pass is never flattered.

Mann-Whitney. U_c = sum_k c_k (B_<k + b_k/2), the canary's rank sum with midranks minus
n_c(n_c+1)/2; Var(U) = n_c n_b / 12 [(N+1) - sum_k (t_k^3 - t_k) / (N(N-1))], the tie correction
Kayenta uses. Fixed-horizon: valid for one look only (the benchmark shows the cost of peeking).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import special

from detectors.histogram import Histogram


def bucket_bounds(edges: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bound of every bucket, underflow and overflow included (length N+2)."""
    e = np.asarray(edges, dtype=float)
    lower = np.concatenate(([-math.inf], e))
    upper = np.concatenate((e, [math.inf]))
    return lower, upper


def count_at_or_above(edges: Sequence[float], counts: np.ndarray, threshold: float) -> np.ndarray:
    """Requests in buckets whose lower bound is >= threshold (conservative for "slow").
    `counts` may be (..., N+2) for many runs at once."""
    lower, _ = bucket_bounds(edges)
    return np.asarray(counts, dtype=float)[..., lower >= threshold].sum(axis=-1)


def count_above_pessimistic(edges: Sequence[float], counts: np.ndarray, threshold: float,
                            layout: str = "explicit") -> np.ndarray:
    """Requests slower than threshold, counting the straddling bucket's interpolated share and the
    unbounded buckets whole (pessimistic for "fast enough")."""
    weights = exceedance_weights(edges, threshold, layout)
    return (np.asarray(counts, dtype=float) * weights).sum(axis=-1)


def exceedance_weights(edges: Sequence[float], threshold: float, layout: str = "explicit") -> np.ndarray:
    """Per-bucket share counted as "above threshold" by `count_above_pessimistic`."""
    lower, upper = bucket_bounds(edges)
    weights = np.where(lower >= threshold, 1.0, 0.0)
    straddle = np.flatnonzero((lower < threshold) & (upper > threshold))
    for i in straddle:
        lo, hi = lower[i], upper[i]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            weights[i] = 1.0  # unbounded bucket: the share above is unknown, assume all of it
        elif layout == "exponential" and lo > 0:
            weights[i] = math.log(hi / threshold) / math.log(hi / lo)
        else:
            weights[i] = (hi - threshold) / (hi - lo)
    return weights


def quantile_bucket_edge(histogram: Histogram, q: float) -> float | None:
    """The lower edge of the bucket holding the q-quantile: a pre-registrable exceedance threshold
    that falls exactly on a bucket edge (so exceedance counts are exact). None if empty or if the
    quantile falls in the underflow bucket."""
    counts = np.asarray(histogram.counts, dtype=float)
    total = counts.sum()
    if total <= 0:
        return None
    index = int(np.searchsorted(np.cumsum(counts), q * total, side="left"))
    index = min(index, len(counts) - 1)
    if index == 0:
        return None
    return float(histogram.edges[index - 1])


@dataclass(frozen=True, slots=True)
class MannWhitney:
    u_canary: float
    n_canary: int
    n_baseline: int
    z: float
    p_value: float  # for the requested alternative, normal approximation with continuity 0.5
    auc: float  # P(canary slower) + P(tie)/2

    @property
    def mean(self) -> float:
        return self.n_canary * self.n_baseline / 2.0


def mann_whitney_buckets(canary: np.ndarray, baseline: np.ndarray,
                         alternative: Literal["greater", "less", "two-sided"] = "greater",
                         continuity: bool = True) -> MannWhitney | None:
    """Tie-corrected Mann-Whitney from bucket counts of one layout (each bucket is one tie group).
    Matches scipy.stats.mannwhitneyu(canary_samples, baseline_samples, method="asymptotic").
    None when an arm is empty."""
    c = np.asarray(canary, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if c.shape != b.shape:
        raise ValueError("canary and baseline histograms must share a bucket layout")
    n_c, n_b = float(c.sum()), float(b.sum())
    if n_c <= 0 or n_b <= 0:
        return None
    below_b = np.concatenate(([0.0], np.cumsum(b)[:-1]))
    u = float((c * (below_b + b / 2.0)).sum())
    t = c + b
    n = n_c + n_b
    tie = float((t ** 3 - t).sum()) / (n * (n - 1.0)) if n > 1 else 0.0
    var = n_c * n_b / 12.0 * ((n + 1.0) - tie)
    mean = n_c * n_b / 2.0
    if var <= 0:  # every request in one bucket: no evidence either way
        return MannWhitney(u, int(n_c), int(n_b), 0.0, 1.0, u / (n_c * n_b))
    sd = math.sqrt(var)
    cc = 0.5 if continuity else 0.0
    if alternative == "greater":
        z = (u - mean - cc) / sd
        p = float(special.ndtr(-z))
    elif alternative == "less":
        z = (u - mean + cc) / sd
        p = float(special.ndtr(z))
    else:
        big = max(u, n_c * n_b - u)
        z = (big - mean - cc) / sd
        p = min(1.0, 2.0 * float(special.ndtr(-z)))
    return MannWhitney(u, int(n_c), int(n_b), z, p, u / (n_c * n_b))
