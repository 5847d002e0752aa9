"""The curated corpus in simulations/recordings/: every file regenerated, deterministically, from seeds.

    python -m simulations.corpus [--out DIR] [--check]

Each case is an open-loop simulation (`simulations.scenarios.generate`) of catalogue scenarios
(`simulations.scenario_model.catalogue`): the canary's traffic follows the scenario's `schedule`,
written to match what happened in the story (the runbook's 5/25/50/100 by default; held at 5%
through a freeze or a pause; 0% after an operator's abort or a human's traffic change). The data
therefore never depend on the core or the policy: tuning either cannot change these bytes, only
the decisions a replay makes from them (which is what a backtest is for). Regression cases keep
the canary serving on the runbook schedule, i.e. the data a policy that never rolled back would
have seen. Some cases add raw Google-format lines (a Cloud Run audit entry as the deploy, a
Monitoring incident, a human's traffic change) or operator commands, and some transform another
case's lines (duplicates and reordering, garbage). `expected.json`
holds each case's *intended* outcome per service, written from the table below, never from a
replay: `tests/scenarios/test_corpus.py` and `rollbackd backtest simulations/recordings` check that
replays reach them. `--check` regenerates into a temporary directory and compares bytes.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Callable

import numpy as np

from simulations.corpus_lines import (audit_deploy_v1, audit_traffic_v1, command, garbage_lines, incident,
                                      jitter_and_duplicate)
from simulations.scenario_model import Profile, Scenario, catalogue
from daemon.core.codec import dumps_event
from daemon.core.events import Deploy
from simulations.scenarios import DEFAULT_START, generate
from simulations.simulate import Rollout

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recordings")
MINUTE = timedelta(minutes=1)
Lines = list[str]


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    expected: dict[str, str]
    build: Callable[[], Lines]
    seed: int = 0


def _sim(rollouts: list[Rollout], seed: int, minutes: int = 60,
         extra: list[tuple[datetime, str]] | None = None) -> Lines:
    """Open loop: each rollout's minutes follow its scenario's `schedule` (not any engine's
    decisions), so the recordings do not change when the core or the policy is tuned."""
    rng = np.random.default_rng(seed)
    origin = min(r.start for r in rollouts)
    timed: list[tuple[datetime, int, int, str]] = []
    order = 0
    for rollout in rollouts:
        s = rollout.scenario
        deploy = rollout.deploy_line or dumps_event(Deploy(
            time=rollout.start, service=s.service, revision=s.canary_revision, baseline=s.baseline_revision,
            canary_percent=0, principal="ci@example.com", project=rollout.project, location=rollout.location))
        timed.append((rollout.start, 0, order, deploy))
        order += 1
        length = minutes - int((rollout.start - origin).total_seconds() // 60)
        for record in generate(s, rng, length, rollout.start):
            for visible, metrics in ((record.baseline_visible_at, record.baseline),
                                     (record.canary_visible_at, record.canary)):
                if metrics is None:
                    continue
                if rollout.project or rollout.location:
                    metrics = replace(metrics, project=rollout.project, location=rollout.location)
                timed.append((visible, 2, order, dumps_event(metrics)))
                order += 1
    for at, line in extra or ():
        timed.append((at, 1, order, line))
        order += 1
    timed.sort(key=lambda item: item[:3])
    return [line for *_, line in timed]


# The catalogue's baseline 5xx rate (0.1%) sits exactly on the runbook's "Error rate under 0.1%"
# line, where an absolute level test rightly cannot show "under" once there is enough traffic; a
# healthy service in this corpus is under the line. Ratios (x5, x20...) are relative to it.
HEALTHY_P0 = 0.0005


def _scenario(name: str, **changes) -> Scenario:
    return catalogue()[name].with_(**{"p0": HEALTHY_P0, **changes})


def _single(name: str, seed: int, minutes: int = 60, start: datetime = DEFAULT_START,
            **changes) -> Callable[[], Lines]:
    return lambda: _sim([Rollout(_scenario(name, **changes), start)], seed, minutes)


def _at(minutes: float, start: datetime = DEFAULT_START) -> datetime:
    return start + timedelta(minutes=minutes)


def _with_extra(name: str, seed: int, extra: Callable[[Scenario], list[tuple[datetime, str]]],
                **changes) -> Callable[[], Lines]:
    def build() -> Lines:
        scenario = _scenario(name, **changes)
        return _sim([Rollout(scenario)], seed, extra=extra(scenario))
    return build


# Friday 2025-03-07 16:50 in America/Chicago (CST, UTC-6): ten minutes before the runbook's
# "not Friday 5pm" freeze starts, so phase 1 runs and its promotion is then held.
FRIDAY_EVENING = datetime(2025, 3, 7, 22, 50, tzinfo=timezone.utc)
MEMORY_CREEP = Profile.onset(0.0, 0.58, at=5.0, ramp_min=30.0)  # 40% -> 98% over 30 minutes
MEMORY_NEAR_LIMIT = Profile.onset(0.0, 0.13, at=5.0, ramp_min=25.0)  # 84% -> 97%: within the drift allowance


def _audit_export() -> Lines:
    scenario = _scenario("S0-aa-clean", service="checkout", baseline_revision="checkout-00041-mib",
                         canary_revision="checkout-00042-vux")
    deploy = audit_deploy_v1(DEFAULT_START, project="shop-prod", location="europe-west1", service="checkout",
                             baseline=scenario.baseline_revision, canary=scenario.canary_revision)
    return _sim([Rollout(scenario, DEFAULT_START, deploy_line=deploy, project="shop-prod",
                         location="europe-west1")], 31)


def _multi_service() -> Lines:
    def named(base: str, service: str) -> Scenario:
        return _scenario(base, service=service, baseline_revision=f"{service}-00007-base",
                         canary_revision=f"{service}-00008-cnry")
    return _sim([Rollout(named("S0-aa-clean", "checkout"), DEFAULT_START),
                 Rollout(named("S4-errors-x5", "payments"), _at(3)),
                 Rollout(named("S7-latency-x1.5", "search"), _at(7))], 41)


def _command(minute: float, action: str, by: str) -> Callable[[Scenario], list[tuple[datetime, str]]]:
    return lambda s: [(_at(minute), command(_at(minute), s, action, by))]


def _derived(source: Callable[[], Lines], transform: Callable[[Lines, np.random.Generator], Lines],
             seed: int) -> Callable[[], Lines]:
    return lambda: transform(source(), np.random.default_rng(seed))


# Regression data never reach 100%: a canary that keeps its evidence flowing against the baseline
# (as it does while a policy holds it at 50%), so a slow regression can still be judged late on.
HELD_AT_50 = ((5, 10), (25, 15), (50, None))


def _regression(name: str, seed: int, **changes) -> Callable[[], Lines]:
    return _single(name, seed, **{"schedule": HELD_AT_50, **changes})


_HEALTHY = _single("S0-aa-clean", 1)
_ERRORS = _regression("S4-errors-x5", 12)

CASES: tuple[Case, ...] = (
    # --- issue 2 §8: the runbook's scenarios -----------------------------------------------------
    Case("healthy-promoted", "healthy canary (A/A, 100 rps) walked 5% → 25% → 50% → 100%",
         {"checkout": "promoted"}, _HEALTHY),
    Case("errors-5xx-spike", "canary 5xx jumps 20-fold (0.05% → 1%) at minute 15 (phase 2)",
         {"checkout": "rolled_back"},
         _single("S9-onset-mid", 2, error_ratio=Profile.onset(1.0, 20.0, 15.0), onset_min=15.0)),
    Case("latency-p99-regression", "1.05% of canary requests at ~800 ms: p99 400 → 600 ms",
         {"checkout": "rolled_back"}, _single("S6-latency-tail", 3)),
    Case("memory-creep", "canary memory creeps from 40% to 98% over 30 minutes (caught by the drift check)",
         {"checkout": "rolled_back"},
         _single("S0-aa-clean", 4, kind="memory", canary_memory_delta=MEMORY_CREEP)),
    Case("memory-past-95",
         "baseline at 84% memory; the canary creeps to 97%: held past 85%, rolled back past 95%",
         {"checkout": "rolled_back"},
         _single("S0-aa-clean", 9, kind="memory", memory_base=0.84, canary_memory_delta=MEMORY_NEAR_LIMIT)),
    Case("alert-phase3", "healthy canary, but a Cloud Monitoring incident (schema 1.2) opens at minute 30",
         {"checkout": "rolled_back"},
         _with_extra("S0-aa-clean", 5,
                     lambda s: [(_at(30), incident(_at(30), s, "0.corpus-alert-1", "open"))],
                     schedule=((5, 10), (25, 15), (50, 5), (0, None)))),
    Case("low-traffic",
         "healthy canary at 0.2 rps: never enough requests to pass phase 1; held, not rolled back",
         {"checkout": "in_progress"}, _single("S0-aa-clean-0.2rps", 6, schedule=((5, None),))),
    Case("metrics-gap", "healthy canary; no metrics at all for 12 minutes from minute 14",
         {"checkout": "promoted"}, _single("S0-aa-clean", 7, minutes=75, gap_start_min=14, gap_minutes=12,
                 schedule=((5, 10), (25, 17), (50, 15), (100, None)))),  # the gap holds phase 2 two minutes
    Case("freeze-friday", "deployed Friday 16:50 Chicago: phase 1 runs, then the weekend freeze holds it",
         {"checkout": "in_progress"}, _single("S0-aa-clean", 8, start=FRIDAY_EVENING, schedule=((5, None),))),
    # --- the benchmark's A/A cases ---------------------------------------------------------------
    Case("aa-diurnal", "A/A with a 2-hour traffic cycle and error nuisance", {"checkout": "promoted"},
         _single("S1-aa-diurnal", 21)),
    Case("aa-overdispersed", "A/A with overdispersion and error bursts", {"checkout": "promoted"},
         _single("S2-aa-overdispersed", 22)),
    Case("aa-coldstart", "A/A, canary latency x2 for its first 3 minutes", {"checkout": "promoted"},
         _single("S3-aa-coldstart", 23)),
    Case("aa-canary-better", "canary halves errors and is 10% faster", {"checkout": "promoted"},
         _single("S12-aa-canary-better", 24)),
    Case("aa-harmless", "canary errors x1.05, inside the allowed ratio", {"checkout": "promoted"},
         _single("S13-aa-harmless", 25)),
    Case("aa-1000rps", "A/A at 1000 rps",
         {"checkout": "promoted"}, _single("S0-aa-clean-1000rps", 26)),
    # --- the benchmark's regression cases --------------------------------------------------------
    Case("errors-x5", "canary 5xx x5 (0.05% → 0.25%) from the start", {"checkout": "rolled_back"}, _ERRORS),
    Case("errors-x20", "canary 5xx x20 (0.05% → 1%) from the start", {"checkout": "rolled_back"},
         _regression("S4-errors-x20", 13)),
    Case("outage", "canary 5xx 50%", {"checkout": "rolled_back"}, _regression("S5-outage", 14)),
    Case("latency-x1.5", "whole canary latency distribution x1.5", {"checkout": "rolled_back"},
         _regression("S7-latency-x1.5", 15)),
    Case("errors-drift", "canary error ratio ramps 1 → 5 over an hour", {"checkout": "rolled_back"},
         _regression("S8-drift-errors", 16)),
    Case("errors-onset-mid", "5xx x5 from minute 20", {"checkout": "rolled_back"},
         _regression("S9-onset-mid", 17)),
    Case("errors-late-data", "5xx x5, metrics visible 1-4 minutes late", {"checkout": "rolled_back"},
         _regression("S11-late-errors", 18)),
    # --- multi-service, delivery quirks, real formats, operators -----------------------------------
    Case("multi-service", "three services interleaved: healthy, 5xx x5, latency x1.5",
         {"checkout": "promoted", "payments": "rolled_back", "search": "rolled_back"}, _multi_service),
    Case("healthy-dup-reordered",
         "healthy-promoted with 25% of lines duplicated and lines reordered within 2 min",
         {"checkout": "promoted"}, _derived(_HEALTHY, jitter_and_duplicate, 51)),
    Case("errors-dup-reordered", "errors-x5 with 25% of lines duplicated and lines reordered within 2 min",
         {"checkout": "rolled_back"}, _derived(_ERRORS, jitter_and_duplicate, 52)),
    Case("errors-garbage", "errors-x5 laced with malformed lines (each rejected with its line number)",
         {"checkout": "rolled_back"}, _derived(_ERRORS, garbage_lines, 53)),
    Case("audit-export", "a real-format export: v1 ReplaceService audit entry as the deploy, metrics with "
         "project and location", {"checkout": "promoted"}, _audit_export),
    Case("manual-traffic-change", "a human runs `gcloud run services update-traffic` at minute 18",
         {"checkout": "halted"},
         _with_extra("S0-aa-clean", 61, lambda s: [(_at(18), audit_traffic_v1(_at(18), s))],
                     schedule=((5, 10), (25, 8), (0, None)))),
    Case("operator-abort", "an on-call SRE aborts at minute 20", {"checkout": "rolled_back"},
         _with_extra("S0-aa-clean", 62, _command(20, "abort", "sre@olympuscloud.ai"),
                     schedule=((5, 10), (25, 10), (0, None)))),
    Case("operator-pause", "an on-call SRE pauses at minute 12 and never resumes",
         {"checkout": "in_progress"},
         _with_extra("S0-aa-clean", 63, _command(12, "pause", "sre@olympuscloud.ai"),
                     schedule=((5, 10), (25, None)))),
    Case("refused-abort",
         "an abort from an unauthorised principal is refused; the healthy canary is promoted",
         {"checkout": "promoted"},
         _with_extra("S0-aa-clean", 64, _command(12, "abort", "intern@example.com"))),
)


def write_corpus(out: str) -> list[str]:
    os.makedirs(out, exist_ok=True)
    written = []
    for case in CASES:
        path = os.path.join(out, f"{case.name}.jsonl")
        lines = case.build()
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"# {case.name}: {case.description}\n")
            handle.write("# generated by `python -m simulations.corpus`; do not edit by hand\n")
            handle.writelines(line + "\n" for line in lines)
        written.append(path)
    expected = {"_comment": "intended outcome per recording and service; see simulations/backtest.py"}
    expected.update({f"{c.name}.jsonl": c.expected for c in CASES})
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as handle:
        json.dump(expected, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--check", action="store_true", help="regenerate to a temp dir and compare bytes")
    args = parser.parse_args(argv)
    if not args.check:
        written = write_corpus(args.out)
        print(f"wrote {len(written)} recordings and expected.json to {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(tmp)
        names = sorted(os.listdir(tmp))
        _, mismatch, errors = filecmp.cmpfiles(args.out, tmp, names, shallow=False)
    for name in mismatch + errors:
        print(f"differs: {name}", file=sys.stderr)
    return 1 if mismatch or errors else 0


if __name__ == "__main__":
    sys.exit(main())
