"""Closed-loop benchmark: the engine's own traffic decisions feed the simulator.

The open-loop benchmark (`simulations.benchmark`) draws every run on the runbook schedule, so it
cannot show what a hold does: a canary held at 5% instead of moving to 25% gathers about 5x less
evidence per minute, and is also served to 5x fewer users. Here each minute is drawn
(`scenario_sim.MinuteSim`, the same model) at the canary share the engine has set on the simulated
Cloud Run, points are delivered when they become visible, and the engine runs through the same
`Replayer` (virtual clock, minute ticks) as `rollbackd replay`. A run ends at the rollback, at the
promotion to 100%, or after `horizon_min` minutes.

Per run: time to detect (from the regression's onset, censored), exposure (canary share x minutes
served until the run ended, in "full-traffic minutes"), canary 5xx served, and expected excess bad
canary requests (5xx or slower than 500 ms beyond the baseline's rates, as `baselines.harm`).
Called by `simulations.benchmark --closed-loop`.
"""
from __future__ import annotations

import heapq
import math
from datetime import timedelta
from typing import Any

import numpy as np

from simulations import baselines as B
from simulations.scenario_model import Scenario
from simulations.scenario_sim import Minutes, MinuteSim

MINUTE = timedelta(minutes=1)
METHOD = "rollbackd-closed-loop"


def closed_loop_run(s: Scenario, policy: Any, rng: np.random.Generator, horizon_min: int = 60, *, build_engine: Any = None) -> dict[str, float]:
    """One closed-loop rollout; times in minutes after the deploy (NaN: did not happen)."""
    from daemon.core.events import Deploy
    from simulations.replay import Replayer
    from simulations.scenarios import DEFAULT_START, _metrics

    start = DEFAULT_START
    from simulations.benchmark import engine_factory

    replayer = Replayer(policy, build_engine=build_engine or engine_factory())
    replayer.cloud.deploy(s.service, s.canary_revision, baseline=s.baseline_revision)
    replayer.feed(Deploy(time=start, service=s.service, revision=s.canary_revision, baseline=s.baseline_revision,
                         canary_percent=0, principal="ci@example.com"), start)
    sim = MinuteSim(s, 1, rng)
    edges = tuple(float(x) for x in s.buckets.edges)
    slow = B.slow_mask(s.buckets.edges)
    queue: list[tuple[Any, int, Any]] = []
    order = 0
    out = {"rollback_at": math.nan, "promoted_at": math.nan, "exposure_min": 0.0, "canary_5xx": 0.0,
           "excess_bad": 0.0, "minutes": 0.0}
    seen = 0

    def scan() -> bool:
        nonlocal seen
        now = (replayer.clock.now() - start).total_seconds() / 60.0
        for decision in replayer.decisions[seen:]:
            if decision.action == "rollback" and math.isnan(out["rollback_at"]):
                out["rollback_at"] = now
            if decision.action == "promote" and decision.canary_percent_after == 100:
                out["promoted_at"] = now
        seen = len(replayer.decisions)
        return not (math.isnan(out["rollback_at"]) and math.isnan(out["promoted_at"]))

    for t in range(1, horizon_min + 1):
        end = start + t * MINUTE
        percent = replayer.cloud.traffic_of(s.service).get(s.canary_revision, 0)
        m: Minutes = Minutes.stack([sim.step(t, percent / 100.0, rng)])
        out["minutes"] = t
        out["exposure_min"] += percent / 100.0
        out["canary_5xx"] += float(m.e_c[0, 0])
        excess = max(float(m.p_c[0, 0] - m.p_b[0, 0]), 0.0) + max(
            float(m.probs_c[0, 0][slow].sum() - m.probs_b[0, 0][slow].sum()), 0.0)
        out["excess_bad"] += float(m.n_c[0, 0]) * excess
        for arm, delay in (("baseline", m.delay_b[0, 0]), ("canary", m.delay_c[0, 0])):
            metrics = _metrics(s, m, 0, 0, arm, end, edges)
            if metrics is not None:
                heapq.heappush(queue, (end + int(delay) * MINUTE, order, metrics))
                order += 1
        # Deliver what is visible by the end of this minute, ticking minute by minute.
        replayer.advance(end)
        if scan():
            break
        while queue and queue[0][0] <= end:
            at, _, metrics = heapq.heappop(queue)
            replayer.feed(metrics, at)
        if scan():
            break
    return out


