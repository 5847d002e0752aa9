"""Memory/CPU utilisation and instance-count detectors: levels with persistence, and CUSUM drift.

Called by `daemon.core.evaluation` once per minute with the canary's (and baseline's) utilisation.
Utilisation is a per-minute gauge, strongly autocorrelated, not a count: there is no honest
per-request likelihood, so these detectors use persistence (a level counts only after holding for
N consecutive observed intervals) and a margin-based CUSUM rather than an e-process. A missing
minute neither extends nor resets a run: missing data is not evidence of health.

CUSUM on d_t = canary - baseline, standardised by a noise scale estimated from first differences
(robust to the slow drift it is looking for): z_t = (d_t - allowed) / sigma,
S_t = max(0, S_{t-1} + z_t - k), alarm when S_t > h. Under the A/A null the drift of z is
-allowed/sigma, so false alarms need the noise to exceed the tolerated difference for several
minutes in a row; `allowed_increase` is the policy's tolerance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SIGMA_FLOOR = 0.01  # one utilisation point: gauges are reported with about that resolution
CUSUM_K = 0.5  # reference value, in sigma units (detects shifts of about 1 sigma past the margin)


@dataclass(frozen=True, slots=True)
class LevelRun:
    """Consecutive observed intervals above each level, and the last value."""

    above_normal: int = 0
    above_warning: int = 0
    above_critical: int = 0
    last: float | None = None
    samples: int = 0

    def update(self, value: float | None, normal: float, warning: float, critical: float) -> "LevelRun":
        if value is None or not math.isfinite(value):
            return self
        return LevelRun(self.above_normal + 1 if value > normal else 0,
                        self.above_warning + 1 if value > warning else 0,
                        self.above_critical + 1 if value > critical else 0,
                        float(value), self.samples + 1)


@dataclass(frozen=True, slots=True)
class InstanceRun:
    """Instance count: consecutive intervals growing, and consecutive intervals at max_instances."""

    growing: int = 0
    at_max: int = 0
    last: int | None = None
    max_instances: int | None = None
    samples: int = 0

    def update(self, count: int | None, max_instances: int | None) -> "InstanceRun":
        if count is None:
            return self
        growing = self.growing + 1 if self.last is not None and count > self.last else 0
        at_max = self.at_max + 1 if max_instances is not None and count >= max_instances else 0
        return InstanceRun(growing, at_max, int(count), max_instances, self.samples + 1)


@dataclass(frozen=True, slots=True)
class Cusum:
    """One-sided CUSUM of canary-minus-baseline utilisation above an allowed increase."""

    statistic: float = 0.0
    peak: float = 0.0
    last_diff: float | None = None
    sum_sq_step: float = 0.0  # sum of squared first differences of d
    steps: int = 0
    samples: int = 0
    sum_diff: float = 0.0

    @property
    def sigma(self) -> float:
        if self.steps < 2:
            return SIGMA_FLOOR
        # Var(d_t - d_{t-1}) = 2 sigma^2 for independent noise
        return max(SIGMA_FLOOR, math.sqrt(self.sum_sq_step / (2.0 * self.steps)))

    @property
    def mean_diff(self) -> float | None:
        return self.sum_diff / self.samples if self.samples else None

    def update(self, canary: float | None, baseline: float | None, allowed: float) -> "Cusum":
        if canary is None or baseline is None or not (math.isfinite(canary) and math.isfinite(baseline)):
            return self
        d = float(canary) - float(baseline)
        sum_sq, steps = self.sum_sq_step, self.steps
        if self.last_diff is not None:
            sum_sq += (d - self.last_diff) ** 2
            steps += 1
        sigma = max(SIGMA_FLOOR, math.sqrt(sum_sq / (2.0 * steps))) if steps >= 2 else SIGMA_FLOOR
        s = max(0.0, self.statistic + (d - allowed) / sigma - CUSUM_K)
        return Cusum(s, max(self.peak, s), d, sum_sq, steps, self.samples + 1, self.sum_diff + d)

    def alarms(self, threshold: float) -> bool:
        return self.statistic > threshold
