"""Memory per virtual hour of the live daemon's core, in-process: N services cycling through canary
rollouts for H virtual hours (issue 5: a production daemon runs for months; its memory must not grow
with the number of events, decisions or rollouts it has seen, only with the number of services).

What runs is what `daemon.bootstrap.run_live` builds around Pub/Sub, minus the network: the real
`Dispatcher` (message bytes -> intake -> resolve -> engine), `Engine` and pure core, a
`PrometheusTelemetry` registry, the `FileJournal` (rotating), the `DecisionLog` (to /dev/null), the
live daemon's notifier when no topic is set (`LogNotifier` into the decision log) and, every tick,
`daemon.live.resync`. Cloud Run is the sandbox's `SimulatedCloudRun`; its request log and the list
of every revision ever deployed are test aids that grow by design, so they are trimmed each minute
here (they are not part of the daemon). The clock is a `VirtualClock` moved minute by minute.

Each minute, every service gets one native `metrics` message per serving revision (as the soak's
feeder publishes them); whenever a service's rollout has ended (completed, rolled back, halted,
superseded) a fresh canary is deployed at 0% and its ReplaceService audit entry dispatched, as CI
would. One canary in five is bad (5% errors) and is rolled back. The first deploys are spread over
the first phase so rollouts do not move in step.

Printed per virtual hour: RSS (VmRSS), the bytes tracemalloc traces (Python allocations, the number
that matters: RSS also holds allocator slack that Python does not return to the OS), live objects
from `gc`, the rollouts finished so far, and per service the traced bytes. With `--top N`, the
allocation sites that grew most between the end of hour 1 and the end of the run.

    python -m benchmarks.memory_cycles [--services 300] [--hours 6] [--phase-minutes 5] [--top 15]
    python -m benchmarks.memory_cycles --no-trace     # RSS only, ~3x faster

A benchmark, not a test: its numbers go in the README; tests/unit/test_bounded_memory.py holds the
size assertions.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from daemon.clock import VirtualClock
from daemon.core.codec import event_to_json
from daemon.core.events import Metrics
from daemon.sandbox import SANDBOX_LOCATION, SANDBOX_PROJECT, audit_deploy_entry
from detectors.histogram import Histogram

START = datetime.fromisoformat("2026-11-24T15:00:00+00:00")  # a Tuesday: no freeze window
PRINCIPAL = "rollbackd@rollbackd-sandbox.iam.gserviceaccount.com"
LATENCY_LAYOUT = (64, 1.4, 1.0)  # exponential buckets as Cloud Monitoring reports run.googleapis.com latencies


def latency(n: int, median_ms: float, rng: np.random.Generator) -> Histogram:
    buckets, growth, scale = LATENCY_LAYOUT
    edges = np.log(scale * growth ** np.arange(buckets + 1))
    from scipy.stats import norm

    cdf = norm.cdf((edges - np.log(median_ms)) / 0.5)
    probs = np.diff(np.concatenate(([0.0], cdf, [1.0])))
    counts = rng.multinomial(n, probs / probs.sum())
    return Histogram.exponential(buckets, growth, scale, [int(c) for c in counts])


class CycleWorld:
    """The daemon's pieces around one simulated Cloud Run, driven one virtual minute at a time."""

    def __init__(self, services: int, *, phase_minutes: int = 5, rps: float = 10.0, bad_share: float = 0.2,
                 seed: int = 7, journal_dir: str | None = None) -> None:
        from actions.notify import LogNotifier
        from daemon.adapters.decision_log import DecisionLog
        from daemon.adapters.journal import FileJournal
        from daemon.bootstrap import build
        from daemon.dispatch import Dispatcher
        from daemon.ports import NullJournal
        from daemon.telemetry import PrometheusTelemetry
        from policies.loader import load_policy_text
        from simulations.sandbox_cloud import SimulatedCloudRun

        self.clock = VirtualClock(START)
        self.policy = load_policy_text(_policy_text(phase_minutes), "memory-cycles.yaml")
        self.cloud = SimulatedCloudRun()
        self.names = [f"svc-{i:04d}" for i in range(services)]
        for name in self.names:
            self.cloud.ensure_service(name, project=SANDBOX_PROJECT, location=SANDBOX_LOCATION)
            self.cloud.set_traffic_by_hand(name, {f"{name}-00001-base": 100})
        self.telemetry = PrometheusTelemetry()
        self._devnull = open(os.devnull, "w", encoding="utf-8")
        self.decision_log = DecisionLog(self._devnull, project=SANDBOX_PROJECT)
        notifier = LogNotifier(sink=lambda record: self.decision_log.info(
            record["message"], **{k: v for k, v in record.items() if k != "message"}))
        self.journal: Any = (FileJournal(os.path.join(journal_dir, "journal.jsonl"), max_bytes=8 * 1024 * 1024,
                                         keep=2) if journal_dir else NullJournal())
        self.engine = build("benchmark", policy=lambda: self.policy, traffic=self.cloud, notifier=notifier,
                            journal=self.journal, telemetry=self.telemetry, clock=self.clock,
                            on_decision=self.decision_log.decision)
        self.dispatcher = Dispatcher(self.engine, clock=self.clock, traffic=self.cloud,
                                     own_principals=frozenset({PRINCIPAL}),
                                     managed=lambda p, l, s: True, default_project=SANDBOX_PROJECT,
                                     default_location=SANDBOX_LOCATION)
        self.rng = np.random.default_rng(seed)
        self.choice = random.Random(seed)
        self.rps = rps
        self.bad_share = bad_share
        self.ramp = max(1, phase_minutes)
        self.generation: dict[str, int] = {}
        self.canary: dict[str, str] = {}
        self.bad: dict[str, bool] = {}
        self.minute_index = 0
        self.deploys = 0
        self.messages = 0

    def minute(self) -> None:
        """One virtual minute: metrics of the minute that just ended, redeploys, resync, tick."""
        from daemon.live import resync

        self.minute_index += 1
        at = START + timedelta(minutes=self.minute_index)
        self.clock.advance_to(at)
        for i, name in enumerate(self.names):
            state = self.engine.state_of(name)
            rollout = state.rollout if state is not None else None
            if name not in self.canary:
                if i % self.ramp == self.minute_index % self.ramp:
                    self._deploy(name, at)
            elif rollout is not None and rollout.canary == self.canary[name] and rollout.status.terminal:
                self._deploy(name, at)
            for revision, percent in self.cloud.traffic_of(name).items():
                if percent <= 0:
                    continue
                self._metrics(name, revision, percent, at)
        resync(self.engine, self.cloud, self.decision_log)
        self.engine.tick(at)
        self._trim_fake()

    def _deploy(self, name: str, at: datetime) -> None:
        split = self.cloud.traffic_of(name)
        baseline = max(split, key=lambda r: split[r])
        generation = self.generation.get(name, 1) + 1
        self.generation[name] = generation
        revision = f"{name}-{generation:05d}-can"
        self.cloud.deploy(name, revision, baseline=baseline)
        self.canary[name] = revision
        self.bad[revision] = self.choice.random() < self.bad_share
        self._send(audit_deploy_entry(name, revision, baseline, at), "audit")
        self.deploys += 1

    def _metrics(self, name: str, revision: str, percent: int, at: datetime) -> None:
        n = int(self.rng.poisson(self.rps * 60 * percent / 100))
        errors = int(self.rng.binomial(n, 0.05)) if self.bad.get(revision, False) else 0
        classes = tuple((c, k) for c, k in (("2xx", n - errors), ("5xx", errors)) if k)
        m = Metrics(time=at, service=name, revision=revision, interval_s=60, requests_by_class=classes,
                    latency=latency(n, 100.0, self.rng) if n else None, memory_utilization=0.4,
                    cpu_utilization=0.3, instance_count=2, project=SANDBOX_PROJECT, location=SANDBOX_LOCATION)
        self._send(event_to_json(m), "metrics")

    def _send(self, body: dict[str, Any], source: str) -> None:
        self.messages += 1
        self.dispatcher.handle(json.dumps(body, sort_keys=True).encode(), message_id=str(self.messages),
                               source=source)

    def _trim_fake(self) -> None:
        # The simulated Cloud Run's request log and revision list are test aids (Cloud Run keeps at
        # most 1,000 revisions and has no request log): not the daemon's memory.
        self.cloud.calls.clear()
        for service in self.cloud.services.values():
            serving = {t["revision"] for t in service.traffic}
            service.revisions = [r for r in service.revisions if r in serving]
        current = set(self.canary.values())
        self.bad = {r: b for r, b in self.bad.items() if r in current}

    def finished_rollouts(self) -> int:
        return self.deploys - sum(1 for s in self.engine.states.values()
                                  if s.rollout is not None and not s.rollout.status.terminal)

    def sizes(self) -> dict[str, int]:
        """Entries in the structures that could grow with events, decisions or rollouts."""
        engine = self.engine
        limiter = engine.rate_limiter
        return {"recent_keys": sum(len(s.recent_keys) for s in engine.states.values()),
                "slots": sum(len(s.rollout.slots) for s in engine.states.values() if s.rollout is not None),
                "notifier.sent": len(engine.notifier.sent),
                "rate_limiter": sum(map(len, limiter._service.values())) + sum(map(len, limiter._project.values())),
                "known_decisions": len(engine.known_decisions),
                "prometheus_series": sum(len(m.samples) for m in self.telemetry.registry.collect())}

    def close(self) -> None:
        close = getattr(self.journal, "close", None)
        if close is not None:
            close()
        self._devnull.close()


