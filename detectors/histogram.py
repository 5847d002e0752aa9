"""Latency histograms in Cloud Monitoring's Distribution layout, and quantiles from them.

A `Histogram` holds the finite bucket edges and the counts, with bucket 0 the underflow
(-inf, edges[0]) and the last bucket the overflow [edges[-1], +inf), exactly as Cloud Monitoring
defines exponential, linear and explicit bucket options. Counts of the same layout add across
minutes and revisions, so merged histograms are exact sufficient statistics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

Layout = Literal["exponential", "linear", "explicit"]


@dataclass(frozen=True, slots=True)
class Histogram:
    layout: Layout
    edges: tuple[float, ...]  # N+1 finite edges, strictly increasing
    counts: tuple[int, ...]  # N+2 counts: underflow, N finite buckets, overflow
    # The bucket options this layout was built from, so it can be written back exactly
    # (exponential: (num_finite_buckets, growth_factor, scale); linear: (num_finite_buckets,
    # width, offset); explicit: ()). Optional: edges alone define the histogram, so not compared.
    params: tuple[float, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if len(self.edges) < 1:
            raise ValueError("a histogram needs at least one bucket edge")
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"expected {len(self.edges) + 1} bucket counts, got {len(self.counts)}")
        if any(not math.isfinite(e) for e in self.edges):
            raise ValueError("bucket edges must be finite")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError("bucket edges must be strictly increasing")
        if any(c < 0 for c in self.counts):
            raise ValueError("bucket counts must not be negative")

    # --- construction -------------------------------------------------------------------------
    @staticmethod
    def exponential(num_finite_buckets: int, growth_factor: float, scale: float,
                    counts: Sequence[int]) -> "Histogram":
        if num_finite_buckets < 1 or num_finite_buckets > 10_000:
            raise ValueError("numFiniteBuckets must be between 1 and 10000")
        if not (growth_factor > 1 and math.isfinite(growth_factor)):
            raise ValueError("growthFactor must be greater than 1")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError("scale must be greater than 0")
        edges = tuple(scale * growth_factor ** k for k in range(num_finite_buckets + 1))
        return Histogram("exponential", edges, _pad(counts, num_finite_buckets + 2),
                         (num_finite_buckets, growth_factor, scale))

    @staticmethod
    def linear(num_finite_buckets: int, width: float, offset: float, counts: Sequence[int]) -> "Histogram":
        if num_finite_buckets < 1 or num_finite_buckets > 10_000:
            raise ValueError("numFiniteBuckets must be between 1 and 10000")
        if not (width > 0 and math.isfinite(width)) or not math.isfinite(offset):
            raise ValueError("width must be greater than 0 and offset finite")
        edges = tuple(offset + width * k for k in range(num_finite_buckets + 1))
        return Histogram("linear", edges, _pad(counts, num_finite_buckets + 2),
                         (num_finite_buckets, width, offset))

    @staticmethod
    def explicit(bounds: Sequence[float], counts: Sequence[int]) -> "Histogram":
        edges = tuple(float(b) for b in bounds)
        if not edges:
            raise ValueError("explicitBuckets.bounds must not be empty")
        return Histogram("explicit", edges, _pad(counts, len(edges) + 1))

    # --- arithmetic ---------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return sum(self.counts)

    def same_layout(self, other: "Histogram") -> bool:
        return self.layout == other.layout and self.edges == other.edges

    def merge(self, other: "Histogram") -> "Histogram":
        if not self.same_layout(other):
            raise ValueError("cannot merge histograms with different bucket layouts")
        return Histogram(self.layout, self.edges, tuple(a + b for a, b in zip(self.counts, other.counts)),
                         self.params)

    def count_at_or_above(self, threshold: float) -> int:
        """Requests in buckets whose lower edge is >= threshold. Conservative: a bucket that
        straddles the threshold is not counted, so "exceeds" is never overstated."""
        lower_edges = (-math.inf,) + self.edges  # lower edge of each bucket
        return sum(c for lo, c in zip(lower_edges, self.counts) if lo >= threshold)

    def quantile(self, q: float) -> float | None:
        """The q-quantile, interpolated inside its bucket (geometrically for exponential buckets).
        None when empty. In the underflow bucket returns the first edge; in overflow the last."""
        return quantile(self.layout, self.edges, np.asarray(self.counts, dtype=float), q)


def quantile(layout: str, edges: Sequence[float], counts: np.ndarray, q: float) -> float | None:
    total = float(counts.sum())
    if total <= 0:
        return None
    if not 0.0 <= q <= 1.0:
        raise ValueError("quantile must be within [0, 1]")
    target = q * total
    cumulative = np.cumsum(counts)
    index = int(np.searchsorted(cumulative, target, side="left"))
    index = min(index, len(counts) - 1)
    if index == 0:
        return float(edges[0])
    if index == len(counts) - 1:
        return float(edges[-1])
    lower, upper = float(edges[index - 1]), float(edges[index])
    below = float(cumulative[index - 1]) if index > 0 else 0.0
    in_bucket = float(counts[index])
    fraction = 0.0 if in_bucket <= 0 else min(max((target - below) / in_bucket, 0.0), 1.0)
    if layout == "exponential" and lower > 0:
        return lower * (upper / lower) ** fraction
    return lower + (upper - lower) * fraction


def _cdf(layout: str, edges: Sequence[float], counts: np.ndarray, x: float) -> float:
    """Requests at or below x, interpolating inside the bucket as `quantile` does (its inverse)."""
    e = np.asarray(edges, dtype=float)
    if x < e[0]:
        return 0.0
    if x >= e[-1]:
        return float(counts[:-1].sum())
    i = int(np.searchsorted(e, x, side="right"))  # finite bucket i covers [e[i-1], e[i])
    lower, upper = float(e[i - 1]), float(e[i])
    if layout == "exponential" and lower > 0:
        fraction = math.log(x / lower) / math.log(upper / lower)
    else:
        fraction = (x - lower) / (upper - lower)
    return float(counts[:i].sum()) + fraction * float(counts[i])


def quantile_of_parts(parts: Sequence[tuple["Histogram", np.ndarray]], q: float) -> float | None:
    """The q-quantile of histograms merged across *different* bucket layouts (a layout change
    within a phase): the value where the summed interpolated CDFs reach q x total, by bisection.
    With one layout it is exactly `quantile`."""
    parts = [(h, np.asarray(c, dtype=float)) for h, c in parts if float(np.sum(c)) > 0]
    if not parts:
        return None
    if len(parts) == 1 or all(h.same_layout(parts[0][0]) for h, _ in parts):
        h0 = parts[0][0]
        return quantile(h0.layout, h0.edges, sum(c for _, c in parts), q)
    if not 0.0 <= q <= 1.0:
        raise ValueError("quantile must be within [0, 1]")
    target = q * sum(float(c.sum()) for _, c in parts)
    lo = min(float(h.edges[0]) for h, _ in parts)
    hi = max(float(h.edges[-1]) for h, _ in parts)
    if sum(_cdf(h.layout, h.edges, c, lo) for h, c in parts) >= target:
        return lo
    if sum(_cdf(h.layout, h.edges, c, hi) for h, c in parts) < target:
        return hi
    for _ in range(60):
        mid = (lo + hi) / 2
        if sum(_cdf(h.layout, h.edges, c, mid) for h, c in parts) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def _pad(counts: Sequence[int], expected: int) -> tuple[int, ...]:
    """Cloud Monitoring may omit trailing zero buckets; more buckets than the layout is an error."""
    values = tuple(int(c) for c in counts)
    if len(values) > expected:
        raise ValueError(f"{len(values)} bucket counts for a layout with {expected} buckets")
    return values + (0,) * (expected - len(values))
