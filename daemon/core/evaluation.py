"""Apply a policy's criteria to one rollout's evidence: the pure link between detectors and the
rollout state machine (`daemon.core.rollout`), which calls it once per evaluated minute.

    evidence = new_evidence(policy)                       # at deploy
    evidence = observe(evidence, policy, MinuteSample(...)) # each minute, canary and/or baseline
    evidence = start_phase(evidence, i)                    # after a promotion to phase i
    assessment = assess(evidence, policy, i, open_alerts=n)

Values only: no clock, no I/O, nothing mutated (numpy arrays inside the evidence are never
written to; every update builds new ones). Cost ~50-100 us per observe()+assess().

Semantics:
  * every criterion of `key_metrics` and `comparison` is evaluated every minute, whatever the phase:
    a rollback or a hold can happen in any phase; the phase's `criteria` only say which must PASS
    to promote (`CriterionResult.gating`);
  * outcomes map to actions through the policy: WARN -> on_warning, FAIL of a level ->
    on_critical, FAIL of a comparison -> on_fail, an open alert -> alerts.on_open; PASS,
    INCONCLUSIVE and NODATA do nothing by themselves ("pass"), but only PASS lets a phase promote;
  * statistical criteria are anytime-valid e-processes accumulated over the *whole rollout*; the
    budget `comparison.alpha` is split across them (see `detectors.combine`);
  * a minute whose canary or baseline is missing counts what exists; missing data is never healthy.
  * `observe` ignores a sample whose `end` is not after the last one observed, so a duplicated
    minute changes nothing (ordering is the caller's job).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np

from daemon.core.events import Metrics
from detectors import judge
from detectors.combine import split_alpha
from detectors.dispersion import Dispersion, ShareDispersion
from detectors.rate import CappedLevel
from detectors.histogram import Histogram, quantile_of_parts
from detectors.latency import exceedance_weights, quantile_bucket_edge
from detectors.ratio import RatioSpec, RatioState, cap_for
from detectors.utilization import Cusum, InstanceRun, LevelRun
from detectors.verdict import Outcome, Verdict
from policies.model import Policy
from policies.units import format_ms

# Sequential tests that share comparison.alpha (when enabled and not dry-run), and their weights:
# alpha goes where it buys detection time. The ratio tests carry the fast detections; the level
# tests are a backstop for what a ratio cannot see (a baseline that is bad too) and, capped, need
# little: 0.45% to the 5xx ratio test, 0.5% to the latency comparison (0.45% tail, 0.05% location)
# and 0.025% to each level test at alpha = 1%.
SEQUENTIAL_CRITERIA: tuple[str, ...] = ("error_rate", "latency_p99", "error_ratio", "latency_ratio")
ALPHA_WEIGHTS: dict[str, float] = {"error_rate": 0.025, "latency_p99": 0.025, "error_ratio": 0.45,
                                   "latency_ratio": 0.5}
# The absolute outage breaker: one canary minute with at least this many requests, this share of
# them 5xx and this many 5xx rolls back at once (the capped tests need two minutes). Under the
# critical level's null (rate <= 1%) such a minute has probability < 1e-20.
BREAKER_MIN_REQUESTS = 100
BREAKER_ERROR_RATIO = 0.2
BREAKER_MIN_ERRORS = 20
# One minute may contribute at most this share of the log threshold to a ratio e-process, so a
# single burst minute can never roll back on its own and two saturated minutes always can (see
# detectors.ratio.cap_for); a real regression keeps contributing every minute.
MINUTE_CAP_SHARE = 0.5
# The ratio tests mix over onset times (an e-detector): the rollout's start weighs 0.8, and a
# fresh start every 5 informative minutes (7 more, covering a 40-minute rollout) shares 0.2, so
# a regression that begins mid-rollout is not held back by the negative drift its alternatives
# gathered while the canary was healthy.
ONSET_EVERY = 5
ONSET_STARTS = 8
ONSET_FIRST_WEIGHT = 0.8
# The latency comparison is two tests under one criterion: the slow-request share (the tail) and,
# after the warm-up, a location test: the share of requests at or above the baseline's median
# bucket edge (from the warm-up minutes), canary vs baseline at r0 = 1, which sees a whole-
# distribution shift the tail threshold cannot. It takes this share of latency_ratio's alpha.
LOCATION_ALPHA_SHARE = 0.1  # 0.05% of latency_ratio's 0.5%: the tail test keeps 0.45%
LOCATION_FACTORS: tuple[float, ...] = (1.05, 1.1, 1.2, 1.35, 1.6)
# Pre-registering the slow-request threshold from the baseline: wait for this much baseline
# latency data, and use only later minutes in the test.
WARMUP_REQUESTS = 1000
WARMUP_MIN_REQUESTS = 200
WARMUP_MINUTES = 5


@dataclass(frozen=True, slots=True)
class MinuteSample:
    """One evaluated minute (interval) of one rollout."""

    end: datetime
    canary: Metrics | None
    baseline: Metrics | None
    canary_percent: int


@dataclass(frozen=True, slots=True)
class PhaseCounters:
    """Evidence of the current phase only (reset by `start_phase`)."""

    index: int = 0
    minutes: int = 0
    canary_minutes: int = 0
    baseline_minutes: int = 0
    canary_requests: int = 0
    canary_errors: int = 0
    latency_requests: int = 0
    # Canary latency of the phase, merged per bucket layout: ((layout, counts), ...). A layout change
    # within a phase starts a new part; the displayed quantile counts every part.
    latency_parts: tuple[tuple[Histogram, np.ndarray], ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Evidence:
    """Accumulated detector states of one rollout (opaque to the state machine; immutable)."""

    error_spec: RatioSpec
    latency_spec: RatioSpec
    phase: PhaseCounters = PhaseCounters()
    last_end: datetime | None = None
    minutes: int = 0
    canary_requests: int = 0
    canary_errors: int = 0
    # latency level test: canary requests with a histogram, and slow counts against each level
    latency_requests: float = 0.0
    slow_critical: float = 0.0
    slow_warning: float = 0.0
    slow_normal: float = 0.0
    error_ratio: RatioState | None = None
    # capped level e-processes (critical, warning) for 5xx and for slow requests; the breaker's text
    error_levels: tuple[CappedLevel, CappedLevel] | None = None
    slow_levels: tuple[CappedLevel, CappedLevel] | None = None
    breaker: str | None = None
    # the baseline's minute-level dispersion (5xx, slow requests): tempers the ratio tests
    error_dispersion: Dispersion = Dispersion()
    slow_dispersion: Dispersion = Dispersion()
    slow_threshold_ms: float | None = None
    warmup_counts: np.ndarray | None = field(default=None, compare=False)
    warmup_layout: Histogram | None = None
    warmup_minutes: int = 0
    latency_ratio: RatioState | None = None
    # the location test: share of requests at or above the baseline's median bucket edge
    location_spec: RatioSpec | None = None
    location_threshold_ms: float | None = None
    location_ratio: RatioState | None = None
    location_dispersion: ShareDispersion = ShareDispersion()  # of the canary's share over the median edge
    memory: LevelRun = LevelRun()
    cpu: LevelRun = LevelRun()
    instances: InstanceRun = InstanceRun()
    memory_drift: Cusum = Cusum()
    canary_since: datetime | None = None  # start of the first minute the canary served requests


@dataclass(frozen=True, slots=True)
class CriterionResult:
    name: str  # a policies.model CRITERIA name
    verdict: Verdict
    action: str  # "pass" | "hold" | "rollback": what this verdict does under the policy
    dry_run: bool  # evaluated and logged, never acted on
    gating: bool  # the current phase lists it: it must PASS to promote

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "dry_run": self.dry_run,
                "gating": self.gating, **self.verdict.to_json()}


@dataclass(frozen=True, slots=True)
class Assessment:
    results: tuple[CriterionResult, ...]
    phase_requests: int  # canary requests seen in the current phase
    phase_minutes: int = 0  # minutes observed in the current phase
    phase_canary_minutes: int = 0  # ... of which had canary data

    def rollback_reasons(self) -> tuple[CriterionResult, ...]:
        return tuple(r for r in self.results if not r.dry_run and r.action == "rollback")

    def hold_reasons(self) -> tuple[CriterionResult, ...]:
        return tuple(r for r in self.results if not r.dry_run and r.action == "hold")

    def ready_to_promote(self, min_requests: int) -> bool:
        if self.phase_requests < min_requests:
            return False
        return all(r.verdict.outcome is Outcome.PASS for r in self.results if r.gating and not r.dry_run)

    def get(self, name: str) -> CriterionResult | None:
        for result in self.results:
            if result.name == name:
                return result
        return None


# --- building evidence --------------------------------------------------------------------------
def alphas(policy: Policy) -> dict[str, float]:
    """Each sequential criterion's share of comparison.alpha. Dry-run and disabled tests take no
    share; a dry-run test is still evaluated (and logged) as if it had an equal share."""
    km, cmp = policy.key_metrics, policy.comparison
    return dict(_alphas(cmp.alpha, (
        not km.error_rate.dry_run, not km.latency_p99.dry_run,
        cmp.error_rate.enabled and not cmp.error_rate.dry_run, cmp.latency.enabled and not cmp.latency.dry_run)))


@lru_cache(maxsize=64)
def _alphas(alpha: float, active: tuple[bool, ...]) -> tuple[tuple[str, float], ...]:
    weights = {name: ALPHA_WEIGHTS[name] if on else 0.0 for name, on in zip(SEQUENTIAL_CRITERIA, active)}
    shares = split_alpha(alpha, weights)
    # a dry-run test is evaluated as if every test were active (its share of the full weights)
    as_if = split_alpha(alpha, ALPHA_WEIGHTS)
    return tuple((k, v if v > 0 else as_if[k]) for k, v in shares.items())


def new_evidence(policy: Policy) -> Evidence:
    a = alphas(policy)
    cmp = policy.comparison
    error_spec = _ratio_spec(cmp.error_rate.max_ratio, a["error_ratio"])
    tail_alpha, location_alpha = latency_alphas(a["latency_ratio"])
    latency_spec = _ratio_spec(cmp.latency.max_ratio, tail_alpha)
    location_spec = _ratio_spec(1.0, location_alpha, LOCATION_FACTORS)
    km = policy.key_metrics
    error_cap = MINUTE_CAP_SHARE * math.log(1 / a["error_rate"])
    slow_cap = MINUTE_CAP_SHARE * math.log(1 / a["latency_p99"])
    slow_level = 1 - km.latency_p99.percentile / 100
    return Evidence(error_spec=error_spec, latency_spec=latency_spec,
                    error_ratio=RatioState.empty(error_spec), latency_ratio=RatioState.empty(latency_spec),
                    error_levels=(CappedLevel.empty(km.error_rate.critical, error_cap),
                                  CappedLevel.empty(km.error_rate.warning, error_cap)),
                    slow_levels=(CappedLevel.empty(slow_level, slow_cap), CappedLevel.empty(slow_level, slow_cap)),
                    error_dispersion=Dispersion(prior=cmp.error_rate.overdispersion),
                    slow_dispersion=Dispersion(prior=cmp.latency.overdispersion),
                    slow_threshold_ms=cmp.latency.slow_above, location_spec=location_spec,
                    location_ratio=RatioState.empty(location_spec),
                    location_dispersion=ShareDispersion(prior=cmp.latency.overdispersion))


def latency_alphas(alpha: float) -> tuple[float, float]:
    """latency_ratio's alpha split between its tail and location tests (Bonferroni)."""
    return alpha * (1.0 - LOCATION_ALPHA_SHARE), alpha * LOCATION_ALPHA_SHARE


