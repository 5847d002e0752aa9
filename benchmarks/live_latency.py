"""Benchmark: event → action latency and event throughput of the live daemon (issue 4, Benchmark).

Runs the production `run_live` (metrics_mode=pubsub) with the real google-cloud clients against the
Pub/Sub emulator and the in-process Cloud Run fake, on a 1x virtual clock (wall time is what is
measured). Two figures:

1. Latency, p50/p99: for each of N services with a canary at 5%, a healthy baseline minute is
   published, then the clock starts and a CRITICAL canary minute (40% 5xx) is published on the
   emulator; the clock stops when the rollback's UpdateService request arrives at the Cloud Run fake
   (recorded in the fake's handler, before it answers). One service at a time, so each sample is the
   pipeline's own latency: StreamingPull delivery, parse, journal (fsync), step, etag-guarded
   get/update on Cloud Run.
2. Throughput: M healthy metrics events for the active rollouts published as fast as the client
   batches them; events/s = M / (time from the first publish to the last ack by the daemon).

    python -m benchmarks.live_latency [--services 200] [--events 20000]

Uses PUBSUB_EMULATOR_HOST when set, otherwise starts the emulator. Numbers go in the README.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from daemon.core.events import Metrics
from tests.fakes.cloud_run import CloudRunFake
from tests.integration.live_harness import (SHORT_POLICY, START, Fakes, LiveDaemon, Publisher, RevisionProfile, SharedClock,
                                            Topics, audit_replace_service, latency_histogram, live_settings,
                                            running_emulator, wait_until)


class TimedCloudRun(CloudRunFake):
    """The Cloud Run fake, noting when each UpdateService request arrives (before answering)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: dict[str, list[float]] = {}
        self._arrivals_lock = threading.Lock()

    def _update_service(self, request: Any, context: Any) -> Any:
        arrived = time.perf_counter()
        with self._arrivals_lock:
            self.arrivals.setdefault(request.service.name.rsplit("/", 1)[-1], []).append(arrived)
        return super()._update_service(request, context)


def minute(service: str, revision: str, at: Any, n: int, error_ratio: float, rng: np.random.Generator) -> Metrics:
    errors = int(n * error_ratio)
    return Metrics(time=at, service=service, revision=revision, interval_s=60,
                   requests_by_class=(("2xx", n - errors), ("5xx", errors)) if errors else (("2xx", n),),
                   latency=latency_histogram(n, RevisionProfile(), rng), memory_utilization=0.4,
                   cpu_utilization=0.3, instance_count=2)


