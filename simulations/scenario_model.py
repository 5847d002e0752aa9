"""What a simulated rollout looks like: the `Scenario` parameters, time profiles, and S0–S13.

A `Scenario` is plain data (frozen dataclasses, no randomness): the service's traffic, the baseline's
error rate and latency distribution with their shared nuisances, and how the canary differs over time
(`Profile`s of error ratio, latency scale, slow-tail share and memory). `simulations.scenario_sim`
turns it into per-minute counts; the benchmark, the sandbox, `rollbackd simulate` and the backtest
corpus all start from here. The catalogue follows canary-statistics.md §6.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

Kind = Literal["aa", "errors", "latency", "memory"]

# The runbook's traffic schedule: (canary percent, minutes); the last phase (100%) has no end.
RUNBOOK_SCHEDULE: tuple[tuple[int, int | None], ...] = ((5, 10), (25, 15), (50, 15), (100, None))


@dataclass(frozen=True, slots=True)
class Step:
    """From minute `at` the value moves to `value`, linearly over `ramp_min` minutes (0: at once)."""

    at: float
    value: float
    ramp_min: float = 0.0


@dataclass(frozen=True, slots=True)
class Profile:
    """A value over rollout time: `base`, then the `steps` in order. Minute t covers (t-1, t]."""

    base: float
    steps: tuple[Step, ...] = ()

    @staticmethod
    def constant(value: float) -> "Profile":
        return Profile(value)

    @staticmethod
    def onset(before: float, after: float, at: float = 0.0, ramp_min: float = 0.0) -> "Profile":
        return Profile(before, (Step(at, after, ramp_min),))

    def at(self, minute: np.ndarray | float) -> np.ndarray:
        t = np.asarray(minute, dtype=float)
        value = np.full(t.shape, float(self.base))
        for step in self.steps:
            if step.ramp_min > 0:
                fraction = np.clip((t - step.at) / step.ramp_min, 0.0, 1.0)
            else:
                fraction = (t > step.at).astype(float)
            value = value + (step.value - value) * fraction
        return value

    @property
    def changes(self) -> bool:
        return any(step.value != self.base for step in self.steps)

@dataclass(frozen=True, slots=True)
class Buckets:
    """Cloud Monitoring exponential bucket options used for simulated latency distributions."""

    num_finite: int = 40
    growth: float = 1.4
    scale_ms: float = 1.0

    @property
    def edges(self) -> np.ndarray:
        return self.scale_ms * self.growth ** np.arange(self.num_finite + 1)


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything that decides one simulated rollout's data (see canary-statistics.md §6)."""

    name: str
    description: str
    kind: Kind = "aa"
    service: str = "checkout"
    baseline_revision: str = "checkout-00041-base"
    canary_revision: str = "checkout-00042-cnry"
    minutes: int = 40  # the runbook schedule's 5/25/50 phases; then the rollout is at 100%
    schedule: tuple[tuple[int, int | None], ...] = RUNBOOK_SCHEDULE
    # Traffic: R_t = rps * d_t * u_t, d_t diurnal, u_t ~ LogNormal(0, traffic_noise_sd) shared.
    rps: float = 100.0
    diurnal_amplitude: float = 0.0
    diurnal_period_min: float = 1440.0
    diurnal_phase_min: float = 0.0
    traffic_noise_sd: float = 0.1
    # Errors: p_b = p0 * v_t (shared AR(1) log-normal nuisance), p_c = p_b * ratio(t) * o_c.
    p0: float = 0.001
    p_4xx: float = 0.01
    error_nuisance_sd: float = 0.3
    error_nuisance_phi: float = 0.9
    overdispersion_sd: float = 0.0
    burst_prob: float = 0.0
    burst_mean: float = 20.0
    error_ratio: Profile = Profile(1.0)
    # Latency: LogNormal(ln median, sigma) with a shared AR(1) drift on the log scale.
    latency_median_ms: float = 100.0
    latency_sigma: float = 0.596
    latency_drift_sd: float = 0.05
    canary_latency_scale: Profile = Profile(1.0)
    canary_tail_fraction: Profile = Profile(0.0)
    tail_median_ms: float = 800.0
    tail_sigma: float = 0.3
    cold_start_minutes: int = 0
    cold_start_factor: float = 2.0
    buckets: Buckets = Buckets()
    # Resources: utilisation fractions; the canary adds `canary_memory_delta`.
    memory_base: float = 0.40
    canary_memory_delta: Profile = Profile(0.0)
    cpu_base: float = 0.30
    resource_noise_sd: float = 0.01
    concurrency: int = 80
    max_instances: int = 100
    # Data: each arm-minute missing with probability `missing_prob`; a gap of both arms; delays.
    missing_prob: float = 0.0
    gap_start_min: int | None = None
    gap_minutes: int = 10
    delay_min: int = 0  # minimum visibility delay, minutes
    delay_max: int = 0  # maximum; each arm-minute draws uniformly from [delay_min, delay_max]
    # Scenario truth the benchmark needs. onset_min: when the canary starts being worse.
    onset_min: float | None = None
    tags: tuple[str, ...] = field(default=())

    def with_(self, **changes) -> "Scenario":
        return replace(self, **changes)

    @property
    def is_aa(self) -> bool:
        return self.kind == "aa"

    def canary_fraction(self, minute: np.ndarray | int) -> np.ndarray:
        """The schedule's canary share during minute t (1-based)."""
        t = np.asarray(minute, dtype=float)
        fraction = np.full(t.shape, self.schedule[-1][0] / 100.0)
        start = 0.0
        for percent, length in self.schedule:
            if length is None:
                break
            fraction = np.where((t > start) & (t <= start + length), percent / 100.0, fraction)
            start += length
        return fraction

    def phase_ends(self) -> list[int]:
        """Minute indices at which the non-final phases end (e.g. [10, 25, 40])."""
        ends, total = [], 0
        for _, length in self.schedule:
            if length is None:
                break
            total += int(length)
            ends.append(total)
        return ends


