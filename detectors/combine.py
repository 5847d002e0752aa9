"""How the false-rollback budget alpha is shared between metrics and phases.

Called by `daemon.core.evaluation` (and the benchmark) to get each sequential test's alpha.

The choice: **Bonferroni over metrics, nothing over phases or looks.**

* Every rollback-capable statistical test is an e-process that runs over the *whole rollout*
  (5xx level, latency level, 5xx ratio, slow-request ratio). Ville's inequality bounds each one's
  chance of *ever* crossing 1/alpha_i under its null, at every minute, across every phase: looking
  every minute and changing the traffic split between phases cost nothing, so phases do not
  multiply looks and there is no per-phase budget.
* Across metrics we split alpha: with K tests, P(any false rollback) <= sum_i alpha_i = alpha.
  Bonferroni is the only combination that is valid under arbitrary dependence between metrics
  (5xx and latency move together in a real incident, and under a shared nuisance in A/A), and it
  costs only log(1/w_i) nats per test. The split is *weighted* by what alpha buys (the caller's
  weights; `daemon.core.evaluation.ALPHA_WEIGHTS` gives the 5xx ratio test 0.45, the latency
  comparison 0.5 (0.45 tail, 0.05 location) and each level test 0.025): the ratio tests carry the
  fast detections and pay 5.4 nats at alpha = 1% instead of 6.2 for an equal split of five. Averaging e-values is the alternative (an average of K e-values is
  an e-value) but dilutes a single strong signal by K and gives no per-metric statement for the
  decision record.
* Dry-run tests never act, so they take no share. Gauge detectors (memory/CPU persistence and
  CUSUM) are not statistical tests of a per-request null and take no share either: their false
  alarms are governed by the policy's margins (`allowed_increase`, persistence) instead, which the
  benchmark measures.
* Inside one test, levels (normal/warning/critical) each use the test's full alpha_i. Only a level
  whose action is rollback can cause a false rollback; in the default policy that is the critical
  level alone. A policy that rolls back on warning as well adds at most alpha_i more (and in
  practice nothing: a rate under the warning level almost never shows evidence past critical).
"""
from __future__ import annotations

from typing import Mapping


def split_alpha(alpha: float, weights: Mapping[str, float]) -> dict[str, float]:
    """alpha_i = alpha * w_i / sum(w). Names with weight 0 get 0 (they never reject)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be within (0, 1)")
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        return {name: 0.0 for name in weights}
    return {name: (alpha * w / total if w > 0 else 0.0) for name, w in weights.items()}
