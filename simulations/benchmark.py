"""Detection benchmark: `python -m benchmarks.detection [--quick] --out DIR [--runs N] [--workers K]`.

For every scenario of `simulations.scenario_model.catalogue()` it simulates many open-loop rollouts
(the runbook's 5%/25%/50% schedule, 40 minutes), runs each method on exactly the same minutes, and
writes DIR/results.json ({"rows": [...]}, one row per scenario x method), DIR/report.md and
DIR/ttd.png. Methods: `oracle` (SPRT with the true parameters), `rollbackd` (this project's
detectors under policies/default.yaml, through the real engine via `simulations.replay`),
`kayenta`, `kayenta-every-minute`, `flagger`, `naive` (see `simulations.baselines`).
Work is split into seeded chunks (numpy SeedSequence), so results do not depend on --workers.
The engine comes from the caller (`build_engine`, the bootstrap's factory): simulations/ never builds one.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon.ports import EngineFactory
from simulations import baselines as B
from simulations.scenario_model import Scenario, catalogue
from simulations.scenario_sim import simulate

METHODS = ("oracle", "rollbackd", "kayenta", "kayenta-every-minute", "flagger", "naive")
CHUNK = 1000
SEED = 20250303


@dataclass(frozen=True)
class Plan:
    runs_aa: int
    runs_regression: int
    rollbackd_aa: int
    rollbackd_regression: int

    @staticmethod
    def make(quick: bool, runs: int | None) -> "Plan":
        if runs is not None:
            return Plan(runs, runs, runs, runs)
        if quick:
            return Plan(400, 200, 30, 30)
        return Plan(10_000, 2_000, 10_000, 1_000)

    def runs_for(self, s: Scenario) -> tuple[int, int]:
        return (self.runs_aa, self.rollbackd_aa) if s.is_aa else (self.runs_regression, self.rollbackd_regression)


# --- the rollbackd method -----------------------------------------------------------------------
_POLICY: Any = None


def _policy() -> Any:
    global _POLICY
    if _POLICY is None:
        from policies.loader import load_policy

        _POLICY = load_policy(Path(__file__).resolve().parent.parent / "policies" / "default.yaml")
    return _POLICY


def rollbackd_run(s: Scenario, m: Any, run: int, *, build_engine: EngineFactory) -> tuple[float, float]:
    """(rollback minute, promote-to-100% minute) for one run, NaN when it did not happen, from the
    decisions of the real engine replaying the run's events (`simulations.replay.replay_events`)."""
    from simulations.replay import replay_events
    from simulations.scenarios import DEFAULT_START, records_from_arrays, to_events

    events = to_events(s, records_from_arrays(s, m, run, DEFAULT_START), DEFAULT_START)
    result = replay_events(events, _policy(), build_engine=build_engine)
    rollback = promote = math.nan
    for decision in result.decisions:
        minutes = (decision.time - DEFAULT_START).total_seconds() / 60.0
        if decision.action == "rollback" and math.isnan(rollback):
            rollback = minutes
        if decision.action == "promote" and decision.canary_percent_after == 100 and math.isnan(promote):
            promote = minutes
    return rollback, promote


# --- one chunk of runs (runs in a worker) -------------------------------------------------------
def run_chunk(task: tuple[str, int, int, int], *, build_engine: EngineFactory) -> tuple[str, int, dict[str, Any]]:
    name, chunk, runs, rollbackd_runs = task
    s = catalogue()[name]
    index = list(catalogue()).index(name)
    rng = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(index, chunk)))
    m = simulate(s, rng, runs)
    out: dict[str, Any] = {
        "oracle": B.oracle(m),
        "kayenta": B.kayenta_per_phase(m, s, rng),
        "kayenta-every-minute": B.kayenta_every_minute(m, s, rng),
        "flagger": B.flagger(m, s),
        "naive": B.naive(m, s),
    }
    rb = np.full(rollbackd_runs, np.nan)
    promote = np.full(rollbackd_runs, np.nan)
    for run in range(rollbackd_runs):
        rb[run], promote[run] = rollbackd_run(s, m, run, build_engine=build_engine)
    harm = {method: B.harm(m, s, value) for method, value in out.items()}
    harm["rollbackd"] = B.harm(m, s, np.concatenate([rb, np.full(runs - rollbackd_runs, np.nan)]))[:rollbackd_runs]
    out["rollbackd"] = rb
    return name, chunk, {"rollback_at": out, "harm": harm, "promote_at": promote}


def tasks_for(names: list[str], plan: Plan) -> list[tuple[str, int, int, int]]:
    tasks = []
    for name in names:
        s = catalogue()[name]
        runs, rb_runs = plan.runs_for(s)
        chunks = max(1, math.ceil(max(runs, rb_runs) / CHUNK))
        for chunk in range(chunks):
            n = min(CHUNK, max(runs, rb_runs) - chunk * CHUNK)
            rb = max(0, min(CHUNK, rb_runs - chunk * CHUNK))
            tasks.append((name, chunk, n, min(rb, n)))
    return tasks


# --- summarising ------------------------------------------------------------------------------
def _median(values: np.ndarray) -> float | None:
    return None if values.size == 0 else round(float(np.median(values)), 2)


def _p90(values: np.ndarray) -> float | None:
    return None if values.size == 0 else round(float(np.quantile(values, 0.9)), 2)


