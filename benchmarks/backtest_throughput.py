"""Backtest throughput: N one-hour, two-revision, minute-level recordings, replayed as
`rollbackd backtest DIR` does (one process pool over all cores).

    python -m benchmarks.backtest_throughput [--recordings 1000] [--workers N] [--keep DIR] [--cli]

Generates the recordings into a temporary directory first (not timed): an even mix of healthy
canaries (S0-aa-clean, promoted after 40 minutes, then 20 minutes at 100%) and 5xx regressions
(S4-errors-x5, rolled back), each with its own seed, on the runbook's 5/25/50/100 schedule for 60
minutes. Then times the backtest: in-process `run_backtest` (pool start-up included), and with
`--cli` also the whole `rollbackd backtest` command (interpreter start and imports included).
Target (issue 6): 1,000 recordings in under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from daemon.bootstrap import engine_factory
from daemon.core.codec import dumps_event
from policies import load_default_policy
from simulations.backtest import run_backtest
from simulations.scenario_model import get_scenario
from simulations.scenarios import generate, to_events

BACKTEST = engine_factory("backtest")
SCENARIOS = ("S0-aa-clean", "S4-errors-x5")


def make_corpus(directory: str, count: int) -> int:
    """Write `count` recordings; returns the total number of lines."""
    scenarios = [get_scenario(name) for name in SCENARIOS]
    lines = 0
    for index in range(count):
        scenario = scenarios[index % len(scenarios)]
        events = to_events(scenario, generate(scenario, np.random.default_rng(index), minutes=60))
        with open(os.path.join(directory, f"rec-{index:05d}.jsonl"), "w", encoding="utf-8") as handle:
            handle.writelines(dumps_event(event) + "\n" for event in events)
        lines += len(events)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    parser.add_argument("--keep", help="write the recordings here instead of a temporary directory")
    parser.add_argument("--cli", action="store_true", help="also time the `rollbackd backtest` command")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or tmp
        os.makedirs(directory, exist_ok=True)
        started = time.perf_counter()
        lines = make_corpus(directory, args.recordings)
        took = time.perf_counter() - started
        print(f"generated {args.recordings} recordings ({lines} lines) in {took:.1f} s")
        policy = load_default_policy()
        workers = args.workers or os.cpu_count() or 1
        started = time.perf_counter()
        report = run_backtest([directory], policy, workers=workers, build_engine=BACKTEST)
        elapsed = time.perf_counter() - started
        kinds = {}
        for row in report.rows:
            kinds[row.outcome] = kinds.get(row.outcome, 0) + 1
        print(f"backtest (in process, {workers} workers): {args.recordings} recordings in {elapsed:.1f} s "
              f"= {args.recordings / elapsed:.0f} recordings/s, "
              f"{elapsed / args.recordings * 1000 * workers:.1f} ms per recording per core; "
              f"outcomes {kinds} (target: 1,000 in < 60 s on 2 cores)")
        if args.cli:
            command = [sys.executable, "-m", "daemon.cli", "backtest", "--json", directory]
            if args.workers:
                command += ["--workers", str(args.workers)]
            started = time.perf_counter()
            subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
            print(f"`rollbackd backtest --json DIR` end to end: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