@lru_cache(maxsize=64)
def _ratio_spec(r0: float, alpha: float, factors: tuple[float, ...] | None = None) -> RatioSpec:
    kw = {} if factors is None else {"factors": factors}
    return RatioSpec.make(r0, cap_for(alpha, MINUTE_CAP_SHARE, ONSET_FIRST_WEIGHT), onset_every=ONSET_EVERY,
                          onset_starts=ONSET_STARTS, first_weight=ONSET_FIRST_WEIGHT, **kw)


def start_phase(evidence: Evidence, phase_index: int) -> Evidence:
    """Reset the per-phase counters only; the e-processes carry over (they are rollout-wide)."""
    return _replace(evidence, phase=PhaseCounters(index=phase_index))


def observe(evidence: Evidence, policy: Policy, sample: MinuteSample) -> Evidence:
    if evidence.last_end is not None and sample.end <= evidence.last_end:
        return evidence
    km = policy.key_metrics
    canary, baseline = sample.canary, sample.baseline
    ph = evidence.phase
    changes: dict[str, Any] = {"last_end": sample.end, "minutes": evidence.minutes + 1}
    ph_changes: dict[str, Any] = {"minutes": ph.minutes + 1}

    # Cold starts: the canary's latency during its first `canary_warmup` of traffic is left out of the
    # latency criteria (errors always count).
    since = evidence.canary_since
    if since is None and canary is not None and canary.requests > 0:
        since = sample.end - timedelta(seconds=canary.interval_s)
        changes["canary_since"] = since
    warming = since is not None and (sample.end - since).total_seconds() <= policy.evidence.canary_warmup
    if canary is not None:
        n, k = canary.requests, canary.errors
        changes.update(canary_requests=evidence.canary_requests + n, canary_errors=evidence.canary_errors + k)
        ph_changes.update(canary_minutes=ph.canary_minutes + 1, canary_requests=ph.canary_requests + n,
                          canary_errors=ph.canary_errors + k)
        if evidence.error_levels is not None:
            changes["error_levels"] = tuple(level.update(k, n) for level in evidence.error_levels)
        if (evidence.breaker is None and n >= BREAKER_MIN_REQUESTS and k >= BREAKER_MIN_ERRORS
                and k >= BREAKER_ERROR_RATIO * n):
            changes["breaker"] = (f"Canary outage: {k} of {n} requests ({100 * k / n:.3g}%) failed with 5xx in the "
                                  f"minute to {sample.end:%H:%M} (breaker: at least {BREAKER_MIN_ERRORS} 5xx and "
                                  f"{100 * BREAKER_ERROR_RATIO:g}% of at least {BREAKER_MIN_REQUESTS} requests).")
        changes["memory"] = evidence.memory.update(canary.memory_utilization, km.memory_utilization.normal,
                                                   km.memory_utilization.warning, km.memory_utilization.critical)
        if km.cpu_utilization is not None:
            cpu = km.cpu_utilization
            changes["cpu"] = evidence.cpu.update(canary.cpu_utilization, cpu.normal, cpu.warning, cpu.critical)
        changes["instances"] = evidence.instances.update(canary.instance_count, canary.max_instances)
        hist = canary.latency
        if hist is not None and hist.total > 0 and not warming:
            counts = np.asarray(hist.counts, dtype=float)
            lat = km.latency_p99
            over_critical = float(counts @ _weights(hist, lat.critical, False))
            over_warning = float(counts @ _weights(hist, lat.warning, False))
            changes.update(
                latency_requests=evidence.latency_requests + counts.sum(),
                slow_critical=evidence.slow_critical + over_critical,
                slow_warning=evidence.slow_warning + over_warning,
                slow_normal=evidence.slow_normal + float(counts @ _weights(hist, lat.normal, True)))
            if evidence.slow_levels is not None:
                crit, warn = evidence.slow_levels
                changes["slow_levels"] = (crit.update(over_critical, float(counts.sum())),
                                          warn.update(over_warning, float(counts.sum())))
            ph_changes["latency_requests"] = ph.latency_requests + int(counts.sum())
            ph_changes["latency_parts"] = _add_part(ph.latency_parts, hist, counts)
    if baseline is not None:
        ph_changes["baseline_minutes"] = ph.baseline_minutes + 1

    if canary is not None and baseline is not None:
        if evidence.error_ratio is not None:
            # tempered by the dispersion of earlier minutes only (the update below comes after)
            changes["error_ratio"] = evidence.error_ratio.update(
                evidence.error_spec, canary.errors, canary.requests, baseline.errors, baseline.requests,
                evidence.error_dispersion.share_variance)
    if baseline is not None:
        changes["error_dispersion"] = evidence.error_dispersion.update(baseline.errors, baseline.requests)
    if canary is not None and baseline is not None:
        changes["memory_drift"] = evidence.memory_drift.update(
            canary.memory_utilization, baseline.memory_utilization, policy.comparison.memory.allowed_increase)
    _observe_slow_ratio(evidence, policy, None if warming else canary, baseline, changes)
    changes["phase"] = _replace(ph, **ph_changes)
    return _replace(evidence, **changes)


