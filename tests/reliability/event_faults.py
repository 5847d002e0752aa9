"""Recordings and the delivery faults applied to them, for the event-fault tests (issue 5, item 2).

A recording here is a list of `Delivery(at, record)`: a native event as JSON (`daemon.core.codec`)
and the moment the daemon receives it (written as the journal's `received_at`, which replay's clock
follows). `clean_recording()` builds one from the shared scenario generator: several services'
rollouts interleaved, each metrics point delivered when it becomes visible. The fault functions
return a new delivery list; each is seeded, so a failing case can be reproduced exactly.

Used by tests/reliability/test_event_faults.py (replay) and test_event_faults_live.py (emulator).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from daemon.core.codec import event_to_json
from daemon.core.timefmt import format_rfc3339, parse_rfc3339
from simulations.scenarios import MinuteRecord, generate, get_scenario

START = datetime.fromisoformat("2026-11-24T14:00:00+00:00")  # a Tuesday: no freeze window
GRACE = timedelta(minutes=5)  # the default policy's evidence.late_data_grace
MINUTE = timedelta(minutes=1)
# (scenario, service name): one promoted, one rolled back, one with data 1-4 minutes late.
SERVICES = (("S0-aa-clean", "checkout"), ("S4-errors-x5", "payments"), ("S11-late-errors", "search"))
# Data delivered on time: the clock-skew faults use these (a skew adds to a point's delay, and a
# point later than the policy's late_data_grace is evaluated as missing; see docs/reliability.md).
TIMELY = SERVICES[:2] + (("S9-onset-mid", "search"),)


@dataclass(frozen=True)
class Delivery:
    at: datetime  # when the daemon receives it
    record: dict[str, Any]  # the native event

    @property
    def time(self) -> datetime:
        return parse_rfc3339(self.record["time"])

    def line(self) -> str:
        record = dict(self.record)
        record["received_at"] = format_rfc3339(self.at)
        return json.dumps(record, sort_keys=True)


def _scenario(name: str, service: str) -> Any:
    base = get_scenario(name)
    return replace(base, service=service, baseline_revision=f"{service}-00041-base",
                   canary_revision=f"{service}-00042-cnry")


def clean_recording(seed: int = 7, minutes: int = 45, services: tuple[tuple[str, str], ...] = SERVICES
                    ) -> list[Delivery]:
    """Every service deployed at START, then each metrics point delivered when visible; a final
    tick long after the end, so every variant of the recording runs to the same time.

    Deterministic in its arguments, so it is built once per argument set (the thirty-seed suites
    ask for the same recording hundreds of times) and each caller gets its own list."""
    return list(_clean_recording(seed, minutes, services))


@lru_cache(maxsize=8)
def _clean_recording(seed: int, minutes: int, services: tuple[tuple[str, str], ...]) -> tuple[Delivery, ...]:
    out: list[Delivery] = []
    for index, (name, service) in enumerate(services):
        scenario = _scenario(name, service)
        records: list[MinuteRecord] = generate(scenario, np.random.default_rng([seed, index]), minutes, START)
        out.append(Delivery(START, {"type": "deploy", "time": format_rfc3339(START), "service": service,
                                    "revision": scenario.canary_revision, "baseline": scenario.baseline_revision,
                                    "canary_percent": 0, "principal": "ci@example.com"}))
        for rec in records:
            if rec.baseline is not None:
                out.append(Delivery(rec.baseline_visible_at, event_to_json(rec.baseline)))
            if rec.canary is not None:
                out.append(Delivery(rec.canary_visible_at, event_to_json(rec.canary)))
    end = START + timedelta(minutes=minutes + 15)
    out.append(Delivery(end, {"type": "tick", "time": format_rfc3339(end)}))
    return tuple(ordered(out))


def ordered(deliveries: list[Delivery]) -> list[Delivery]:
    """Delivery order: by arrival; ties keep deploys first, then their input order (stable)."""
    return sorted(deliveries, key=lambda d: (d.at, d.record["type"] != "deploy"))


def _is_tail(d: Delivery) -> bool:
    return d.record["type"] == "tick"


# --- faults -------------------------------------------------------------------------------------

def duplicates(clean: list[Delivery], rng: random.Random, p: float = 0.3) -> list[Delivery]:
    """Pub/Sub's at-least-once delivery: a third of the messages arrive twice, within a minute."""
    out = list(clean)
    for d in clean:
        if not _is_tail(d) and rng.random() < p:
            out.append(replace(d, at=d.at + timedelta(seconds=rng.uniform(0, 60))))
    return ordered(out)


