"""Simulated rollouts as the daemon sees them: per-minute records, events, and a closed-loop model.

Open loop: `generate(scenario, rng, minutes, start)` returns one `MinuteRecord` per minute, following
the scenario's traffic schedule (the runbook's 5% 10 min, 25% 15 min, 50% 15 min, then 100%), and
`to_events(...)` turns them into the `Deploy` and `Metrics` events a recording holds.
Closed loop: `TrafficModel.minute(end_time, canary_percent, rng)` draws one minute for whatever split
the daemon has set, so the sandbox and `rollbackd simulate` make requests follow its decisions.
Callers: the benchmark, the sandbox cloud, `rollbackd simulate`, the backtest corpus builder.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from daemon.core.events import Deploy, Event, Metrics, Tick
from detectors.histogram import Histogram
from simulations.scenario_file import RevisionBehaviour, ScenarioFileError, load_scenario_file, scenario_from_file
from simulations.scenario_model import (RUNBOOK_SCHEDULE, Buckets, Profile, Scenario, Step, catalogue,
                                        get_scenario)
from simulations.scenario_sim import Minutes, MinuteSim, simulate

__all__ = [
    "RUNBOOK_SCHEDULE", "Buckets", "Profile", "Step", "Scenario", "catalogue", "get_scenario", "Minutes",
    "MinuteSim", "simulate", "MinuteRecord", "generate", "records_from_arrays", "to_events", "timed_events",
    "TrafficModel",
    "RevisionBehaviour", "ScenarioFileError", "load_scenario_file", "scenario_from_file", "DEFAULT_START",
]

DEFAULT_START = datetime(2025, 3, 3, 14, 0, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class MinuteRecord:
    """One minute of a simulated rollout. `canary`/`baseline` are None when no point exists (missing,
    lost, or no requests: Cloud Monitoring writes no point for a revision without traffic)."""

    minute: int  # 1-based; the data covers (start + minute - 1, start + minute]
    end_time: datetime
    canary_percent: int
    canary: Metrics | None
    baseline: Metrics | None
    canary_visible_at: datetime  # when the point becomes readable (end_time + delay)
    baseline_visible_at: datetime
    regressed: bool  # scenario truth: the canary is worse during this minute


def _metrics(scenario: Scenario, m: Minutes, run: int, t: int, arm: str, end: datetime,
             edges: tuple[float, ...]) -> Metrics | None:
    suffix = "c" if arm == "canary" else "b"
    if not bool(getattr(m, f"present_{suffix}")[run, t]):
        return None
    n = int(getattr(m, f"n_{suffix}")[run, t])
    e = int(getattr(m, f"e_{suffix}")[run, t])
    f = int(getattr(m, f"f_{suffix}")[run, t])
    counts = tuple(int(c) for c in getattr(m, f"lat_{suffix}")[run, t])
    return Metrics(
        time=end, service=scenario.service,
        revision=scenario.canary_revision if arm == "canary" else scenario.baseline_revision,
        interval_s=60, requests_by_class=(("2xx", n - e - f), ("4xx", f), ("5xx", e)),
        latency=Histogram("exponential", edges, counts),
        memory_utilization=round(float(getattr(m, f"mem_{suffix}")[run, t]), 4),
        cpu_utilization=round(float(getattr(m, f"cpu_{suffix}")[run, t]), 4),
        instance_count=int(getattr(m, f"inst_{suffix}")[run, t]),
        max_instances=scenario.max_instances,
    )


def records_from_arrays(scenario: Scenario, m: Minutes, run: int = 0,
                        start: datetime = DEFAULT_START) -> list[MinuteRecord]:
    """The records of one run of vectorised arrays (the benchmark uses this for the real core)."""
    edges = tuple(float(x) for x in scenario.buckets.edges)
    onset = scenario.onset_min
    out = []
    for t in range(m.minutes):
        end = start + timedelta(minutes=t + 1)
        out.append(MinuteRecord(
            minute=t + 1, end_time=end, canary_percent=int(round(float(m.fraction[run, t]) * 100)),
            canary=_metrics(scenario, m, run, t, "canary", end, edges),
            baseline=_metrics(scenario, m, run, t, "baseline", end, edges),
            canary_visible_at=end + timedelta(minutes=int(m.delay_c[run, t])),
            baseline_visible_at=end + timedelta(minutes=int(m.delay_b[run, t])),
            regressed=onset is not None and t + 1 > onset,
        ))
    return out


def generate(scenario: Scenario | str, rng: np.random.Generator, minutes: int | None = None,
             start: datetime = DEFAULT_START) -> list[MinuteRecord]:
    """One open-loop rollout: per-minute records following the scenario's schedule."""
    if isinstance(scenario, str):
        scenario = get_scenario(scenario)
    return records_from_arrays(scenario, simulate(scenario, rng, 1, minutes), 0, start)