def _observe_slow_ratio(evidence: Evidence, policy: Policy, canary: Metrics | None,
                        baseline: Metrics | None, changes: dict[str, Any]) -> None:
    """Canary vs baseline share of requests at or above a pre-registered threshold: the policy's
    slow_above, else the lower edge of the baseline's p99 bucket from the first minutes (the tail
    test); and the share at or above the lower edge of the baseline's median bucket from the same
    minutes (the location test). A threshold taken from the warm-up is used only by later minutes,
    so it is fixed before the data it judges."""
    b_hist = baseline.latency if baseline is not None else None
    if b_hist is None or b_hist.total <= 0:
        return
    b_counts = np.asarray(b_hist.counts, dtype=float)
    threshold, location = evidence.slow_threshold_ms, evidence.location_threshold_ms
    if threshold is None or (location is None and evidence.location_ratio is not None):
        warm, layout = evidence.warmup_counts, evidence.warmup_layout
        if layout is None or not layout.same_layout(b_hist):
            warm, layout = b_counts, b_hist  # (re)start the warm-up on the current layout
        else:
            warm = warm + b_counts
        minutes = evidence.warmup_minutes + 1
        changes.update(warmup_counts=warm, warmup_layout=layout, warmup_minutes=minutes)
        total = float(warm.sum())
        if total >= WARMUP_REQUESTS or (minutes >= WARMUP_MINUTES and total >= WARMUP_MIN_REQUESTS):
            merged = Histogram(layout.layout, layout.edges, tuple(int(c) for c in warm))
            if threshold is None:
                edge = quantile_bucket_edge(merged, policy.key_metrics.latency_p99.percentile / 100.0)
                if edge is not None:
                    changes["slow_threshold_ms"] = edge
            if location is None:
                edge = quantile_bucket_edge(merged, 0.5)
                if edge is not None:
                    changes["location_threshold_ms"] = edge
    c_hist = canary.latency if canary is not None else None
    usable = c_hist is not None and c_hist.total > 0
    c_counts = np.asarray(c_hist.counts, dtype=float) if usable else None
    b_total = float(b_counts.sum())
    if threshold is not None and evidence.latency_ratio is not None:
        b_slow = float(b_counts @ _weights(b_hist, threshold, False))
        if usable:
            changes["latency_ratio"] = evidence.latency_ratio.update(
                evidence.latency_spec, float(c_counts @ _weights(c_hist, threshold, False)), float(c_counts.sum()),
                b_slow, b_total, evidence.slow_dispersion.share_variance)
            changes["slow_dispersion"] = evidence.slow_dispersion.update(b_slow, b_total)
    if location is not None and evidence.location_ratio is not None and evidence.location_spec is not None:
        if usable:
            b_over = float(b_counts @ _weights(b_hist, location, False))
            c_over, c_total = float(c_counts @ _weights(c_hist, location, False)), float(c_counts.sum())
            changes["location_ratio"] = evidence.location_ratio.update(
                evidence.location_spec, c_over, c_total, b_over, b_total, evidence.location_dispersion.share_variance)
            changes["location_dispersion"] = evidence.location_dispersion.update(c_over, c_total, b_over, b_total)


