"""Detection benchmark: `python -m benchmarks.detection [--quick] --out DIR [--runs N] [--workers K]`.

For every scenario of `simulations.scenario_model.catalogue()` it simulates many open-loop rollouts
(the runbook's 5%/25%/50% schedule, 40 minutes), runs each method on exactly the same minutes, and
writes DIR/results.json ({"rows": [...], "closed_loop_rows": [...]}, one row per scenario x method),
DIR/report.md and DIR/ttd.png. Methods: `oracle` (one-sided likelihood ratio with the true
parameters), `rollbackd` (this project's detectors under policies/default.yaml, through the real
engine via `simulations.replay.Replayer`, timed by its virtual clock), `kayenta`,
`kayenta-every-minute`, `flagger`, `naive` (see `simulations.baselines`); with --closed-loop also
`rollbackd-closed-loop` (`simulations.benchmark_loop`). Times to detect are censored medians.
Work is split into seeded chunks (numpy SeedSequence), so results do not depend on --workers.
The engine comes from the caller (`build_engine`, the bootstrap's factory): simulations/ never builds one.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
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
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Plan:
    runs_aa: int
    runs_regression: int
    rollbackd_aa: int
    rollbackd_regression: int
    closed_loop: int = 0  # closed-loop rollouts per scenario (`--closed-loop`)

    @staticmethod
    def make(quick: bool, runs: int | None, closed_loop: bool = False, rollbackd_runs: int | None = None,
             closed_loop_runs: int | None = None) -> "Plan":
        if runs is not None:
            plan = Plan(runs, runs, runs, runs, runs if closed_loop else 0)
        elif quick:
            plan = Plan(400, 200, 30, 30, 10 if closed_loop else 0)
        else:
            plan = Plan(10_000, 2_000, 10_000, 1_000, 200 if closed_loop else 0)
        if rollbackd_runs is not None:
            plan = Plan(plan.runs_aa, plan.runs_regression, rollbackd_runs, rollbackd_runs, plan.closed_loop)
        if closed_loop_runs is not None and closed_loop:
            plan = Plan(plan.runs_aa, plan.runs_regression, plan.rollbackd_aa, plan.rollbackd_regression,
                        closed_loop_runs)
        return plan

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


def warmup_minutes() -> int:
    """The policy's canary warm-up in whole minutes: the fair oracle leaves the canary's latency out
    for as long as the daemon does."""
    return int(math.ceil(float(_policy().evidence.canary_warmup) / 60.0))


_ENGINE_FACTORY: EngineFactory | None = None


def engine_factory() -> EngineFactory:
    """The engine factory `run` was given (also in forked workers)."""
    if _ENGINE_FACTORY is None:
        raise RuntimeError("simulations.benchmark.run was not given an engine factory (build_engine)")
    return _ENGINE_FACTORY


def rollbackd_run(s: Scenario, m: Any, run: int, *, build_engine: EngineFactory | None = None) -> tuple[float, float]:
    """(rollback minute, promote-to-100% minute) for one run, NaN when it did not happen, from the
    decisions of the real engine replaying the run's events through `simulations.replay.Replayer`.

    A decision is timed by the replay's virtual clock when the engine makes it: the moment the
    point that completed its minute became visible (or the late-data grace ran out), as the
    baselines are timed (`baselines._decision_time`: the minute's end plus the later arm's
    visibility delay). The decision record's own `time` is the end of the data minute it judged,
    which would leave the visibility delay out of our times and not theirs."""
    from simulations.replay import Replayer
    from simulations.scenarios import DEFAULT_START, records_from_arrays, timed_events

    timed = timed_events(s, records_from_arrays(s, m, run, DEFAULT_START), DEFAULT_START)
    replayer = Replayer(_policy(), build_engine=build_engine or engine_factory())
    state = [math.nan, math.nan, 0]  # rollback, promote, decisions seen

    def advance(to: datetime) -> None:  # minute by minute, so each decision gets its own time
        while replayer.clock is not None and replayer.clock.now() + MINUTE <= to and math.isnan(state[0]):
            replayer.advance(_next_boundary(replayer.clock.now()))
            _scan(replayer, state)
        if math.isnan(state[0]):
            replayer.advance(to)
            _scan(replayer, state)

    for at, event in timed:
        advance(at)
        if not math.isnan(state[0]):
            break
        replayer.feed(event, at)
        _scan(replayer, state)
        if not math.isnan(state[0]):
            break
    else:  # after the last point: ticks until the late-data grace has run out
        grace = timedelta(seconds=float(_policy().evidence.late_data_grace))
        advance(DEFAULT_START + timedelta(minutes=m.minutes) + grace + MINUTE)
    return state[0], state[1]


def _next_boundary(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0) + MINUTE


def _scan(replayer: Any, state: list) -> None:
    from simulations.scenarios import DEFAULT_START

    now = (replayer.clock.now() - DEFAULT_START).total_seconds() / 60.0
    for decision in replayer.decisions[state[2]:]:
        if decision.action == "rollback" and math.isnan(state[0]):
            state[0] = now
        if decision.action == "promote" and decision.canary_percent_after == 100 and math.isnan(state[1]):
            state[1] = now
    state[2] = len(replayer.decisions)


# --- one chunk of runs (runs in a worker) -------------------------------------------------------
def run_chunk(task: tuple[str, int, int, int], *, build_engine: EngineFactory | None = None) -> tuple[str, int, dict[str, Any]]:
    name, chunk, runs, rollbackd_runs = task
    s = catalogue()[name]
    index = list(catalogue()).index(name)
    rng = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(index, chunk)))
    m = simulate(s, rng, runs)
    out: dict[str, Any] = {
        "oracle": B.oracle(m, latency_warmup_min=warmup_minutes()),
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


def censored_quantile(ttd: np.ndarray, q: float) -> float | None:
    """Quantile of times to detect where an undetected run (NaN) counts as never (+inf): None when
    the quantile itself is "never" (fewer than q of the runs detected), or no runs."""
    if ttd.size == 0:
        return None
    value = float(np.quantile(np.where(np.isnan(ttd), np.inf, ttd), q, method="inverted_cdf"))
    return None if math.isinf(value) else round(value, 2)


def times_to_detect(s: Scenario, rollback_at: np.ndarray) -> np.ndarray:
    """Minutes from the onset to the rollback per run; NaN when not detected (a rollback before the
    onset is an early rollback, not a detection)."""
    onset = float(s.onset_min or 0.0)
    return np.where(~np.isnan(rollback_at) & (rollback_at > onset), rollback_at - onset, np.nan)


def summarise(s: Scenario, method: str, rollback_at: np.ndarray, harm: np.ndarray, promote_at: np.ndarray | None,
              oracle_median: float | None, analytic: float | None) -> dict[str, Any]:
    """One results row. Times to detect are censored: an undetected run counts as never, so a
    median is "never" (None) once half the runs are undetected; `ttd_median_detected_min` is the
    median over detected runs only, for reference. `oracle_ratio` compares censored medians."""
    runs = int(rollback_at.size)
    row: dict[str, Any] = {
        "scenario": s.name, "method": method, "runs": runs, "kind": s.kind, "rps": s.rps,
        "false_rollback_rate": None, "clopper_pearson_upper95": None, "detection_rate": None,
        "detection_ci95": None, "ttd_median_min": None, "ttd_p90_min": None, "ttd_median_detected_min": None,
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
    ttd = times_to_detect(s, rollback_at)
    detected = ~np.isnan(ttd)
    k = int(detected.sum())
    row["detection_rate"] = round(k / runs, 4)
    row["detection_ci95"] = [round(v, 4) for v in B.clopper_pearson(k, runs)]
    row["early_rollback_rate"] = round(float(np.mean(rolled & (rollback_at <= onset))), 4)
    row["ttd_median_min"] = censored_quantile(ttd, 0.5)
    row["ttd_p90_min"] = censored_quantile(ttd, 0.9)
    row["ttd_median_detected_min"] = _median(ttd[detected])
    if oracle_median and row["ttd_median_min"] is not None:
        row["oracle_ratio"] = round(row["ttd_median_min"] / oracle_median, 2)
    row["oracle_analytic_min"] = None if analytic is None else round(max(analytic - onset, 0.0), 2)
    row["harm_requests"] = round(float(np.mean(harm)), 1)
    return row


def run(out_dir: Path, quick: bool, runs: int | None, workers: int, names: list[str] | None = None,
        progress: bool = True, plan: Plan | None = None, *, build_engine: EngineFactory,
        commit: str | None = None) -> dict[str, Any]:
    from simulations.benchmark_loop import closed_loop_chunk, summarise_closed

    global _ENGINE_FACTORY
    # Forked pool workers inherit it: the engine factory is the caller's (the bootstrap's), and
    # simulations/ never builds an engine itself.
    _ENGINE_FACTORY = build_engine
    started = time.perf_counter()  # wall time of the benchmark itself; never used in a decision
    plan = plan or Plan.make(quick, runs)
    names = names or list(catalogue())
    tasks: list[tuple[Any, tuple]] = [(run_chunk, t) for t in tasks_for(names, plan)]
    for name in names if plan.closed_loop else []:
        for chunk in range(math.ceil(plan.closed_loop / CLOSED_CHUNK)):
            n = min(CLOSED_CHUNK, plan.closed_loop - chunk * CLOSED_CHUNK)
            tasks.append((closed_loop_chunk, (name, chunk, n, SEED)))
    results: list[tuple[str, int, dict[str, Any]]] = []
    closed: list[tuple[str, int, list[dict[str, float]]]] = []
    if workers <= 1:
        outputs = (_call(t) for t in tasks)
        for done, (fn, item) in enumerate(outputs, 1):
            (closed if fn is closed_loop_chunk else results).append(item)
            _progress(progress, done, len(tasks))
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for done, (fn, item) in enumerate(pool.imap_unordered(_call, tasks), 1):
                (closed if fn is closed_loop_chunk else results).append(item)
                _progress(progress, done, len(tasks))
    results.sort(key=lambda item: (names.index(item[0]), item[1]))
    closed.sort(key=lambda item: (names.index(item[0]), item[1]))
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
        oracle_median = None if s.is_aa else censored_quantile(times_to_detect(s, merged["oracle"][0]), 0.5)
        analytic = None if s.is_aa else B.oracle_analytic_minutes(s, latency_warmup_min=warmup_minutes())
        for method in METHODS:
            at, hm = merged[method]
            rows.append(summarise(s, method, at, hm, promote if method == "rollbackd" else None,
                                  oracle_median, analytic))
    closed_rows = [summarise_closed(catalogue()[name], [r for n, _, part in closed if n == name for r in part])
                   for name in names] if plan.closed_loop else []
    elapsed = time.perf_counter() - started
    meta = {"mode": "quick" if quick else "full", "runs_override": runs, "workers": workers, "seed": SEED,
            "plan": plan.__dict__, "elapsed_s": round(elapsed, 1), "rollbackd_path": "simulations.replay.Replayer",
            "policy": "policies/default.yaml", "horizon_min": 40, "commit": commit}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "closed_loop_rows": closed_rows},
                                                     indent=1) + "\n")
    from simulations.benchmark_report import write_plot, write_report

    write_report(out_dir / "report.md", rows, meta, closed_rows)
    write_plot(out_dir / "ttd.png", rows)
    return {"meta": meta, "rows": rows, "closed_loop_rows": closed_rows}


CLOSED_CHUNK = 25


def _call(task: tuple[Any, tuple]) -> tuple[Any, Any]:
    fn, args = task
    return fn, fn(args)


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
    parser.add_argument("--closed-loop", action="store_true",
                        help="also run rollbackd closed loop (its traffic decisions feed the simulator)")
    parser.add_argument("--rollbackd-runs", type=int, default=None,
                        help="open-loop rollbackd runs per scenario (overrides the plan)")
    parser.add_argument("--closed-loop-runs", type=int, default=None, help="closed-loop runs per scenario")
    parser.add_argument("--aa-runs", type=int, default=None,
                        help="A/A runs per scenario for every method, rollbackd included (overrides the plan)")
    parser.add_argument("--commit", default=None, help="the commit measured, recorded in results.json and report.md")
    args = parser.parse_args(argv)
    for flag in ("runs", "rollbackd_runs", "closed_loop_runs", "aa_runs"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    unknown = [n for n in (args.scenario or []) if n not in catalogue()]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; known: {', '.join(catalogue())}")
    plan = Plan.make(args.quick, args.runs, args.closed_loop, args.rollbackd_runs, args.closed_loop_runs)
    if args.aa_runs is not None:
        plan = Plan(args.aa_runs, plan.runs_regression, args.aa_runs, plan.rollbackd_regression, plan.closed_loop)
    result = run(Path(args.out), args.quick, args.runs, max(1, args.workers), args.scenario, plan=plan,
                 build_engine=build_engine, commit=args.commit)
    print(f"wrote {args.out}/results.json, report.md, ttd.png in {result['meta']['elapsed_s']} s")
    return 0
