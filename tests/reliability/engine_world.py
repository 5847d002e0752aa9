"""A small world for engine-level reliability tests: the real engine and core on a virtual clock
(`simulations.replay.Replayer`), the simulated Cloud Run with its request log, a notifier that
keeps what it sent, and healthy A/A metrics from the scenario generator for one or more services.

Used by test_humans.py and test_safety_rails.py. Time is counted in minutes from START; the deploy
of every service is at START, and `until(m)` feeds every metrics minute up to m.
"""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from daemon.bootstrap import build
from daemon.core.events import Command, Deploy, Event, Tick
from daemon.core.timefmt import format_rfc3339
from policies import load_default_policy
from simulations.replay import Replayer
from simulations.sandbox_cloud import SimulatedCloudRun
from simulations.scenarios import generate, get_scenario

START = datetime.fromisoformat("2026-11-24T14:00:00+00:00")  # a Tuesday: no freeze window
PROJECT, LOCATION = "shop-prod", "europe-west1"
OPERATOR = "sre@olympuscloud.ai"  # matches the default policy's authorised principals
STRANGER = "mallory@evil.example"
OWN = "rollbackd@shop-prod.iam.gserviceaccount.com"


def names(service: str) -> tuple[str, str]:
    return f"{service}-00041-base", f"{service}-00042-cnry"


class Notes:
    """A Notifier that keeps every notification."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def notify(self, command: Any) -> None:
        self.sent.append(command)


def at(minute: float) -> datetime:
    return START + timedelta(minutes=minute)


class World:
    def __init__(self, services: tuple[str, ...] = ("checkout",), *, policy: Any = None, traffic: Any = None,  # traffic: cloud -> controller
                 deploy: bool = True, **engine_kwargs: Any) -> None:
        self.policy = policy or load_default_policy()
        self.cloud = SimulatedCloudRun()
        self.notes = Notes()
        self.services = services
        for service in services:
            base, canary = names(service)
            self.cloud.ensure_service(service, project=PROJECT, location=LOCATION, labels={"rollbackd": "enabled"})
            self.cloud.deploy(service, canary, baseline=base)
        self._decisions: list[Any] = []  # every decision, whichever path (feed, dispatcher) made it
        engine = build("replay", policy=lambda: self.policy, traffic=traffic(self.cloud) if traffic else self.cloud,
                       notifier=self.notes, clock=None, on_decision=self._decisions.append, **engine_kwargs)
        self.engine = engine
        self.replayer = Replayer(self.policy, cloud=self.cloud, engine=engine)
        healthy = replace(get_scenario("S0-aa-clean"), schedule=((5, 10), (25, 15), (50, None)))
        self.records: dict[str, list[Any]] = {}
        for index, service in enumerate(services):
            base, canary = names(service)
            scenario = replace(healthy, service=service, baseline_revision=base, canary_revision=canary)
            self.records[service] = generate(scenario, np.random.default_rng([5, index]), 120, START)
        self.fed_through = 0
        if deploy:
            for service in services:
                base, canary = names(service)
                self.send(Deploy(time=START, service=service, revision=canary, baseline=base, project=PROJECT,
                                 location=LOCATION, canary_percent=0, principal="ci@olympuscloud.ai"))

    # --- input ------------------------------------------------------------------------------------
    def send(self, event: Event) -> None:
        self.replayer.feed(event)

    def until(self, minute: int) -> None:
        """Feed every service's metrics for minutes fed_through+1 .. minute, then tick to `minute`."""
        for m in range(self.fed_through + 1, minute + 1):
            for service in self.services:
                record = self.records[service][m - 1]
                for metrics in (record.baseline, record.canary):
                    if metrics is not None:
                        self.send(replace(metrics, project=PROJECT, location=LOCATION))
        self.fed_through = max(self.fed_through, minute)
        self.send(Tick(time=at(minute)))

    def command(self, minute: float, action: str, by: str = OPERATOR, service: str = "checkout",
                reason: str = "test") -> None:
        self.send(Command(time=at(minute), service=service, action=action, by=by, reason=reason))

    # --- what happened ----------------------------------------------------------------------------
    @property
    def decisions(self) -> list[Any]:
        return self._decisions

    def of(self, service: str = "checkout") -> list[Any]:
        return [d for d in self.decisions if d.service == service]

    def updates(self, service: str | None = None) -> list[dict[str, Any]]:
        return [a for m, a in self.cloud.calls if m == "UpdateService" and (service is None or a["service"] == service)]

    def canary_percent(self, service: str = "checkout") -> int:
        return self.cloud.traffic_of(service).get(names(service)[1], 0)

    def status(self, service: str = "checkout") -> str:
        return self.engine.state_of(service).rollout.status.value


def v2_update_entry(service: str, revision: str, baseline: str, canary_percent: int, when: datetime, *,
                    principal: str) -> bytes:
    """The audit entry Cloud Run writes for a v2 UpdateService that re-sends the template with a new
    traffic split: what rollbackd's own traffic changes look like in the audit log (gcp-formats.md
    example (a'))."""
    return json.dumps({
        "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity",
        "operation": {"id": f"projects/{PROJECT}/locations/{LOCATION}/operations/{when.timestamp():.0f}",
                      "producer": "run.googleapis.com", "first": True},
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "methodName": "google.cloud.run.v2.Services.UpdateService", "serviceName": "run.googleapis.com",
            "resourceName": f"projects/{PROJECT}/locations/{LOCATION}/services/{service}",
            "authenticationInfo": {"principalEmail": principal},
            "request": {"@type": "type.googleapis.com/google.cloud.run.v2.UpdateServiceRequest",
                        "service": {"name": f"projects/{PROJECT}/locations/{LOCATION}/services/{service}",
                                    "template": {"revision": revision},
                                    "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                                                 "revision": baseline, "percent": 100 - canary_percent},
                                                {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                                                 "revision": revision, "percent": canary_percent,
                                                 "tag": "canary"}]}}},
        "resource": {"type": "cloud_run_revision",
                     "labels": {"project_id": PROJECT, "service_name": service, "location": LOCATION,
                                "revision_name": "", "configuration_name": ""}},
        "severity": "NOTICE", "timestamp": format_rfc3339(when)}).encode()