# --- assessing ----------------------------------------------------------------------------------
def assess(evidence: Evidence, policy: Policy, phase_index: int, *, open_alerts: int) -> Assessment:
    phases = policy.phases
    phase = phases[min(max(phase_index, 0), len(phases) - 1)]
    gating = set(phase.criteria)
    min_requests = phase.min_requests if phase.min_requests is not None else policy.evidence.min_requests
    a = alphas(policy)
    km, cmp = policy.key_metrics, policy.comparison
    ph = evidence.phase
    results: list[CriterionResult] = []

    def add(name: str, verdict: Verdict, action: str, dry_run: bool) -> None:
        results.append(CriterionResult(name, verdict, action, dry_run, name in gating))

    def level_action(outcome: Outcome, levels: Any) -> str:
        if outcome is Outcome.FAIL:
            return levels.on_critical
        if outcome is Outcome.WARN:
            return levels.on_warning
        return "pass"

    er = km.error_rate
    n, k = evidence.canary_requests, evidence.canary_errors
    v = judge.level_verdict(
        what="error rate", n=n, k_critical=k, k_warning=k, k_normal=k, critical=er.critical,
        warning=er.warning, normal=er.normal, alpha=a["error_rate"], phase_n=ph.canary_requests,
        min_n=min_requests, observed=(k / n if n else None), observed_text=judge.pct(k / n if n else None),
        levels_text=(judge.pct(er.normal), judge.pct(er.warning), judge.pct(er.critical)),
        details={"errors": k, "phase_requests": ph.canary_requests, "phase_errors": ph.canary_errors},
        log_e=None if evidence.error_levels is None else (evidence.error_levels[0].log_e,
                                                          evidence.error_levels[1].log_e),
        breaker=evidence.breaker)
    add("error_rate", v, level_action(v.outcome, er), er.dry_run)

    lat = km.latency_p99
    p_ms = _phase_quantile(ph, lat.percentile / 100.0)
    v = judge.level_verdict(
        what=f"p{lat.percentile:g} latency", n=evidence.latency_requests, k_critical=evidence.slow_critical,
        k_warning=evidence.slow_warning, k_normal=evidence.slow_normal, critical=1 - lat.percentile / 100,
        warning=1 - lat.percentile / 100, normal=1 - lat.percentile / 100, alpha=a["latency_p99"],
        phase_n=ph.latency_requests, min_n=min_requests, observed=p_ms,
        observed_text="n/a" if p_ms is None else f"{p_ms:.0f}ms",
        levels_text=(format_ms(lat.normal), format_ms(lat.warning), format_ms(lat.critical)),
        details={"slow_over_critical": evidence.slow_critical, "slow_over_warning": evidence.slow_warning,
                 "slow_over_normal": evidence.slow_normal},
        log_e=None if evidence.slow_levels is None else (evidence.slow_levels[0].log_e, evidence.slow_levels[1].log_e))
    add("latency_p99", v, level_action(v.outcome, lat), lat.dry_run)

    mem = km.memory_utilization
    v = judge.utilization_verdict(what="memory utilisation", run=evidence.memory, normal=mem.normal,
                                  warning=mem.warning, critical=mem.critical, persistence=mem.persistence)
    add("memory_utilization", v, level_action(v.outcome, mem), mem.dry_run)
    if km.cpu_utilization is not None:
        cpu = km.cpu_utilization
        v = judge.utilization_verdict(what="CPU utilisation", run=evidence.cpu, normal=cpu.normal,
                                      warning=cpu.warning, critical=cpu.critical, persistence=cpu.persistence)
        add("cpu_utilization", v, level_action(v.outcome, cpu), cpu.dry_run)
    inst = km.instance_count
    v = judge.instance_verdict(run=evidence.instances, persistence=inst.persistence)
    add("instance_count", v, level_action(v.outcome, inst), inst.dry_run)

    _comparison(results, gating, "error_ratio", cmp.error_rate, evidence.error_ratio,
                evidence.error_spec, a["error_ratio"], "5xx rate", {})
    slow = evidence.slow_threshold_ms
    tail_alpha, location_alpha = latency_alphas(a["latency_ratio"])
    loc = evidence.location_threshold_ms
    location = None
    if loc is not None and evidence.location_ratio is not None and evidence.location_spec is not None:
        location = (evidence.location_ratio, evidence.location_spec, location_alpha,
                    f"share of requests at or above the baseline's median bucket ({format_ms(loc)})")
    _comparison(results, gating, "latency_ratio", cmp.latency, evidence.latency_ratio, evidence.latency_spec,
                tail_alpha, f"share of requests slower than {'?' if slow is None else format_ms(slow)}",
                {"slow_above_ms": slow, "location_above_ms": loc}, waiting=slow is None, location=location)
    drift = cmp.memory
    if drift.enabled:
        v = judge.drift_verdict(what="memory utilisation", cusum=evidence.memory_drift,
                                threshold=drift.decision_threshold, allowed=drift.allowed_increase)
        add("memory_drift", v, drift.on_fail if v.outcome is Outcome.FAIL else "pass", drift.dry_run)
    elif "memory_drift" in gating:
        add("memory_drift", _disabled("memory_drift"), "pass", drift.dry_run)

    alerts = policy.alerts
    if open_alerts > 0:
        v = Verdict(Outcome.FAIL, float(open_alerts), 0.0, float(open_alerts),
                    f"{open_alerts} Cloud Monitoring alert(s) open on the {alerts.scope}.")
        add("no_alerts", v, alerts.on_open, alerts.dry_run)
    else:
        add("no_alerts", Verdict(Outcome.PASS, 0.0, 0.0, 0.0, "No open alerts."), "pass", alerts.dry_run)
    return Assessment(tuple(results), ph.canary_requests, ph.minutes, ph.canary_minutes)


