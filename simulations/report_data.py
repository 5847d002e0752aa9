"""The numbers behind a replay report (`simulations.report`): per-minute canary and baseline series,
the traffic timeline, and each detector's evidence over time.

Inputs are what a replay already has: the decisions, and the journal kept with
`replay_file(..., keep_journal=True)`, whose input records are the recording's own events in native
form (metrics included) and whose `evaluation` records hold every criterion's verdict per minute.
Metrics records are parsed back with the same intake as replay (`daemon.core.intake.parse_line`);
a minute delivered twice counts once. Nothing here touches the engine.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.core.events import Metrics
from daemon.core.intake import parse_line
from daemon.core.service_id import service_id_of, several_locations
from daemon.core.timefmt import parse_rfc3339
from simulations.replay import FAR_FUTURE

Z95 = 1.959963984540054


@dataclass
class ArmSeries:
    """One revision's per-minute series (aligned lists; None where unknown)."""

    revision: str
    times: list[datetime] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    error_rate: list[float | None] = field(default_factory=list)
    error_low: list[float | None] = field(default_factory=list)  # Wilson 95% band
    error_high: list[float | None] = field(default_factory=list)
    p50_ms: list[float | None] = field(default_factory=list)
    p99_ms: list[float | None] = field(default_factory=list)
    memory: list[float | None] = field(default_factory=list)


@dataclass
class CriterionSeries:
    name: str
    times: list[datetime] = field(default_factory=list)
    statistic: list[float | None] = field(default_factory=list)
    threshold: list[float | None] = field(default_factory=list)
    outcome: list[str] = field(default_factory=list)
    gating: list[bool] = field(default_factory=list)


@dataclass
class ServiceData:
    service: str
    canary: str
    baseline: str
    decisions: list[Any]
    arms: dict[str, ArmSeries]  # "canary" / "baseline"
    criteria: dict[str, CriterionSeries]
    traffic: list[tuple[datetime, int, int, str]]  # (time, canary %, phase, status) after each decision
    logs: list[dict[str, Any]]
    name: str = ""  # the service's own name (`service` is the heading: with its region when several)
    location: str = ""


def wilson(errors: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n <= 0:
        return (math.nan, math.nan)
    p = errors / n
    denominator = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def _metrics_from_journal(journal: list[dict[str, Any]]) -> list[Metrics]:
    seen: set[tuple] = set()
    out: list[Metrics] = []
    for record in journal:
        if record.get("type") != "metrics":
            continue
        record = {k: v for k, v in record.items() if k != "received_at"}
        parsed = parse_line(json.dumps(record), now=FAR_FUTURE)
        if not isinstance(parsed, list):
            continue
        for event in parsed:
            if isinstance(event, Metrics) and event.key() not in seen:
                seen.add(event.key())
                out.append(event)
    out.sort(key=lambda m: m.time)
    return out


def _arm(revision: str, metrics: list[Metrics]) -> ArmSeries:
    arm = ArmSeries(revision)
    for m in metrics:
        if m.revision != revision:
            continue
        n, k = m.requests, m.errors
        low, high = wilson(k, n) if n else (None, None)
        arm.times.append(m.time)
        arm.requests.append(n)
        arm.error_rate.append(k / n if n else None)
        arm.error_low.append(low)
        arm.error_high.append(high)
        hist = m.latency
        usable = hist is not None and hist.total > 0
        arm.p50_ms.append(hist.quantile(0.5) if usable else None)  # type: ignore[union-attr]
        arm.p99_ms.append(hist.quantile(0.99) if usable else None)  # type: ignore[union-attr]
        arm.memory.append(m.memory_utilization)
    return arm


def _criteria(journal: list[dict[str, Any]], service: str, canary: str) -> dict[str, CriterionSeries]:
    series: dict[str, CriterionSeries] = {}
    for record in journal:
        if record.get("type") != "evaluation" or record.get("service") != service:
            continue
        if canary and f"/{canary}@" not in str(record.get("rollout_id", "")):
            continue
        when = parse_rfc3339(record["time"])
        for c in record.get("criteria", []):
            s = series.setdefault(c["name"], CriterionSeries(c["name"]))
            s.times.append(when)
            s.statistic.append(_num(c.get("statistic")))
            s.threshold.append(_num(c.get("threshold")))
            s.outcome.append(str(c.get("outcome")))
            s.gating.append(bool(c.get("gating")))
    return series


def _num(value: Any) -> float | None:
    if value == "inf":
        return math.inf
    return float(value) if isinstance(value, (int, float)) else None


def collect(result: Any) -> list[ServiceData]:
    """One ServiceData per service that has decisions, in name order. For each, the last rollout."""
    metrics = _metrics_from_journal(result.journal)
    # Services by project, location and name; a section names its region when there are several.
    services = sorted({service_id_of(d) for d in result.decisions if d.service != "*"})
    many = several_locations(services)
    out = []
    for key in services:
        service = key.name
        decisions = [d for d in result.decisions if d.service != "*" and service_id_of(d) == key]
        ids = {d.decision_id for d in decisions}
        last = decisions[-1]
        canary, baseline = last.canary, last.baseline
        own = [m for m in metrics if m.service == service and (not m.location or not key.location
                                                               or m.location == key.location)]
        traffic = [(d.time, d.canary_percent_after, d.phase, d.status_after) for d in decisions
                   if d.canary == canary]
        logs = [r for r in result.journal if r.get("type") == "decision-logs" and r.get("service") == service
                and (not many or r.get("decision_id") in ids)]
        out.append(ServiceData(
            service=key.label(with_location=many), canary=canary, baseline=baseline, decisions=decisions,
            arms={"canary": _arm(canary, own), "baseline": _arm(baseline, own)},
            criteria=_criteria(result.journal, service, canary), traffic=traffic, logs=logs,
            name=key.name, location=key.location))
    return out
