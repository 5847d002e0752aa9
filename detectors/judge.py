"""Turn detector states into verdicts (outcome, statistic, threshold, observed value, a sentence).

Called by `daemon.core.evaluation`, which supplies plain numbers taken from the policy: this module
knows nothing about policies or phases. Rules shared by every function here:
  * a point estimate never decides: FAIL/WARN need an e-value past 1/alpha (or a persistence or
    CUSUM alarm for gauges);
  * PASS needs data and the phase's minimum evidence, and no evidence of being above normal;
  * no data is NODATA, never PASS.
"""
from __future__ import annotations

import math

from detectors import rate
from detectors.ratio import RatioSpec, RatioState
from detectors.utilization import Cusum, InstanceRun, LevelRun
from detectors.verdict import Outcome, Verdict


# Promotion needs more than "not yet proven worse": a gating criterion PASSes only while its
# evidence against the canary is weak (e-value below 10, i.e. the data are less than 10x likelier
# under a regression than under a healthy canary). Between 10 and 1/alpha the rollout waits for more
# data instead of promoting a canary that is probably bad but not yet proven so. Under a healthy
# canary an e-process reaches 10 with probability at most 10% ever (Ville) and typically sinks
# towards 0, so this rarely delays a good canary.
PROMOTION_EVIDENCE = 10.0


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.3g}%"


def level_verdict(*, what: str, n: float, k_critical: float, k_warning: float, k_normal: float,
                  critical: float, warning: float, normal: float, alpha: float, phase_n: float,
                  min_n: float, observed: float | None, observed_text: str, levels_text: tuple[str, str, str],
                  details: dict | None = None, log_e: tuple[float, float] | None = None,
                  breaker: str | None = None) -> Verdict:
    """Level test of a rate (5xx share, or share of requests slower than a latency level).

    `levels_text` are the human forms of (normal, warning, critical), e.g. ("0.1%", "0.5%", "1%")
    or ("500ms", "1s", "2s"); the k_* are event counts counted against each level. `log_e` gives
    the (critical, warning) log e-values when the caller accumulates them minute by minute with a
    per-minute cap (`rate.CappedLevel`); otherwise they come from the cumulative counts. `breaker`
    is the sentence of a tripped absolute breaker (a FAIL whatever the e-values say)."""
    threshold = 1.0 / alpha
    log_t = math.log(threshold)
    info = dict(details or {})
    info.update(requests=n, alpha=alpha)
    if breaker is not None:
        return Verdict(Outcome.FAIL, None, threshold, observed, breaker, info)
    if n <= 0:
        return Verdict(Outcome.NODATA, None, threshold, None, f"No canary {what} data yet.", info)
    if log_e is None:
        log_crit = rate.log_e_above(k_critical, n, critical)
        log_warn = rate.log_e_above(k_warning, n, warning)
    else:
        log_crit, log_warn = log_e
    log_norm = rate.log_e_above(k_normal, n, normal)
    info.update(e_critical=_exp(log_crit), e_warning=_exp(log_warn), e_normal=_exp(log_norm))
    norm_t, warn_t, crit_t = levels_text
    if log_crit >= log_t:
        return Verdict(Outcome.FAIL, _exp(log_crit), threshold, observed,
                       f"Canary {what} is over the critical level {crit_t} (observed {observed_text}, "
                       f"e-value {_exp(log_crit):.3g} >= {threshold:.3g}).", info)
    if log_warn >= log_t:
        return Verdict(Outcome.WARN, _exp(log_warn), threshold, observed,
                       f"Canary {what} is over the warning level {warn_t} (observed {observed_text}, "
                       f"e-value {_exp(log_warn):.3g} >= {threshold:.3g}).", info)
    if log_norm >= log_t:
        return Verdict(Outcome.INCONCLUSIVE, _exp(log_norm), threshold, observed,
                       f"Canary {what} is above normal ({norm_t}) but not shown past warning "
                       f"(observed {observed_text}).", info)
    if log_norm >= math.log(min(PROMOTION_EVIDENCE, threshold)):
        return Verdict(Outcome.INCONCLUSIVE, _exp(log_norm), threshold, observed,
                       f"Canary {what} {observed_text} leans above normal ({norm_t}, e-value "
                       f"{_exp(log_norm):.3g} >= {PROMOTION_EVIDENCE:g}): waiting for more data.", info)
    if phase_n < min_n:
        return Verdict(Outcome.INCONCLUSIVE, _exp(log_norm), threshold, observed,
                       f"Canary {what} {observed_text} so far; {phase_n:.0f} of {min_n:.0f} requests "
                       f"needed this phase.", info)
    return Verdict(Outcome.PASS, _exp(log_norm), threshold, observed,
                   f"Canary {what} {observed_text}: no evidence above {norm_t} "
                   f"after {n:.0f} requests.", info)


