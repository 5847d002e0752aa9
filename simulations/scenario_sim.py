"""Per-minute canary and baseline data for a `Scenario`, vectorised across runs (pure numpy).

`simulate(scenario, rng, runs)` draws whole arrays (runs x minutes) for the benchmark; `MinuteSim`
draws one minute at a time for any canary share, which is how the closed-loop `TrafficModel` lets
request counts follow the daemon's own traffic split. Both use the same `MinuteSim.step`, so the
open- and closed-loop data come from one model. The caller passes a seeded `numpy.random.Generator`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from simulations.scenario_model import Scenario, lognormal_bucket_probs


@dataclass(slots=True)
class Minutes:
    """Arrays with a leading runs axis, then minutes (and buckets for latency). Counts are int64."""

    n_c: np.ndarray  # canary requests (all classes)
    n_b: np.ndarray
    e_c: np.ndarray  # 5xx
    e_b: np.ndarray
    f_c: np.ndarray  # 4xx
    f_b: np.ndarray
    lat_c: np.ndarray  # (..., K+2) latency bucket counts over all requests
    lat_b: np.ndarray
    mem_c: np.ndarray
    mem_b: np.ndarray
    cpu_c: np.ndarray
    cpu_b: np.ndarray
    inst_c: np.ndarray
    inst_b: np.ndarray
    present_c: np.ndarray  # bool: a point exists and is not lost (n > 0 and not missing)
    present_b: np.ndarray
    delay_c: np.ndarray  # visibility delay, whole minutes
    delay_b: np.ndarray
    # Truth, for the oracle and for harm accounting.
    p_c: np.ndarray  # canary per-request 5xx probability this minute (after overdispersion)
    p_b: np.ndarray
    probs_c: np.ndarray  # (..., K+2) true bucket probabilities
    probs_b: np.ndarray
    fraction: np.ndarray  # canary share of traffic during the minute
    ratio: np.ndarray  # the scenario's canary/baseline error ratio (before overdispersion)

    @staticmethod
    def stack(items: list["Minutes"]) -> "Minutes":
        return Minutes(**{f.name: np.stack([getattr(m, f.name) for m in items], axis=1) for f in fields(Minutes)})

    @property
    def runs(self) -> int:
        return int(self.n_c.shape[0])

    @property
    def minutes(self) -> int:
        return int(self.n_c.shape[1])


class MinuteSim:
    """The stateful part of the model (AR(1) nuisances) for `runs` independent rollouts."""

    def __init__(self, scenario: Scenario, runs: int, rng: np.random.Generator) -> None:
        self.scenario = scenario
        self.runs = runs
        s = scenario
        self.edges = s.buckets.edges
        # Stationary starts so minute 1 looks like any other minute.
        self.err_state = rng.normal(0.0, s.error_nuisance_sd, runs) if s.error_nuisance_sd > 0 else np.zeros(runs)
        self.lat_state = rng.normal(0.0, s.latency_drift_sd, runs) if s.latency_drift_sd > 0 else np.zeros(runs)
        self.mem_c = rng.normal(0.0, s.resource_noise_sd, runs)
        self.mem_b = rng.normal(0.0, s.resource_noise_sd, runs)

    @staticmethod
    def _ar1(state: np.ndarray, sd: float, phi: float, rng: np.random.Generator) -> np.ndarray:
        if sd <= 0:
            return state
        return phi * state + math.sqrt(1.0 - phi * phi) * sd * rng.standard_normal(state.shape)

    def step(self, minute: int, fraction: np.ndarray | float, rng: np.random.Generator) -> Minutes:
        """Draw minute `minute` (1-based; covers (minute-1, minute]) with canary share `fraction`."""
        s, runs = self.scenario, self.runs
        w = np.broadcast_to(np.asarray(fraction, dtype=float), (runs,)).copy()
        # Traffic.
        diurnal = 1.0 + s.diurnal_amplitude * math.sin(2 * math.pi * (minute + s.diurnal_phase_min)
                                                       / s.diurnal_period_min)
        shared = np.exp(rng.normal(0.0, s.traffic_noise_sd, runs)) if s.traffic_noise_sd > 0 else np.ones(runs)
        rate = 60.0 * s.rps * max(diurnal, 0.0) * shared
        n_c = rng.poisson(rate * w)
        n_b = rng.poisson(rate * (1.0 - w))
        # Errors.
        self.err_state = self._ar1(self.err_state, s.error_nuisance_sd, s.error_nuisance_phi, rng)
        ratio = float(s.error_ratio.at(minute))
        p_b = s.p0 * np.exp(self.err_state)
        p_c = p_b * ratio
        if s.overdispersion_sd > 0:
            p_c = p_c * np.exp(rng.normal(0.0, s.overdispersion_sd, runs))
            p_b = p_b * np.exp(rng.normal(0.0, s.overdispersion_sd, runs))
        p_c, p_b = np.clip(p_c, 0.0, 0.95), np.clip(p_b, 0.0, 0.95)
        e_c = rng.binomial(n_c, p_c)
        e_b = rng.binomial(n_b, p_b)
        if s.burst_prob > 0:
            # A burst (a crash loop, a retry storm) lands on a request, so on each arm in proportion
            # to its traffic: sending half to a 5% canary would make the A/A canary 1.3x worse.
            burst = (rng.random(runs) < s.burst_prob) * rng.poisson(s.burst_mean, runs)
            to_canary = rng.random(runs) < w
            extra_c = np.where(to_canary & (n_c > 0), burst, 0)
            extra_b = np.where(~to_canary & (n_b > 0), burst, 0)
            n_c, e_c = n_c + extra_c, e_c + extra_c
            n_b, e_b = n_b + extra_b, e_b + extra_b
        f_c = rng.binomial(n_c - e_c, s.p_4xx)
        f_b = rng.binomial(n_b - e_b, s.p_4xx)
        # Latency: shared drift on the log scale; canary scale, cold start and slow tail.
        self.lat_state = self._ar1(self.lat_state, s.latency_drift_sd, 0.9, rng)
        log_med = math.log(s.latency_median_ms) + self.lat_state
        scale = float(s.canary_latency_scale.at(minute))
        if minute <= s.cold_start_minutes:
            scale *= s.cold_start_factor
        tail = float(np.clip(s.canary_tail_fraction.at(minute), 0.0, 1.0))
        probs_b = lognormal_bucket_probs(self.edges, log_med, s.latency_sigma)
        probs_c = probs_b if scale == 1.0 else lognormal_bucket_probs(self.edges, log_med + math.log(scale),
                                                                       s.latency_sigma)
        if tail > 0:
            slow = lognormal_bucket_probs(self.edges, math.log(s.tail_median_ms) + self.lat_state, s.tail_sigma)
            probs_c = (1.0 - tail) * probs_c + tail * slow
        lat_c = rng.multinomial(n_c, probs_c)
        lat_b = rng.multinomial(n_b, probs_b)
        # Resources.
        self.mem_c = self._ar1(self.mem_c, s.resource_noise_sd, 0.8, rng)
        self.mem_b = self._ar1(self.mem_b, s.resource_noise_sd, 0.8, rng)
        mem_c = np.clip(s.memory_base + float(s.canary_memory_delta.at(minute)) + self.mem_c, 0.0, 1.0)
        mem_b = np.clip(s.memory_base + self.mem_b, 0.0, 1.0)
        mean_s = s.latency_median_ms / 1000.0 * math.exp(s.latency_sigma ** 2 / 2)
        inst_c = self._instances(n_c, mean_s * scale)
        inst_b = self._instances(n_b, mean_s)
        cpu_c = np.clip(s.cpu_base * scale + rng.normal(0.0, s.resource_noise_sd, runs), 0.0, 1.0)
        cpu_b = np.clip(s.cpu_base + rng.normal(0.0, s.resource_noise_sd, runs), 0.0, 1.0)
        # Data availability.
        present_c = n_c > 0
        present_b = n_b > 0
        if s.missing_prob > 0:
            present_c &= rng.random(runs) >= s.missing_prob
            present_b &= rng.random(runs) >= s.missing_prob
        if s.gap_start_min is not None and s.gap_start_min < minute <= s.gap_start_min + s.gap_minutes:
            present_c = np.zeros(runs, bool)
            present_b = np.zeros(runs, bool)
        if s.delay_max > 0:
            delay_c = rng.integers(s.delay_min, s.delay_max + 1, runs)
            delay_b = rng.integers(s.delay_min, s.delay_max + 1, runs)
        else:
            delay_c = delay_b = np.full(runs, s.delay_min, dtype=np.int64)
        return Minutes(n_c, n_b, e_c, e_b, f_c, f_b, lat_c, lat_b, mem_c, mem_b, cpu_c, cpu_b, inst_c, inst_b,
                       present_c, present_b, delay_c, delay_b, p_c, p_b,
                       np.broadcast_to(probs_c, (runs, probs_c.shape[-1])),
                       np.broadcast_to(probs_b, (runs, probs_b.shape[-1])), w, np.full(runs, ratio))

    def _instances(self, n: np.ndarray, mean_latency_s: float) -> np.ndarray:
        # Little's law: concurrent requests = rps x latency; Cloud Run targets ~60% of concurrency.
        busy = n / 60.0 * mean_latency_s / (0.6 * self.scenario.concurrency)
        return np.where(n > 0, np.clip(np.ceil(busy), 1, self.scenario.max_instances), 0).astype(np.int64)


def simulate(scenario: Scenario, rng: np.random.Generator, runs: int = 1, minutes: int | None = None) -> Minutes:
    """Open loop: `runs` rollouts following the scenario's traffic schedule, minutes 1..H."""
    horizon = scenario.minutes if minutes is None else minutes
    sim = MinuteSim(scenario, runs, rng)
    out = [sim.step(t, float(scenario.canary_fraction(t)), rng) for t in range(1, horizon + 1)]
    return Minutes.stack(out)