def summarise(s: Scenario, method: str, rollback_at: np.ndarray, harm: np.ndarray, promote_at: np.ndarray | None,
              oracle_median: float | None, analytic: float | None) -> dict[str, Any]:
    runs = int(rollback_at.size)
    row: dict[str, Any] = {
        "scenario": s.name, "method": method, "runs": runs, "kind": s.kind, "rps": s.rps,
        "false_rollback_rate": None, "clopper_pearson_upper95": None, "detection_rate": None,
        "detection_ci95": None, "ttd_median_min": None, "ttd_p90_min": None, "ttd_median_censored_min": None,
        "oracle_ratio": None, "oracle_analytic_min": None, "harm_requests": None, "early_rollback_rate": None,
        "promoted_rate": None, "time_to_promote_median_min": None,
    }
    if runs == 0:
        return row
    if promote_at is not None and promote_at.size:
        row["promoted_rate"] = round(float(np.mean(~np.isnan(promote_at))), 4)
        row["time_to_promote_median_min"] = _median(promote_at[~np.isnan(promote_at)])
    rolled = ~np.isnan(rollback_at)
    if s.is_aa:
        if method == "oracle":
            return row  # the oracle needs an alternative; A/A has none
        k = int(rolled.sum())
        row["false_rollback_rate"] = round(k / runs, 5)
        row["clopper_pearson_upper95"] = round(B.clopper_pearson(k, runs)[1], 5)
        return row
    onset = float(s.onset_min or 0.0)
    detected = rolled & (rollback_at > onset)
    ttd = rollback_at[detected] - onset
    k = int(detected.sum())
    row["detection_rate"] = round(k / runs, 4)
    row["detection_ci95"] = [round(v, 4) for v in B.clopper_pearson(k, runs)]
    row["early_rollback_rate"] = round(float(np.mean(rolled & (rollback_at <= onset))), 4)
    row["ttd_median_min"] = _median(ttd)
    row["ttd_p90_min"] = _p90(ttd)
    censored = np.where(detected, rollback_at - onset, np.inf)
    median_censored = float(np.median(censored))
    row["ttd_median_censored_min"] = None if math.isinf(median_censored) else round(median_censored, 2)
    if oracle_median and row["ttd_median_min"] is not None:
        row["oracle_ratio"] = round(row["ttd_median_min"] / oracle_median, 2)
    row["oracle_analytic_min"] = None if analytic is None else round(max(analytic - onset, 0.0), 2)
    row["harm_requests"] = round(float(np.mean(harm)), 1)
    return row


def run(out_dir: Path, quick: bool, runs: int | None, workers: int, names: list[str] | None = None,
        progress: bool = True, *, build_engine: EngineFactory) -> dict[str, Any]:
    started = time.perf_counter()  # wall time of the benchmark itself; never used in a decision
    plan = Plan.make(quick, runs)
    names = names or list(catalogue())
    tasks = tasks_for(names, plan)
    results: list[tuple[str, int, dict[str, Any]]] = []
    chunk_runner = functools.partial(run_chunk, build_engine=build_engine)  # picklable for the pool
    if workers <= 1:
        for done, task in enumerate(tasks, 1):
            results.append(chunk_runner(task))
            _progress(progress, done, len(tasks))
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for done, item in enumerate(pool.imap_unordered(chunk_runner, tasks), 1):
                results.append(item)
                _progress(progress, done, len(tasks))
    results.sort(key=lambda item: (names.index(item[0]), item[1]))
    rows = []
    for name in names:
        s = catalogue()[name]
        parts = [r for n, _, r in results if n == name]
        runs_vec, runs_rb = plan.runs_for(s)
        merged = {}
        for method in METHODS:
            at = np.concatenate([p["rollback_at"][method] for p in parts])
            hm = np.concatenate([p["harm"][method] for p in parts])
            limit = runs_rb if method == "rollbackd" else runs_vec
            merged[method] = (at[:limit], hm[:limit])
        promote = np.concatenate([p["promote_at"] for p in parts])[:runs_rb]
        oracle_at = merged["oracle"][0]
        onset = float(s.onset_min or 0.0)
        oracle_ttd = oracle_at[~np.isnan(oracle_at) & (oracle_at > onset)] - onset
        oracle_median = None if s.is_aa or oracle_ttd.size == 0 else float(np.median(oracle_ttd))
        analytic = None if s.is_aa else B.oracle_analytic_minutes(s)
        for method in METHODS:
            at, hm = merged[method]
            rows.append(summarise(s, method, at, hm, promote if method == "rollbackd" else None,
                                  oracle_median, analytic))
    elapsed = time.perf_counter() - started
    meta = {"mode": "quick" if quick else "full", "runs_override": runs, "workers": workers, "seed": SEED,
            "plan": plan.__dict__, "elapsed_s": round(elapsed, 1), "rollbackd_path": "simulations.replay.replay_events",
            "policy": "policies/default.yaml", "horizon_min": 40}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    from simulations.benchmark_report import write_plot, write_report

    write_report(out_dir / "report.md", rows, meta)
    write_plot(out_dir / "ttd.png", rows)
    return {"meta": meta, "rows": rows}


def _progress(enabled: bool, done: int, total: int) -> None:
    if enabled and sys.stderr.isatty():
        sys.stderr.write(f"\r  {done}/{total} chunks")
        sys.stderr.flush()
        if done == total:
            sys.stderr.write("\n")


def main(argv: list[str] | None = None, *, build_engine: EngineFactory) -> int:
    """The command line of `python -m benchmarks.detection`, which passes the bootstrap's engine factory."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.detection", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few runs per scenario (under 3 minutes on 2 cores)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario and method (overrides the plan)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--scenario", action="append", default=None, help="only these scenarios (repeatable)")
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    unknown = [n for n in (args.scenario or []) if n not in catalogue()]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; known: {', '.join(catalogue())}")
    result = run(Path(args.out), args.quick, args.runs, max(1, args.workers), args.scenario,
                 build_engine=build_engine)
    print(f"wrote {args.out}/results.json, report.md, ttd.png in {result['meta']['elapsed_s']} s")
    return 0