def _policy_text(phase_minutes: int) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "tests" / "integration" / "policies" / "short.yaml").read_text()
    text = text.replace("duration: 2m", f"duration: {phase_minutes}m")
    text = text.replace("max_extension: 4m", f"max_extension: {phase_minutes}m")
    text = text.replace("max_actions_per_service_per_hour: 30", "max_actions_per_service_per_hour: 120")
    return text.replace("max_actions_per_project_per_hour: 500", "max_actions_per_project_per_hour: 1000000")


def rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--hours", type=float, default=6.0, help="virtual hours")
    parser.add_argument("--phase-minutes", type=int, default=5)
    parser.add_argument("--rps", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=0, help="print the N allocation sites that grew most after hour 1")
    parser.add_argument("--no-trace", action="store_true", help="RSS and gc counts only (faster)")
    parser.add_argument("--journal", action="store_true", help="write the rotating file journal (default: none)")
    args = parser.parse_args(argv)
    trace = not args.no_trace
    if trace:
        tracemalloc.start(6)
    with tempfile.TemporaryDirectory(prefix="memory-cycles-") as tmp:
        world = CycleWorld(args.services, phase_minutes=args.phase_minutes, rps=args.rps,
                           journal_dir=tmp if args.journal else None)
        print(f"memory_cycles: {args.services} services, {args.hours:g} virtual hours, {args.phase_minutes}-min "
              f"phases, {args.rps:g} rps per service; tracemalloc {'on' if trace else 'off'}")
        print(f"{'hour':>4} {'wall s':>7} {'rollouts':>8} {'messages':>9} {'RSS MiB':>8} {'traced MiB':>10} "
              f"{'traced B/service':>16} {'gc objects':>10}")
        first: Any = None
        types_first: Counter[str] = Counter()
        started = time.monotonic()
        minutes = int(args.hours * 60)
        for minute in range(1, minutes + 1):
            world.minute()
            if minute % 60 == 0 or minute == minutes:
                gc.collect()
                traced = tracemalloc.get_traced_memory()[0] if trace else 0
                objects = gc.get_objects()
                types = Counter(type(o).__name__ for o in objects)
                print(f"{minute / 60:>4.0f} {time.monotonic() - started:>7.0f} {world.finished_rollouts():>8} "
                      f"{world.messages:>9} {rss_kb() / 1024:>8.1f} {traced / 2 ** 20:>10.2f} "
                      f"{traced / args.services:>16.0f} {len(objects):>10}", flush=True)
                del objects
                print("     sizes: " + ", ".join(f"{k} {v}" for k, v in world.sizes().items()), flush=True)
                if minute == 60:
                    types_first = types
                    if trace and args.top:
                        first = tracemalloc.take_snapshot()
                last_types = types
        grown = sorted(((n - types_first.get(t, 0), t) for t, n in last_types.items()), reverse=True)[:8]
        print("gc objects grown since hour 1, by type: " + ", ".join(f"{t} {d:+d}" for d, t in grown if d))
        if first is not None:
            stats = tracemalloc.take_snapshot().compare_to(first, "traceback")
            print(f"top {args.top} allocation sites by growth since hour 1:")
            for stat in stats[:args.top]:
                print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+8d} blocks")
                for line in stat.traceback.format(limit=6)[-12:]:
                    print("     " + line)
        world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