def to_events(scenario: Scenario, records: list[MinuteRecord], start: datetime = DEFAULT_START,
              include_ticks: bool = False) -> list[Event]:
    """The events a recording of this rollout holds: the `Deploy` at `start`, then each Metrics point
    in the order it becomes visible (late points arrive after later minutes). With `include_ticks`, a
    `Tick` at every minute boundary, so a consumer sees time pass even when no data arrives."""
    return [event for _, event in timed_events(scenario, records, start, include_ticks)]


def timed_events(scenario: Scenario, records: list[MinuteRecord], start: datetime = DEFAULT_START,
                 include_ticks: bool = False) -> list[tuple[datetime, Event]]:
    """`to_events` with each event's delivery time (when its point becomes visible), so a replay
    can hand the engine each point when it could have read it (`Replayer.feed(event, at)`)."""
    deploy = Deploy(time=start, service=scenario.service, revision=scenario.canary_revision,
                    baseline=scenario.baseline_revision, canary_percent=0, principal="ci@example.com")
    timed: list[tuple[datetime, int, int, Event]] = []
    for order, rec in enumerate(records):
        # Within one instant: a Tick first, then baseline, then canary (a stable, documented order).
        if include_ticks:
            timed.append((rec.end_time, 0, order, Tick(time=rec.end_time)))
        if rec.baseline is not None:
            timed.append((rec.baseline_visible_at, 1, order, rec.baseline))
        if rec.canary is not None:
            timed.append((rec.canary_visible_at, 2, order, rec.canary))
    timed.sort(key=lambda item: (item[0], item[1], item[2]))
    return [(start, deploy)] + [(at, event) for at, _, _, event in timed]


class TrafficModel:
    """Closed loop: one minute of data for the canary share the daemon has actually set.

    `minute(end_time, canary_percent, rng)` returns (canary Metrics | None, baseline Metrics | None)
    for the minute ending at `end_time`; minutes are counted from `start` (the deploy). Nuisance
    state (AR(1) error and latency drift) carries over between calls, so call it once per minute in
    time order. Visibility delays are not applied here: the caller decides when to deliver."""

    def __init__(self, scenario: Scenario, start: datetime = DEFAULT_START) -> None:
        self.scenario = scenario
        self.start = start
        self._sim: MinuteSim | None = None
        self._edges = tuple(float(x) for x in scenario.buckets.edges)

    def minute(self, end_time: datetime, canary_percent: float, rng: np.random.Generator
               ) -> tuple[Metrics | None, Metrics | None]:
        if self._sim is None:
            self._sim = MinuteSim(self.scenario, 1, rng)
        index = max(1, int(round((end_time - self.start).total_seconds() / 60.0)))
        fraction = min(max(float(canary_percent), 0.0), 100.0) / 100.0
        m = Minutes.stack([self._sim.step(index, fraction, rng)])
        return (_metrics(self.scenario, m, 0, 0, "canary", end_time, self._edges),
                _metrics(self.scenario, m, 0, 0, "baseline", end_time, self._edges))