def _s(name: str, description: str, **kw) -> Scenario:
    return Scenario(name=name, description=description, **kw)


def _errors(ratio: float, **kw) -> dict:
    return dict(kind="errors", error_ratio=Profile.onset(1.0, ratio), onset_min=0.0, **kw)


def catalogue() -> dict[str, Scenario]:
    """S0–S13 of canary-statistics.md §6, sized for the runbook's 40-minute rollout."""
    tail = Profile.onset(0.0, 0.0105)  # 1.05% slowed to ~800 ms: p99 400 -> ~600 ms
    items = [
        _s("S0-aa-clean", "A/A, 100 rps, shared nuisances only"),
        _s("S0-aa-clean-0.2rps", "A/A at 0.2 rps (the low end)", rps=0.2),
        _s("S0-aa-clean-1000rps", "A/A at 1000 rps (the high end)", rps=1000.0),
        _s("S1-aa-diurnal", "A/A, 2-hour traffic cycle ±50% and error nuisance", rps=100.0,
           diurnal_amplitude=0.5, diurnal_period_min=120.0, error_nuisance_sd=0.5),
        _s("S2-aa-overdispersed", "A/A, per-arm overdispersion sd 0.5 and error bursts, 100 rps",
           overdispersion_sd=0.5, burst_prob=0.01),
        _s("S2-aa-overdispersed-0.2rps", "S2 at 0.2 rps", rps=0.2, overdispersion_sd=0.5, burst_prob=0.01),
        _s("S2-aa-overdispersed-10rps", "S2 at 10 rps", rps=10.0, overdispersion_sd=0.5, burst_prob=0.01),
        _s("S2-aa-overdispersed-1000rps", "S2 at 1000 rps", rps=1000.0, overdispersion_sd=0.5, burst_prob=0.01),
        _s("S3-aa-coldstart", "A/A, canary latency x2 for its first 3 minutes", cold_start_minutes=3),
        _s("S11-aa-missing", "A/A, 10% arm-minutes missing, a 10-minute gap, 1-4 min delays",
           missing_prob=0.1, gap_start_min=12, delay_min=1, delay_max=4),
        _s("S12-aa-canary-better", "canary halves errors and is 10% faster",
           error_ratio=Profile(0.5), canary_latency_scale=Profile(0.9)),
        _s("S13-aa-harmless", "canary errors x1.05: practically harmless, so a rollback counts as false "
           "(the reference allows r0 = 1.1; the default policy's r0 is in policies/default.yaml)",
           error_ratio=Profile(1.05)),
        _s("S4-errors-x1.5", "5xx 0.1% -> 0.15% from the start", **_errors(1.5)),
        _s("S4-errors-x2", "5xx 0.1% -> 0.2%", **_errors(2.0)),
        _s("S4-errors-x5", "5xx 0.1% -> 0.5% (headline), 100 rps", **_errors(5.0)),
        _s("S4-errors-x20", "5xx 0.1% -> 2%", **_errors(20.0)),
        _s("S4-errors-x2-1000rps", "5xx 0.1% -> 0.2% at 1000 rps", rps=1000.0, **_errors(2.0)),
        _s("S5-outage", "canary 5xx 50%", kind="errors", error_ratio=Profile(500.0), onset_min=0.0),
        _s("S6-latency-tail", "p99 400 -> 600 ms via 1.05% of requests at ~800 ms", kind="latency",
           canary_tail_fraction=tail, onset_min=0.0),
        _s("S7-latency-x1.1", "whole latency distribution x1.1", kind="latency",
           canary_latency_scale=Profile(1.1), onset_min=0.0),
        _s("S7-latency-x1.5", "whole latency distribution x1.5", kind="latency",
           canary_latency_scale=Profile(1.5), onset_min=0.0),
        _s("S8-drift-errors", "error ratio ramps 1 -> 5 over 60 minutes", kind="errors",
           error_ratio=Profile.onset(1.0, 5.0, 0.0, 60.0), onset_min=0.0),
        _s("S9-onset-mid", "5xx x5 from minute 20 (mid phase 2)", kind="errors",
           error_ratio=Profile.onset(1.0, 5.0, 20.0), onset_min=20.0),
        _s("S10-lowtraffic-errors", "5xx x5 at 1 rps", rps=1.0, **_errors(5.0)),
        _s("S10-lowtraffic-latency", "latency tail at 1 rps", rps=1.0, kind="latency",
           canary_tail_fraction=tail, onset_min=0.0),
        _s("S11-missing-errors", "5xx x5 with 10% missing arm-minutes and a 10-minute gap",
           missing_prob=0.1, gap_start_min=12, **_errors(5.0)),
        _s("S11-late-errors", "5xx x5 with data visible 1-4 minutes late",
           delay_min=1, delay_max=4, **_errors(5.0)),
    ]
    return {s.name: s for s in items}


def get_scenario(name: str) -> Scenario:
    table = catalogue()
    if name not in table:
        raise KeyError(f"unknown scenario '{name}'; known: {', '.join(table)}")
    return table[name]


def lognormal_bucket_probs(edges: np.ndarray, log_median: np.ndarray, sigma: float) -> np.ndarray:
    """Bucket probabilities (underflow, finite..., overflow) of LogNormal(log_median, sigma); the
    leading axes of `log_median` are kept, the bucket axis is last."""
    from scipy.special import ndtr

    z = (np.log(edges)[None, :] - np.asarray(log_median, dtype=float).reshape(-1, 1)) / sigma
    cdf = ndtr(z)
    probs = np.diff(np.concatenate([np.zeros((cdf.shape[0], 1)), cdf, np.ones((cdf.shape[0], 1))], axis=1),
                    axis=1)
    probs = np.clip(probs, 0.0, None)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs.reshape(np.shape(log_median) + (len(edges) + 1,))
