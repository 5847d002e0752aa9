"""Closed-loop simulation: `rollbackd simulate SCENARIO.yaml`, and the corpus builder's generator.

Each minute, for every simulated service, the `TrafficModel` draws the canary's and the baseline's
Metrics at the canary share the engine has actually set on the simulated Cloud Run
(`cloud.traffic_of(service)`), so request counts follow the daemon's own decisions: hold at 5%
and the canary keeps getting 5%; roll back and it gets nothing. The events are fed through the
same `Replayer` (engine, core, virtual clock, minute ticks) as `rollbackd replay`, and can be
written out as a recording that replays to the same decisions.

Called by `daemon.cli_tools` (simulate) and `simulations.corpus`.
"""
from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Sequence

import numpy as np

from daemon.core.codec import dumps_event
from daemon.core.decision import Decision
from daemon.core.events import Deploy
from daemon.core.intake import parse_line
from daemon.ports import EngineFactory
from simulations.replay import FAR_FUTURE, Replayer, decision_line, timeline_line
from simulations.scenario_model import Scenario
from simulations.scenarios import DEFAULT_START, TrafficModel

MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Rollout:
    """One simulated service: its scenario, when it is deployed, and how the deploy is written
    (`deploy_line`: a raw line, e.g. a Cloud Run audit entry; default a native deploy)."""

    scenario: Scenario
    start: datetime = DEFAULT_START
    deploy_line: str | None = None
    project: str = ""
    location: str = ""


@dataclass
class SimulationResult:
    """What one closed-loop run produced: the replay-like result and the recording's lines."""

    recording: str
    decisions: list[Decision]
    lines: list[str]  # the recording, in delivery order (raw extra lines kept verbatim)
    engine: Any = None
    cloud: Any = None
    journal: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, Any]] = field(default_factory=list)


def run_closed_loop(rollouts: Sequence[Rollout], policy: Any, rng: np.random.Generator, *,
                    minutes: int = 60, extra_lines: Sequence[tuple[datetime, str]] = (),
                    recording: str = "simulation", keep_journal: bool = False,
                    build_engine: EngineFactory) -> SimulationResult:
    """Simulate `minutes` minutes after the earliest deploy. `extra_lines` are raw recording lines
    (alerts, commands, audit entries...) delivered at their times, before that minute's metrics."""
    replayer = Replayer(policy, build_engine=build_engine, keep_journal=keep_journal)
    lines: list[str] = []
    origin = min(r.start for r in rollouts)
    # Everything to deliver, as (visible at, order, line | Deploy marker).
    queue: list[tuple[datetime, int, int, Any]] = []
    order = 0
    for index, rollout in enumerate(rollouts):
        heapq.heappush(queue, (rollout.start, 0, order, ("deploy", index)))
        order += 1
    for at, line in extra_lines:
        heapq.heappush(queue, (at, 1, order, ("line", line)))
        order += 1
    models = [TrafficModel(r.scenario, r.start) for r in rollouts]
    deployed = [False] * len(rollouts)

    def deliver_until(now: datetime) -> None:
        while queue and queue[0][0] <= now:
            at, _, _, (kind, payload) = heapq.heappop(queue)
            if kind == "deploy":
                rollout = rollouts[payload]
                deployed[payload] = True
                s = rollout.scenario
                replayer.cloud.deploy(s.service, s.canary_revision, baseline=s.baseline_revision)
                line = rollout.deploy_line or dumps_event(Deploy(
                    time=rollout.start, service=s.service, revision=s.canary_revision,
                    baseline=s.baseline_revision, canary_percent=0, principal="ci@example.com",
                    project=rollout.project, location=rollout.location))
            else:
                line = payload
            lines.append(line)
            parsed = parse_line(line, now=FAR_FUTURE, allow_internal=True)
            if isinstance(parsed, list):
                for event in parsed:
                    replayer.feed(event)

    end_of_run = origin + minutes * MINUTE
    t = origin
    while t < end_of_run:
        t += MINUTE
        deliver_until(t - MINUTE)  # deploys and extra lines stamped inside the last minute
        for index, rollout in enumerate(rollouts):
            if not deployed[index] or t <= rollout.start:
                continue
            s = rollout.scenario
            percent = replayer.cloud.traffic_of(s.service).get(s.canary_revision, 0)
            canary, baseline = models[index].minute(t, percent, rng)
            for arm, metrics in (("b", baseline), ("c", canary)):
                if metrics is None:
                    continue
                if rollout.project or rollout.location:
                    from dataclasses import replace
                    metrics = replace(metrics, project=rollout.project, location=rollout.location)
                delay = int(rng.integers(s.delay_min, s.delay_max + 1)) if s.delay_max > 0 else s.delay_min
                heapq.heappush(queue, (t + delay * MINUTE, 2, order, ("line", dumps_event(metrics))))
                order += 1
        deliver_until(t)
    replayer.advance(end_of_run)
    engine = replayer.engine
    return SimulationResult(recording=recording, decisions=replayer.decisions, lines=lines, engine=engine,
                            cloud=replayer.cloud, journal=getattr(replayer.journal, "records", []))


def simulate_file(path: str, policy: Any, *, build_engine: EngineFactory, seed: int | None = None,
                  record: str | None = None, keep_journal: bool = False) -> SimulationResult:
    """`rollbackd simulate`: load a scenario file (ScenarioFileError on a bad one) and run it."""
    from simulations.scenario_file import load_scenario_file, scenario_from_file

    spec = load_scenario_file(path)
    scenario = scenario_from_file(spec)
    start = spec.start or DEFAULT_START
    rng = np.random.default_rng(spec.seed if seed is None else seed)
    result = run_closed_loop([Rollout(scenario, start)], policy, rng, minutes=scenario.minutes,
                             recording=os.path.basename(path), keep_journal=keep_journal,
                             build_engine=build_engine)
    if record:
        with open(record, "w", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in result.lines)
    return result


def format_simulation(result: SimulationResult, *, as_json: bool) -> str:
    """Decisions like `rollbackd replay` (timeline, or one JSON object per decision), then with
    the timeline a one-line summary per service."""
    if as_json:
        return "".join(decision_line(d, result.recording) + "\n" for d in result.decisions)
    out = [f"== {result.recording} (closed loop) =="]
    out.extend(timeline_line(d) for d in result.decisions)
    if not result.decisions:
        out.append("(no decisions)")
    from simulations.backtest import outcome_of_status

    from daemon.core.service_id import several_locations

    states = result.engine.states if result.engine else {}
    many = several_locations(states)
    for key, state in sorted(states.items()):
        if state.rollout is not None:
            out.append(f"-- {key.label(with_location=many)}: {outcome_of_status(state.rollout.status.value)} "
                       f"(canary {state.rollout.canary} at {state.rollout.canary_percent}%)")
    return "\n".join(out) + "\n"
