"""Benchmark: Cloud Monitoring calls per tick and resident memory with 1,000 active rollouts (issue 4).

The production daemon (`run_live`, metrics_mode=monitoring) runs in a subprocess on a virtual clock
shared with this process (`live_harness.LiveProcess`), so its memory is its own. The Cloud Run fake
holds N managed services, each mid-rollout (canary at 5%, rollbackd.dev/* annotations), which the
daemon restores on start; the Monitoring fake is fed one minute per revision per virtual minute,
following the current traffic split. Every tick the daemon's collect path (resync + MetricsPoller +
grouped ListTimeSeries) runs for all active rollouts.

Printed per N: ListTimeSeries calls per tick (grouped by the [start, end) window each call asks
for: one window per tick), the metrics events the daemon journaled per minute, and the daemon's
resident memory (VmRSS, VmHWM). The default speed (5: a virtual minute is 12 wall seconds) leaves
a 1,000-rollout tick (collect + evaluate, ~4 s on this machine) time to finish.

    python -m benchmarks.monitoring_scale [--services 10 1000] [--ticks 6] [--speed 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.fakes.monitoring import FakeMonitoring
from tests.integration.live_harness import (START, Fakes, LiveProcess, RevisionProfile, SharedClock, Topics,
                                            TrafficFeeder, journal_records, live_settings, monitoring_sink,
                                            running_emulator, wait_until, write_config)


class TimedMonitoring(FakeMonitoring):
    """The Monitoring fake, noting the virtual time of each ListTimeSeries arrival."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[float] = []
        self.windows: list[tuple[float, float]] = []  # each call's [start, end): one window per tick
        self._arrivals_lock = threading.Lock()

    def _list_time_series(self, request: Any, context: Any) -> Any:
        window = (request.interval.start_time.seconds, request.interval.end_time.seconds)
        with self._arrivals_lock:
            self.arrivals.append(self._now().timestamp())
            self.windows.append(window)
        return super()._list_time_series(request, context)


def rss_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def run(services: int, ticks: int, speed: float) -> dict[str, Any]:
    clock = SharedClock(START, speed=speed)
    clock.set_speed(None)  # stopped while the world is built
    monitoring = TimedMonitoring(project="shop-e2e", location="europe-west1", clock=clock)
    with Fakes(clock, monitoring=monitoring) as fakes, tempfile.TemporaryDirectory() as tmp:
        started = START - timedelta(minutes=3)
        feeder = TrafficFeeder(clock, fakes.cloud_run, monitoring_sink(monitoring), seed=3)
        for i in range(services):
            name = f"svc-{i:04d}"
            base, canary = f"{name}-00001-base", f"{name}-00002-can"
            fakes.add_active_rollout(name, baseline=base, canary=canary, started=started)
            feeder.add(name, {base: RevisionProfile(), canary: RevisionProfile()}, rps=10)
        for m in range(-2, 1):  # the minutes since the rollouts began: backfilled on start
            feeder.minute(START + timedelta(minutes=m))
        topics = Topics.create("scale")
        settings = live_settings(fakes, topics, Path(tmp) / "journal.jsonl", policy="", notify_topic="")
        config = write_config(settings, Path(tmp) / "rollbackd.yaml")
        clock.set_speed(speed)
        shared = SharedClock(clock.now(), speed, time.monotonic())
        process = LiveProcess(config, Path(tmp) / "daemon.log", clock=shared).start()
        feeder.clock = shared
        try:
            process.port(timeout_s=120)
            feeder.start()
            samples: list[dict[str, int]] = []
            first_tick = (shared.now().replace(second=0, microsecond=0) + timedelta(minutes=1)).timestamp()
            last_tick = first_tick + 60 * (ticks - 1)
            wait_until(lambda: shared.now().timestamp() > last_tick + 30, 60 * ticks / speed + 120,
                       f"{ticks} ticks", interval_s=0.2)
            samples.append(rss_kb(process.proc.pid))
        finally:
            feeder.stop()
            process.terminate()
        journal = journal_records(Path(tmp) / "journal.jsonl")
        errors = [r for r in process.records() if r.get("severity") == "ERROR"]
    # Calls grouped by the window they asked for: the poller asks every active rollout's new
    # minutes in one window per tick, so each distinct window is one tick's collection.
    per_window = Counter(w for t, w in zip(monitoring.arrivals, monitoring.windows) if t >= first_tick - 1)
    tick_times = sorted({r["time"] for r in journal if r.get("type") == "tick"})
    metrics_by_tick = Counter(r["received_at"][:16] for r in journal if r.get("type") == "metrics")
    return {"services": services, "ticks": len(tick_times), "calls_per_tick": [per_window[w] for w in sorted(per_window)][:ticks],
            "metrics_per_tick": sorted(metrics_by_tick.values()), "rss": samples[-1], "errors": len(errors),
            "restored": len({r["service"] for r in journal if r.get("type") == "metrics"})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--ticks", type=int, default=6)
    parser.add_argument("--speed", type=float, default=5.0, help="virtual seconds per wall second")
    args = parser.parse_args(argv)
    with running_emulator():
        results = [run(n, args.ticks, args.speed) for n in args.services]
    print("Cloud Monitoring calls per tick and daemon memory, by number of active rollouts:")
    for r in results:
        print(f"  {r['services']:>5} rollouts: ListTimeSeries calls per tick {r['calls_per_tick']} "
              f"(metrics events per tick {r['metrics_per_tick']}; {r['restored']} rollouts with data); "
              f"daemon RSS {r['rss'].get('VmRSS', 0) / 1024:.0f} MiB (peak {r['rss'].get('VmHWM', 0) / 1024:.0f} MiB);"
              f" {r['errors']} error lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