def ratio_verdict(*, what: str, state: RatioState, spec: RatioSpec, alpha: float,
                  details: dict | None = None) -> Verdict:
    """Canary against baseline: FAIL when the e-process for "ratio <= r0" reaches 1/alpha."""
    threshold = 1.0 / alpha
    info = dict(details or {})
    ratio = state.observed_ratio()
    if state.canary_requests <= 0 or state.baseline_requests <= 0:
        return Verdict(Outcome.NODATA, None, threshold, ratio,
                       f"No minute with both canary and baseline {what} data yet.", info)
    lower, upper = state.confidence_sequence(spec, alpha)
    info.update(r0=spec.r0, p_value=state.p_value, ratio_lower=lower, ratio_upper=upper,
                canary_events=state.canary_events, baseline_events=state.baseline_events,
                canary_requests=state.canary_requests, baseline_requests=state.baseline_requests,
                alpha=alpha)
    e = state.e_value
    ratio_text = "n/a" if ratio is None else ("inf" if math.isinf(ratio) else f"{ratio:.3g}x")
    bound = "the baseline's" if spec.r0 == 1.0 else f"{spec.r0:g}x the baseline's"
    if state.rejects(alpha):
        return Verdict(Outcome.FAIL, e, threshold, ratio,
                       f"Canary {what} is {'higher than' if spec.r0 == 1.0 else 'more than'} {bound} "
                       f"(observed {ratio_text}, e-value {e:.3g} >= {threshold:.3g}).", info)
    if e >= min(PROMOTION_EVIDENCE, threshold):
        return Verdict(Outcome.INCONCLUSIVE, e, threshold, ratio,
                       f"Canary {what} leans above {bound} (observed {ratio_text}, "
                       f"e-value {e:.3g} >= {PROMOTION_EVIDENCE:g}): waiting for more data.", info)
    return Verdict(Outcome.PASS, e, threshold, ratio,
                   f"No evidence canary {what} exceeds {bound} "
                   f"(observed {ratio_text}, e-value {e:.3g} < {threshold:.3g}).", info)


def utilization_verdict(*, what: str, run: LevelRun, normal: float, warning: float, critical: float,
                        persistence: int) -> Verdict:
    info = {"above_warning_intervals": run.above_warning, "above_critical_intervals": run.above_critical,
            "samples": run.samples}
    if run.samples == 0 or run.last is None:
        return Verdict(Outcome.NODATA, None, float(persistence), None, f"No canary {what} data yet.", info)
    if run.above_critical >= persistence:
        return Verdict(Outcome.FAIL, float(run.above_critical), float(persistence), run.last,
                       f"Canary {what} over {pct(critical)} for {run.above_critical} intervals "
                       f"(last {pct(run.last)}).", info)
    if run.above_warning >= persistence:
        return Verdict(Outcome.WARN, float(run.above_warning), float(persistence), run.last,
                       f"Canary {what} over {pct(warning)} for {run.above_warning} intervals "
                       f"(last {pct(run.last)}).", info)
    if run.last > normal:
        return Verdict(Outcome.INCONCLUSIVE, float(run.above_normal), float(persistence), run.last,
                       f"Canary {what} {pct(run.last)} is above normal ({pct(normal)}).", info)
    return Verdict(Outcome.PASS, float(run.above_warning), float(persistence), run.last,
                   f"Canary {what} {pct(run.last)} is under {pct(normal)}.", info)


def instance_verdict(*, run: InstanceRun, persistence: int) -> Verdict:
    info = {"growing_intervals": run.growing, "at_max_intervals": run.at_max,
            "max_instances": run.max_instances}
    observed = None if run.last is None else float(run.last)
    if run.samples == 0:
        return Verdict(Outcome.NODATA, None, float(persistence), None, "No canary instance data yet.", info)
    if run.at_max >= persistence:
        return Verdict(Outcome.FAIL, float(run.at_max), float(persistence), observed,
                       f"Canary at max_instances ({run.max_instances}) for {run.at_max} intervals.", info)
    if run.growing >= persistence:
        return Verdict(Outcome.WARN, float(run.growing), float(persistence), observed,
                       f"Canary scaling up for {run.growing} intervals ({run.last} instances).", info)
    return Verdict(Outcome.PASS, float(run.growing), float(persistence), observed,
                   f"Canary instance count stable ({run.last}).", info)


def drift_verdict(*, what: str, cusum: Cusum, threshold: float, allowed: float) -> Verdict:
    info = {"sigma": cusum.sigma, "allowed_increase": allowed, "peak": cusum.peak, "samples": cusum.samples}
    mean = cusum.mean_diff
    if cusum.samples == 0:
        return Verdict(Outcome.NODATA, None, threshold, None,
                       f"No minute with both canary and baseline {what} yet.", info)
    if cusum.alarms(threshold):
        return Verdict(Outcome.FAIL, cusum.statistic, threshold, cusum.last_diff,
                       f"Canary {what} drifted above baseline by more than {pct(allowed)} "
                       f"(CUSUM {cusum.statistic:.3g} > {threshold:g}; last difference "
                       f"{pct(cusum.last_diff)}).", info)
    return Verdict(Outcome.PASS, cusum.statistic, threshold, mean,
                   f"No sustained canary {what} drift above baseline + {pct(allowed)} "
                   f"(CUSUM {cusum.statistic:.3g} <= {threshold:g}).", info)


def _exp(log_value: float) -> float:
    return math.exp(min(log_value, 700.0))