def redelivery_after_ack_deadline(clean: list[Delivery], rng: random.Random, p: float = 0.2) -> list[Delivery]:
    """A message whose ack was lost comes back after the ack deadline (10 s to 10 min), possibly long
    after its minute was evaluated."""
    out = list(clean)
    for d in clean:
        if not _is_tail(d) and rng.random() < p:
            out.append(replace(d, at=d.at + timedelta(seconds=rng.uniform(10, 600))))
    return ordered(out)


def reordered(clean: list[Delivery], rng: random.Random) -> list[Delivery]:
    """Metrics arrive in any order within the grace period: each point is delayed at random, but
    arrives before its minute's `late_data_grace` has passed (the promise the core makes)."""
    out = []
    for d in clean:
        if d.record["type"] == "metrics":
            latest = d.time + GRACE - timedelta(seconds=1)
            room = max(0.0, (latest - d.at).total_seconds())
            d = replace(d, at=d.at + timedelta(seconds=rng.uniform(0, room)))
        out.append(d)
    return ordered(out)


def unknown_services(clean: list[Delivery], rng: random.Random, p: float = 0.2) -> list[Delivery]:
    """Events about services rollbackd never saw deployed: copies of real metrics renamed, and
    alerts, commands and traffic changes for them."""
    out = list(clean)
    for d in clean:
        if d.record["type"] == "metrics" and rng.random() < p:
            ghost = dict(d.record, service="ghost", revision="ghost-00001-abc")
            out.append(replace(d, record=ghost))
    for minute in range(0, 40, 5):
        at = START + timedelta(minutes=minute, seconds=rng.uniform(1, 59))
        stamp = format_rfc3339(at)
        out += [
            Delivery(at, {"type": "alert", "time": stamp, "service": "ghost", "revision": "ghost-00001-abc",
                          "incident_id": f"ghost-{minute}", "state": "open", "policy_name": "ghost 5xx"}),
            Delivery(at, {"type": "command", "time": stamp, "service": "ghost", "action": "abort",
                          "by": "sre@example.com", "reason": "not ours"}),
            Delivery(at, {"type": "traffic-changed", "time": stamp, "service": "ghost", "canary_percent": 50,
                          "principal": "someone@example.com"}),
        ]
    return ordered(out)


def older_than_rollout(clean: list[Delivery], rng: random.Random) -> list[Delivery]:
    """Events stamped before the rollouts began, delivered in the middle of them: an incident of an
    earlier rollout (opened and closed before this one began), a traffic change from an earlier
    rollout, an operator's old abort, metrics from the previous day, and the deploy that made the
    current baseline (redelivered a day late). An incident still open when a canary starts is not
    stale: it blocks the canary's phases (tests/unit/test_controller_core.py)."""
    out = list(clean)
    services = sorted({d.record["service"] for d in clean if d.record["type"] == "deploy"})
    for service in services:
        for minute in (3, 12, 27):
            at = START + timedelta(minutes=minute, seconds=rng.uniform(1, 59))
            old = START - timedelta(minutes=rng.randint(5, 600))
            stamp = format_rfc3339(old)
            out += [
                Delivery(at, {"type": "alert", "time": stamp, "service": service,
                              "revision": f"{service}-00042-cnry", "incident_id": f"old-{service}-{minute}",
                              "state": "open", "policy_name": "old 5xx alert"}),
                Delivery(at, {"type": "alert", "time": format_rfc3339(old + timedelta(minutes=2)),
                              "service": service, "revision": f"{service}-00042-cnry",
                              "incident_id": f"old-{service}-{minute}", "state": "closed",
                              "policy_name": "old 5xx alert"}),
                Delivery(at, {"type": "command", "time": stamp, "service": service, "action": "abort",
                              "by": "sre@example.com", "reason": "an old abort"}),
                Delivery(at, {"type": "traffic-changed", "time": stamp, "service": service,
                              "canary_percent": 100, "principal": "someone@example.com"}),
                Delivery(at, {"type": "deploy", "time": format_rfc3339(START - timedelta(days=1)),
                              "service": service, "revision": f"{service}-00041-base",
                              "baseline": f"{service}-00040-old", "canary_percent": 0,
                              "principal": "ci@example.com"}),
            ]
        metrics = [d for d in clean if d.record["type"] == "metrics" and d.record["service"] == service]
        for d in metrics[:6]:
            stale = dict(d.record, time=format_rfc3339(d.time - timedelta(days=1)))
            out.append(replace(d, at=d.at + timedelta(minutes=rng.randint(1, 20)), record=stale))
    return ordered(out)