def steady_minutes(steady: list[str], first: Any, events: int, rng: np.random.Generator) -> list[Metrics]:
    """`events` healthy minutes: both arms of every steady service, minute after minute."""
    out = []
    for i in range(events):
        name, arm = steady[(i // 2) % len(steady)], ("00001-base", "00002-can")[i % 2]
        at = first + timedelta(minutes=i // (2 * len(steady)))
        out.append(minute(name, f"{name}-{arm}", at, 1000 if arm.endswith("base") else 60, 0.0005, rng))
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def run(services: int, events: int) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    clock = SharedClock(START, speed=1.0)
    names = [f"svc-{i:04d}" for i in range(services)]  # rolled back one by one (latency)
    steady = [f"steady-{i:03d}" for i in range(100)]  # stay active (throughput)
    result: dict[str, Any] = {"services": services}
    with Fakes(clock, cloud_run=TimedCloudRun()) as fakes, tempfile.TemporaryDirectory() as tmp:
        cloud_run: TimedCloudRun = fakes.cloud_run
        topics = Topics.create("bench")
        for name in names + steady:
            fakes.add_managed_service(name, f"{name}-00001-base")
            fakes.deploy_canary(name, f"{name}-00002-can")
        # The e2e test policy with hour-long phases: the steady rollouts stay active (evaluated every
        # minute) for the whole throughput run; a critical minute still rolls back at once.
        policy = Path(tmp) / "bench-policy.yaml"
        policy.write_text(Path(SHORT_POLICY).read_text(encoding="utf-8").replace("duration: 2m", "duration: 60m"),
                          encoding="utf-8")
        settings = live_settings(fakes, topics, Path(tmp) / "journal.jsonl", metrics_mode="pubsub", policy=str(policy),
                                 tick_interval=600, notify_topic="")
        publisher = Publisher(topics.events, metrics_topic=topics.metrics)
        with LiveDaemon(settings, clock) as live:
            source = live.daemon.sources[-1]  # the metrics subscription (audit, incidents, metrics)
            wait_until(lambda: source.ready, 30, "the subscription")
            deployed_at = clock.now()
            for name in names + steady:
                publisher.publish_deploy(audit_replace_service(name, f"{name}-00002-can", f"{name}-00001-base",
                                                               deployed_at))
            wait_until(lambda: all(len(cloud_run.arrivals.get(n, ())) >= 1 for n in names + steady), 120,
                       "every canary at 5%")
            # The first minute that ends after the rollouts started: complete once both arms arrive.
            slot = deployed_at.replace(second=0, microsecond=0) + timedelta(minutes=1)

            # 1. Latency, one service at a time.
            latencies_ms: list[float] = []
            for name in names:
                publisher.publish_metrics(minute(name, f"{name}-00001-base", slot, 4000, 0.001, rng))
                bad = minute(name, f"{name}-00002-can", slot, 400, 0.40, rng)
                started = time.perf_counter()
                publisher.publish_metrics(bad, wait=False)
                arrived = wait_until(lambda: len(cloud_run.arrivals.get(name, ())) >= 2 and
                                     cloud_run.arrivals[name][1], 30, f"the rollback of {name}", interval_s=0.0005)
                latencies_ms.append((arrived - started) * 1000)
            rolled_back = sum(1 for n in names if live.status(n) == "rolled-back")
            result.update(latency_p50_ms=percentile(latencies_ms, 50), latency_p99_ms=percentile(latencies_ms, 99),
                          latency_max_ms=max(latencies_ms), latency_mean_ms=statistics.fmean(latencies_ms),
                          rolled_back=rolled_back)

            # 2a. Throughput while publishing: healthy minutes, both arms, for the rollouts kept
            # for it (evaluated as they complete: the whole pipeline, not just the intake).
            batch = steady_minutes(steady, slot, events, rng)
            acked_before = source.stats.acked
            started = time.perf_counter()
            futures = [publisher.publish_metrics(m, wait=False) for m in batch]
            for future in futures:
                future.result(timeout=120)
            published = time.perf_counter()
            wait_until(lambda: source.stats.acked - acked_before >= events, 600, "every event handled",
                       interval_s=0.01)
            done = time.perf_counter()
            result.update(events=events, publish_s=published - started, pipeline_s=done - started,
                          events_per_s=events / (done - started), publish_per_s=events / (published - started),
                          handle_errors=source.stats.handle_errors)
        # 2b. Drain rate: a backlog published while the daemon is down, consumed by a fresh daemon
        # (which restores the rollouts from their annotations first). The publisher is out of the way.
        # A fresh subscription: the emulator (0.8.20) keeps a stopped client's StreamingPull
        # registered and leases it messages until their ack deadline, which real Pub/Sub does not.
        backlog_topics = Topics.create("bench-drain")
        settings = settings.model_copy(update={"audit_subscription": backlog_topics.subscription,
                                               "incidents_subscription": backlog_topics.incidents_subscription,
                                               "metrics_subscription": backlog_topics.metrics_subscription})
        publisher = Publisher(backlog_topics.events, metrics_topic=backlog_topics.metrics)
        backlog = steady_minutes(steady, slot + timedelta(minutes=events // (2 * len(steady)) + 1), events, rng)
        futures = [publisher.publish_metrics(m, wait=False) for m in backlog]
        for future in futures:
            future.result(timeout=120)
        started = time.perf_counter()
        with LiveDaemon(settings, clock) as again:
            source = again.daemon.sources[-1]  # the metrics subscription
            wait_until(lambda: source.stats.acked >= events, 600, "the backlog drained", interval_s=0.01)
            done = time.perf_counter()
            evaluations = sum(1 for r in again.engine.states.values() if r.rollout and r.rollout.status.active)
            statuses = Counter(cloud_run.annotations_of(n).get("rollbackd.dev/status", "none") for n in steady)
        result.update(drain_s=done - started, drain_per_s=events / (done - started), drain_active=evaluations,
                      steady_statuses=dict(statuses))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=200, help="latency samples (one per service)")
    parser.add_argument("--events", type=int, default=20000, help="metrics events for the throughput run")
    args = parser.parse_args(argv)
    with running_emulator():
        r = run(args.services, args.events)
    print(f"event → action latency over {r['services']} rollbacks (critical metrics event published on the "
          f"emulator → UpdateService at the Cloud Run fake):")
    print(f"  p50 {r['latency_p50_ms']:.1f} ms   p99 {r['latency_p99_ms']:.1f} ms   max {r['latency_max_ms']:.1f} ms"
          f"   mean {r['latency_mean_ms']:.1f} ms   ({r['rolled_back']}/{r['services']} rolled back)")
    print(f"throughput: {r['events']} metrics events through Pub/Sub → dispatch → journal → engine in "
          f"{r['pipeline_s']:.2f} s = {r['events_per_s']:.0f} events/s "
          f"while publishing (the publisher alone: {r['publish_per_s']:.0f}/s; handle errors {r['handle_errors']})")
    print(f"drain: a backlog of {r['events']} events consumed by a freshly started daemon in {r['drain_s']:.2f} s "
          f"= {r['drain_per_s']:.0f} events/s (start-up and restore of {r['drain_active']} rollouts included; "
          f"their statuses on Cloud Run: {r['steady_statuses']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