def _comparison(results: list[CriterionResult], gating: set[str], name: str, check: Any,
                state: RatioState | None, spec: RatioSpec, alpha: float, what: str,
                details: dict[str, Any], waiting: bool = False,
                location: tuple[RatioState, RatioSpec, float, str] | None = None) -> None:
    """One comparison criterion. `location` (latency only): a second test under the same criterion,
    at its own share of the criterion's alpha; its FAIL is the criterion's FAIL (it never holds a
    promotion by itself)."""
    if not check.enabled or state is None:
        if name in gating:
            results.append(CriterionResult(name, _disabled(name), "pass", check.dry_run, True))
        return
    if waiting:
        v = Verdict(Outcome.INCONCLUSIVE, None, 1.0 / alpha, None,
                    "Waiting for baseline latency data to set the slow-request threshold.", details)
    else:
        v = judge.ratio_verdict(what=what, state=state, spec=spec, alpha=alpha, details=details)
    if location is not None and v.outcome is not Outcome.FAIL:
        l_state, l_spec, l_alpha, l_what = location
        if l_state.minutes > 0:
            lv = judge.ratio_verdict(what=l_what, state=l_state, spec=l_spec, alpha=l_alpha, details=details)
            if lv.outcome is Outcome.FAIL:
                v = lv
    action = check.on_fail if v.outcome is Outcome.FAIL else "pass"
    results.append(CriterionResult(name, v, action, check.dry_run, name in gating))


