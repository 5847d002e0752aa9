"""daemon.core.evaluation: the policy's criteria applied to a rollout's evidence, minute by minute."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from daemon.core.evaluation import (
    Assessment, MinuteSample, alphas, assess, new_evidence, observe, start_phase,
)
from daemon.core.events import Metrics
from detectors.histogram import Histogram
from detectors.verdict import Outcome
from policies.loader import load_policy
from policies.model import Policy

DEFAULT = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
EDGES = 1.4 ** np.arange(65)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEFAULT)


def patched(policy: Policy, patch: dict[str, Any]) -> Policy:
    def merge(base: dict, extra: dict) -> dict:
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out
    return Policy.model_validate(merge(policy.model_dump(mode="json"), patch))


@lru_cache(maxsize=None)
def bucket_probs(median_ms: float, sigma: float) -> np.ndarray:
    lower = np.concatenate(([0.0], EDGES))
    upper = np.concatenate((EDGES, [np.inf]))
    cdf = stats.lognorm(sigma, scale=median_ms).cdf
    p = cdf(upper) - cdf(lower)
    return p / p.sum()


def latency(rng: np.random.Generator, n: int, median_ms: float = 100.0, sigma: float = 0.596) -> Histogram:
    return Histogram.exponential(64, 1.4, 1.0, rng.multinomial(n, bucket_probs(median_ms, sigma)).tolist())


def metrics(minute: int, n: int, errors: int, hist: Histogram | None, memory: float | None = 0.5,
            instances: int | None = 3) -> Metrics:
    return Metrics(T0 + timedelta(minutes=minute), "api", "rev", 60, (("2xx", n - errors), ("5xx", errors)),
                   hist, memory, 0.3, instances, 100)


def run(policy: Policy, minutes: int, *, seed: int = 0, rps: float = 100.0, share: float = 0.05,
        canary_rate: float = 0.001, baseline_rate: float = 0.001, canary_median: float = 100.0,
        canary_memory: float = 0.5, phase: int = 0, evidence=None, start: int = 0,
        open_alerts: int = 0) -> tuple[Any, list[Assessment]]:
    rng = np.random.default_rng(seed)
    ev = evidence if evidence is not None else new_evidence(policy)
    out = []
    for m in range(start, start + minutes):
        n_c = int(rng.poisson(60 * rps * share))
        n_b = int(rng.poisson(60 * rps * (1 - share)))
        canary = metrics(m + 1, n_c, int(rng.binomial(n_c, canary_rate)), latency(rng, n_c, canary_median),
                         canary_memory)
        baseline = metrics(m + 1, n_b, int(rng.binomial(n_b, baseline_rate)), latency(rng, n_b), 0.5)
        ev = observe(ev, policy, MinuteSample(T0 + timedelta(minutes=m + 1), canary, baseline,
                                              int(share * 100)))
        out.append(assess(ev, policy, phase, open_alerts=open_alerts))
    return ev, out


def first(assessments: list[Assessment], predicate) -> int | None:
    return next((i + 1 for i, a in enumerate(assessments) if predicate(a)), None)


def test_healthy_canary_is_promotable_and_never_rolled_back(policy: Policy) -> None:
    _, out = run(policy, 30, seed=1)
    assert not any(a.rollback_reasons() or a.hold_reasons() for a in out)
    last = out[-1]
    assert last.ready_to_promote(200)
    assert {r.name for r in last.results if r.gating} == set(policy.phases[0].criteria)
    assert all(r.verdict.outcome is Outcome.PASS for r in last.results)
    json.dumps([r.to_json() for r in last.results])  # the decision record is JSON


def test_not_promotable_before_min_requests(policy: Policy) -> None:
    _, out = run(policy, 1, seed=2, rps=1.0)  # ~3 canary requests
    a = out[-1]
    assert not a.ready_to_promote(200)
    assert a.get("error_rate").verdict.outcome is Outcome.INCONCLUSIVE


def test_error_ratio_regression_rolls_back_with_the_policy_action(policy: Policy) -> None:
    _, out = run(policy, 30, seed=3, canary_rate=0.02, baseline_rate=0.001)
    minute = first(out, lambda a: a.rollback_reasons())
    assert minute is not None and minute <= 5
    reasons = {r.name for r in out[minute - 1].rollback_reasons()}
    assert "error_ratio" in reasons
    result = out[minute - 1].get("error_ratio")
    assert result.verdict.statistic >= result.verdict.threshold
    assert result.verdict.details["ratio_lower"] > policy.comparison.error_rate.max_ratio / 2 ** 0.25


def test_outage_fails_the_absolute_level(policy: Policy) -> None:
    _, out = run(policy, 3, seed=4, canary_rate=0.5)
    a = out[-1]
    assert a.get("error_rate").verdict.outcome is Outcome.FAIL
    assert a.get("error_rate").action == policy.key_metrics.error_rate.on_critical == "rollback"


def test_warning_level_holds(policy: Policy) -> None:
    # canary alone at 0.8%: over the warning level (0.5%), under critical (1%); baseline identical
    _, out = run(policy, 60, seed=5, rps=200, canary_rate=0.008, baseline_rate=0.008)
    a = out[-1]
    assert a.get("error_rate").verdict.outcome is Outcome.WARN
    assert [r.name for r in a.hold_reasons()] == ["error_rate"]
    assert not a.rollback_reasons()
    assert not a.ready_to_promote(200)


def test_latency_critical_level_rolls_back(policy: Policy) -> None:
    _, out = run(policy, 10, seed=6, canary_median=900.0)  # p99 ~ 3.6 s
    a = out[-1]
    assert a.get("latency_p99").verdict.outcome is Outcome.FAIL
    assert a.get("latency_p99").verdict.observed > 2000
    assert "latency_p99" in {r.name for r in a.rollback_reasons()}


def test_memory_needs_persistence(policy: Policy) -> None:
    ev, out = run(policy, 2, seed=7, canary_memory=0.97)
    assert out[-1].get("memory_utilization").verdict.outcome is not Outcome.FAIL
    _, out = run(policy, 1, seed=8, canary_memory=0.97, evidence=ev, start=2)
    assert out[-1].get("memory_utilization").verdict.outcome is Outcome.FAIL
    assert "memory_utilization" in {r.name for r in out[-1].rollback_reasons()}


def test_open_alert_uses_alerts_on_open(policy: Policy) -> None:
    _, out = run(policy, 2, seed=9, open_alerts=1)
    result = out[-1].get("no_alerts")
    assert result.verdict.outcome is Outcome.FAIL and result.action == policy.alerts.on_open
    dry = patched(policy, {"alerts": {"dry_run": True}})
    _, out = run(dry, 2, seed=9, open_alerts=1)
    assert out[-1].get("no_alerts").dry_run
    assert not out[-1].rollback_reasons()


def test_dry_run_criterion_is_evaluated_but_not_acted_on(policy: Policy) -> None:
    dry = patched(policy, {"comparison": {"error_rate": {"dry_run": True}}})
    _, out = run(dry, 20, seed=3, canary_rate=0.02, baseline_rate=0.001)
    result = out[-1].get("error_ratio")
    assert result.verdict.outcome is Outcome.FAIL and result.dry_run
    assert "error_ratio" not in {r.name for r in out[-1].rollback_reasons()}
    # the active tests share alpha by weight (levels 0.025 each, latency comparison 0.5); the
    # dry-run test is evaluated at the share it would have if active (0.45 of 1)
    a = alphas(dry)
    assert a["latency_ratio"] == pytest.approx(policy.comparison.alpha * 0.5 / 0.55)
    assert a["error_rate"] == pytest.approx(policy.comparison.alpha * 0.025 / 0.55)
    assert a["error_ratio"] == pytest.approx(policy.comparison.alpha * 0.45)
    assert sum(v for k, v in a.items() if k != "error_ratio") == pytest.approx(policy.comparison.alpha)


def test_missing_canary_data_is_never_healthy(policy: Policy) -> None:
    ev = new_evidence(policy)
    rng = np.random.default_rng(10)
    for m in range(5):
        baseline = metrics(m + 1, 5000, 5, latency(rng, 5000))
        ev = observe(ev, policy, MinuteSample(T0 + timedelta(minutes=m + 1), None, baseline, 5))
    a = assess(ev, policy, 0, open_alerts=0)
    assert a.phase_requests == 0 and a.phase_minutes == 5 and a.phase_canary_minutes == 0
    for name in ("error_rate", "error_ratio", "memory_utilization", "instance_count"):
        assert a.get(name).verdict.outcome is Outcome.NODATA
    assert not a.ready_to_promote(0)


def test_start_phase_resets_phase_counters_only(policy: Policy) -> None:
    ev, out = run(policy, 10, seed=11)
    before = ev.error_ratio
    ev2 = start_phase(ev, 1)
    a = assess(ev2, policy, 1, open_alerts=0)
    assert a.phase_requests == 0 and ev2.phase.index == 1
    assert ev2.error_ratio is before and ev2.canary_requests == ev.canary_requests
    assert not a.ready_to_promote(200)
    assert ev.phase.canary_requests > 0  # the old value is unchanged


def test_duplicate_minute_changes_nothing(policy: Policy) -> None:
    rng = np.random.default_rng(12)
    sample = MinuteSample(T0 + timedelta(minutes=1), metrics(1, 300, 3, latency(rng, 300)),
                          metrics(1, 5700, 6, latency(rng, 5700)), 5)
    ev = observe(new_evidence(policy), policy, sample)
    assert observe(ev, policy, sample) is ev


def test_phase_gating_follows_the_policy(policy: Policy) -> None:
    ev, _ = run(policy, 5, seed=13)
    a = assess(ev, policy, 1, open_alerts=0)
    assert {r.name for r in a.results if r.gating} == set(policy.phases[1].criteria)
    # every criterion is evaluated whatever the phase
    assert {r.name for r in a.results} >= {"error_rate", "latency_p99", "error_ratio", "latency_ratio",
                                           "memory_utilization", "instance_count", "no_alerts"}


def test_phase_quantile_keeps_counts_across_a_bucket_layout_change(policy: Policy) -> None:
    # Minutes 1-3 on Cloud Run's usual exponential layout, fast; minutes 4-6 on another layout
    # (a collector change), slow. The displayed phase p99 must count both: before the fix the
    # second layout's requests were silently dropped and p99 stayed near the fast minutes' value.
    ev = new_evidence(policy)
    fast = Histogram.exponential(64, 1.4, 1.0, [0] * 14 + [1000])  # all in ~[111, 155) ms
    slow_edges = tuple(float(x) for x in np.linspace(0.0, 4000.0, 41))
    slow_counts = [0] * 42
    slow_counts[31] = 1000  # [3000, 3100) ms
    slow = Histogram.explicit(slow_edges, slow_counts)
    for minute in range(1, 7):
        hist = fast if minute <= 3 else slow
        ev = observe(ev, policy, MinuteSample(T0 + timedelta(minutes=minute),
                                              metrics(minute, 1000, 0, hist), metrics(minute, 1000, 0, fast), 5))
    lat = assess(ev, policy, 0, open_alerts=0).get("latency_p99")
    assert lat is not None and lat.verdict.observed is not None
    assert 3000.0 <= lat.verdict.observed <= 3100.0  # 3 of the 4 counted minutes are ~3 s
    assert ev.phase.latency_requests == 4000  # minutes 1-2 are the canary's warm-up


def test_quantile_of_parts_matches_a_single_layout() -> None:
    from detectors.histogram import quantile, quantile_of_parts

    rng = np.random.default_rng(3)
    h = latency(rng, 5000)
    counts = np.asarray(h.counts, dtype=float)
    for q in (0.01, 0.5, 0.9, 0.99, 0.999):
        assert quantile_of_parts(((h, counts),), q) == pytest.approx(quantile(h.layout, h.edges, counts, q))
        split = ((h, counts / 2), (h, counts / 2))
        assert quantile_of_parts(split, q) == pytest.approx(quantile(h.layout, h.edges, counts, q), rel=1e-6)


def test_location_test_rolls_back_a_whole_distribution_shift_the_tail_threshold_misses(policy: Policy) -> None:
    # x1.2 everywhere: p99 ~480 ms stays under the 500 ms slow threshold's r0 = 1.5 for a long time,
    # but the share over the baseline's median bucket edge moves from ~0.6 to ~0.7
    _, out = run(policy, 12, seed=21, share=0.25, canary_median=120.0)
    at = first(out, lambda a: "latency_ratio" in {r.name for r in a.rollback_reasons()})
    assert at is not None and at <= 8
    verdict = out[at - 1].get("latency_ratio").verdict
    assert "median bucket" in verdict.sentence and verdict.details["location_above_ms"] is not None


def test_location_test_is_quiet_on_an_identical_canary_at_high_traffic(policy: Policy) -> None:
    for seed in range(3):
        _, out = run(policy, 30, seed=100 + seed, rps=1000.0, share=0.25)
        assert not any(a.rollback_reasons() for a in out)