def clock_skew(clean: list[Delivery], rng: random.Random, skew_s: float = 120.0) -> list[Delivery]:
    """The daemon's clock is `skew_s` ahead of (positive) or behind (negative) the event sources',
    with a few seconds of jitter: every message is received `skew_s` later (or earlier)."""
    out = []
    for d in clean:
        if _is_tail(d):
            out.append(d)
            continue
        out.append(replace(d, at=d.at + timedelta(seconds=skew_s + rng.uniform(-5, 5))))
    return ordered(out)


FAULTS: dict[str, Callable[[list[Delivery], random.Random], list[Delivery]]] = {
    "duplicates": duplicates,
    "redelivery-after-ack-deadline": redelivery_after_ack_deadline,
    "reordered-within-grace": reordered,
    "unknown-services": unknown_services,
    "older-than-rollout": older_than_rollout,
    "clock-skew-plus-2m": lambda clean, rng: clock_skew(clean, rng, 120.0),
    "clock-skew-minus-2m": lambda clean, rng: clock_skew(clean, rng, -120.0),
}


def all_faults(clean: list[Delivery], rng: random.Random) -> list[Delivery]:
    """Every fault at once: a skewed clock first, then reordering (still within the grace period of
    each point's own minute), strangers, stale events, duplicates and redeliveries on top."""
    stream = clock_skew(clean, rng, rng.choice((-120.0, 120.0)))
    for name in ("reordered-within-grace", "unknown-services", "older-than-rollout", "duplicates",
                 "redelivery-after-ack-deadline"):
        stream = FAULTS[name](stream, rng)
    return stream


GARBAGE = (
    "", "not json at all", "{", "}", "[]", "null", "42", '"a string"', "{}", '{"type":"metrics"}',
    '{"type":"deploy","service":"checkout"}', '{"type":"metrics","time":"yesterday","service":"x"}',
    '{"type":"alien","time":"2026-11-24T14:10:00Z"}', '{"type":"command","time":"2026-11-24T14:10:00Z",'
    '"service":"checkout","action":"explode","by":"x@example.com"}', "\x00\x01\x02", "{'single': 'quotes'}",
    '{"type":"metrics","time":"2026-11-24T14:10:00Z","service":"checkout","revision":"checkout-00042-cnry",'
    '"interval_s":60,"requests_by_class":{"2xx":-5}}', '{"protoPayload":{}}', '{"incident":{"state":"open"}}',
    "\ufeff{\"type\":\"tick\"}", "x" * 5000,
)


def laced_with_garbage(lines: list[str], rng: random.Random, p: float = 0.3) -> list[str]:
    """The recording's lines with garbage lines between them (a third of the gaps)."""
    out = []
    for line in lines:
        while rng.random() < p:
            out.append(rng.choice(GARBAGE) if rng.random() < 0.7 else _mangled(rng.choice(lines), rng))
        out.append(line)
    return out


def _mangled(line: str, rng: random.Random) -> str:
    """A real line cut short, as a torn write leaves it (never valid JSON: the closing brace is gone)."""
    return line[: rng.randint(1, max(1, len(line) - 2))]