def _disabled(name: str) -> Verdict:
    return Verdict(Outcome.NODATA, None, None, None, f"{name} is required by the phase but disabled in the policy.")


def _add_part(parts: tuple[tuple[Histogram, np.ndarray], ...], hist: Histogram,
              counts: np.ndarray) -> tuple[tuple[Histogram, np.ndarray], ...]:
    for i, (layout, merged) in enumerate(parts):
        if layout.same_layout(hist):
            return parts[:i] + ((layout, merged + counts),) + parts[i + 1:]
    return parts + ((hist, counts),)


def _phase_quantile(ph: PhaseCounters, q: float) -> float | None:
    return quantile_of_parts(ph.latency_parts, q) if ph.latency_parts else None


@lru_cache(maxsize=256)
def _cached_weights(layout: str, edges: tuple[float, ...], threshold: float, pessimistic: bool) -> np.ndarray:
    if pessimistic:
        w = exceedance_weights(edges, threshold, layout)
    else:
        lower = np.concatenate(([-math.inf], np.asarray(edges, dtype=float)))
        w = (lower >= threshold).astype(float)
    w.setflags(write=False)
    return w


def _weights(hist: Histogram, threshold_ms: float, pessimistic: bool) -> np.ndarray:
    return _cached_weights(hist.layout, hist.edges, float(threshold_ms), pessimistic)


def _replace(obj: Any, **changes: Any) -> Any:
    """dataclasses.replace without its per-call introspection (hot path)."""
    values = {name: getattr(obj, name) for name in obj.__dataclass_fields__}
    values.update(changes)
    return type(obj)(**values)
