"""Engine time to replay one 60-minute, two-revision, minute-level recording.

    python -m benchmarks.replay_engine [--runs 50]

Parses the recording once (intake is timed separately), then replays the parsed events through the
Engine and the decision core with the default policy, as `rollbackd replay` does. Prints the median
and p90 engine time per recording. Target (issue 2): under 100 ms.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from daemon.bootstrap import engine_factory
from daemon.core.codec import dumps_event
from daemon.core.intake import parse_line
from policies import load_default_policy
from simulations.replay import FAR_FUTURE, replay_events
from simulations.scenario_model import get_scenario
from simulations.scenarios import generate, to_events

REPLAY = engine_factory("replay")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--scenario", default="S0-aa-clean")
    args = parser.parse_args()
    policy = load_default_policy()
    scenario = get_scenario(args.scenario)
    events = to_events(scenario, generate(scenario, np.random.default_rng(1), minutes=60))
    lines = [dumps_event(e) for e in events]
    parse_times, engine_times = [], []
    for run in range(args.runs):
        started = time.perf_counter()
        parsed = [ev for line in lines for ev in parse_line(line, now=FAR_FUTURE)]
        parse_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = replay_events(parsed, policy, build_engine=REPLAY)
        engine_times.append(time.perf_counter() - started)
    engine_ms = sorted(t * 1000 for t in engine_times)
    parse_ms = sorted(t * 1000 for t in parse_times)
    print(f"recording: {args.scenario}, {len(lines)} lines (1 deploy + 2 revisions x 60 minutes), "
          f"{len(result.decisions)} decisions")
    print(f"engine time per recording: median {statistics.median(engine_ms):.1f} ms, "
          f"p90 {engine_ms[int(0.9 * (len(engine_ms) - 1))]:.1f} ms over {args.runs} runs (target < 100 ms)")
    print(f"intake (parse) time per recording: median {statistics.median(parse_ms):.1f} ms")


if __name__ == "__main__":
    main()