def summarise_closed(s: Scenario, results: list[dict[str, float]]) -> dict[str, Any]:
    from simulations.benchmark import censored_quantile, times_to_detect

    rollback = np.array([r["rollback_at"] for r in results], dtype=float)
    runs = len(results)
    row: dict[str, Any] = {
        "scenario": s.name, "method": METHOD, "runs": runs, "kind": s.kind, "rps": s.rps,
        "false_rollback_rate": None, "clopper_pearson_upper95": None, "detection_rate": None,
        "ttd_median_min": None, "ttd_p90_min": None,
        "exposure_min": round(float(np.mean([r["exposure_min"] for r in results])), 2) if runs else None,
        "canary_5xx_served": round(float(np.mean([r["canary_5xx"] for r in results])), 1) if runs else None,
        "harm_requests": round(float(np.mean([r["excess_bad"] for r in results])), 1) if runs else None,
        "promoted_rate": round(float(np.mean([not math.isnan(r["promoted_at"]) for r in results])), 4)
        if runs else None,
    }
    if runs == 0:
        return row
    if s.is_aa:
        k = int((~np.isnan(rollback)).sum())
        row["false_rollback_rate"] = round(k / runs, 5)
        row["clopper_pearson_upper95"] = round(B.clopper_pearson(k, runs)[1], 5)
        return row
    ttd = times_to_detect(s, rollback)
    row["detection_rate"] = round(float(np.mean(~np.isnan(ttd))), 4)
    row["ttd_median_min"] = censored_quantile(ttd, 0.5)
    row["ttd_p90_min"] = censored_quantile(ttd, 0.9)
    return row


def closed_loop_chunk(task: tuple[str, int, int, int]) -> tuple[str, int, list[dict[str, float]]]:
    """(scenario, chunk, runs, seed) -> per-run results; seeded per chunk like the open loop."""
    from simulations.benchmark import _policy
    from simulations.scenario_model import catalogue

    name, chunk, runs, seed = task
    index = list(catalogue()).index(name)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(10_000 + index, chunk)))
    s = catalogue()[name]
    return name, chunk, [closed_loop_run(s, _policy(), rng) for _ in range(runs)]


def closed_table(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any, pct: bool = False) -> str:
        if v is None:
            return "–"
        return f"{100 * v:.2f}%" if pct else f"{v:g}"

    lines = ["| scenario | runs | false rollbacks (CP upper 95%) | detected | TTD median | TTD p90 "
             "| exposure (share × min) | canary 5xx served | excess bad requests | promoted |",
             "|" + "---|" * 10]
    for r in rows:
        frr = "–" if r["false_rollback_rate"] is None else (
            f"{fmt(r['false_rollback_rate'], True)} ({fmt(r['clopper_pearson_upper95'], True)})")
        ttd = "never" if r["detection_rate"] is not None and r["ttd_median_min"] is None else fmt(r["ttd_median_min"])
        p90 = "never" if r["detection_rate"] is not None and r["ttd_p90_min"] is None else fmt(r["ttd_p90_min"])
        lines.append(f"| {r['scenario']} | {r['runs']} | {frr} | {fmt(r['detection_rate'], True)} | {ttd} | {p90} "
                     f"| {fmt(r['exposure_min'])} | {fmt(r['canary_5xx_served'])} | {fmt(r['harm_requests'])} "
                     f"| {fmt(r['promoted_rate'], True)} |")
    return "\n".join(lines)
