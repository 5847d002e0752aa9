"""The built-in sandbox: the real daemon loop and engine on a simulated Cloud Run.

`rollbackd run --sandbox` needs no Google Cloud access. Only the adapters differ from production:
a simulated Cloud Run (services, revisions, traffic, etags, annotations), a closed-loop traffic
simulator whose per-revision request counts follow the daemon's own traffic split (the shared
scenario generator), a simulated error-log source, and an in-process event bus. When
PUBSUB_EMULATOR_HOST is set, events travel through the emulator instead, via the production
publisher and subscriber code.

Deploys are published the way production sees them: as Cloud Audit Log entries of
`gcloud run deploy --no-traffic --tag=canary` (v1 ReplaceService), on the audit source. Metrics are
published as native `metrics` events every minute, on the metrics source. A command (`command()`)
is written as the `rollbackd.dev/command` annotation on the simulated service, whose audit entry
reaches the daemon on the audit source, exactly as `rollbackd ctl` works in production.

With `--state-dir`, the simulated cloud, the virtual clock and the journal persist; a restart on the
same directory rebuilds the engine from the journal and continues where it stopped.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import numpy as np

from daemon.core.codec import event_to_json
from daemon.core.commands import CaptureErrorLogs
from daemon.core.timefmt import format_rfc3339, parse_rfc3339
from daemon.ports import CapturedLogs
from simulations.sandbox_cloud import SimulatedCloudRun

SANDBOX_PROJECT = "rollbackd-sandbox"
SANDBOX_LOCATION = "us-central1"
# One topic and subscription per source, as in production (docs/deploy.md).
TOPICS = {source: f"projects/{SANDBOX_PROJECT}/topics/rollbackd-{source}" for source in ("audit", "metrics")}
SUBSCRIPTIONS = {source: f"projects/{SANDBOX_PROJECT}/subscriptions/rollbackd-{source}" for source in TOPICS}
# Who the sandbox's operator is (the bundled policy authorises *@olympuscloud.ai).
SANDBOX_OPERATOR = "sre@olympuscloud.ai"
# A Tuesday morning in the runbook's time zone: outside the default policy's weekend freeze.
DEFAULT_START = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
DEPLOYER = "ci-deploy@rollbackd-sandbox.iam.gserviceaccount.com"
SCENARIO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "simulations", "scenarios")


@dataclass
class SandboxService:
    """One simulated service: its scenario and the closed-loop traffic model."""

    service: str
    canary: str
    baseline: str
    model: Any  # simulations.scenarios.TrafficModel
    error_rate: float
    deploy_at: datetime
    deployed: bool = False
    errors_served: dict[str, int] = field(default_factory=dict)
    # [minute, canary percent] of every simulated minute: a restart replays the model through them to
    # rebuild its carried-over nuisance state (AR(1) drifts) exactly.
    history: list[list[Any]] = field(default_factory=list)


def builtin_scenarios() -> dict[str, list[str]]:
    """Scenario names the sandbox knows, each a list of scenario files run side by side."""
    return {
        "default": ["good-canary.yaml", "bad-canary.yaml"],
        "good-canary": ["good-canary.yaml"],
        "bad-canary": ["bad-canary.yaml"],
        "slow-leak": ["slow-leak.yaml"],
    }


def load_services(name_or_file: str, start: datetime) -> list[SandboxService]:
    from simulations.scenario_file import load_scenario_file, scenario_from_file
    from simulations.scenarios import TrafficModel

    table = builtin_scenarios()
    if name_or_file in table:
        files = [os.path.join(SCENARIO_DIR, f) for f in table[name_or_file]]
    elif os.path.isfile(name_or_file):
        files = [name_or_file]
    else:
        raise ValueError(f"unknown sandbox scenario '{name_or_file}' (known: {', '.join(table)}; or a scenario file)")
    services: list[SandboxService] = []
    used: set[str] = set()
    for index, path in enumerate(files):
        spec = load_scenario_file(path)
        if spec.service in used:  # two scenarios for one service name: give the second its own
            renamed = {"checkout": "payments"}.get(spec.service, f"{spec.service}-{index + 1}")
            spec = spec.model_copy(update={
                "service": renamed,
                "baseline": spec.baseline.model_copy(update={"revision": spec.baseline.revision.replace(spec.service, renamed)}),
                "canary": spec.canary.model_copy(update={"revision": spec.canary.revision.replace(spec.service, renamed)}),
            })
        used.add(spec.service)
        deploy_at = start + timedelta(minutes=1)
        scenario = scenario_from_file(spec)
        services.append(SandboxService(service=spec.service, canary=spec.canary.revision,
                                       baseline=spec.baseline.revision,
                                       model=TrafficModel(scenario, start=deploy_at),
                                       error_rate=spec.canary.error_rate, deploy_at=deploy_at))
    return services


def audit_deploy_entry(service: str, revision: str, baseline: str, at: datetime) -> dict[str, Any]:
    """What a log sink delivers for `gcloud run deploy SERVICE --no-traffic --tag=canary`."""
    stamp = format_rfc3339(at)
    return {
        "insertId": f"sandbox-{service}-{revision}",
        "logName": f"projects/{SANDBOX_PROJECT}/logs/cloudaudit.googleapis.com%2Factivity",
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": DEPLOYER},
            "methodName": "google.cloud.run.v1.Services.ReplaceService",
            "serviceName": "run.googleapis.com",
            "resourceName": f"namespaces/{SANDBOX_PROJECT}/services/{service}",
            "request": {
                "@type": "type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest",
                "name": f"projects/{SANDBOX_PROJECT}/locations/{SANDBOX_LOCATION}/services/{service}",
                "region": SANDBOX_LOCATION,
                "service": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                            "metadata": {"name": service},
                            "spec": {"template": {"metadata": {"name": revision}},
                                     "traffic": [{"revisionName": baseline, "percent": 100},
                                                 {"revisionName": revision, "tag": "canary"}]}},
            },
        },
        "resource": {"type": "cloud_run_revision",
                     "labels": {"project_id": SANDBOX_PROJECT, "service_name": service,
                                "location": SANDBOX_LOCATION, "configuration_name": "", "revision_name": ""}},
        "severity": "NOTICE", "timestamp": stamp, "receiveTimestamp": stamp,
    }


class SandboxErrorLogs:
    """`ErrorLogSource` for the sandbox: the bad revision's 5xx, as the log lines such errors write,
    grouped by the same pattern code the Cloud Logging adapter uses."""

    TEMPLATES = ("upstream request timeout after {ms}ms calling inventory-svc",
                 "database connection refused: pool exhausted ({n} waiting)",
                 "panic: nil pointer dereference in handler /checkout/{id}")

    def __init__(self, services: dict[str, SandboxService], rng: random.Random) -> None:
        self.services = services
        self.rng = rng

    def capture(self, command: CaptureErrorLogs) -> CapturedLogs:
        from actions.error_logs import group

        service = self.services.get(command.service)
        total = service.errors_served.get(command.revision, 0) if service else 0
        messages = []
        for index in range(min(total, command.limit)):
            template = self.TEMPLATES[0 if index % 10 < 6 else (1 if index % 10 < 9 else 2)]
            messages.append(template.format(ms=self.rng.randint(3000, 9000), n=self.rng.randint(5, 90),
                                            id=self.rng.randint(10_000, 99_999)))
        return CapturedLogs(revision=command.revision, total=total, patterns=group(messages, 5))


class SandboxWorld:
    """Moves the simulated world one minute at a time: deploys at their time, then per-revision
    metrics that follow the traffic split the daemon has actually set."""

    def __init__(self, services: list[SandboxService], cloud: SimulatedCloudRun, publish: Callable[[bytes, str], None],
                 seed: int, state_path: str | None, commands: list[tuple[float, str, str, str]] | None = None) -> None:
        self.services = {s.service: s for s in services}
        self.cloud = cloud
        self.publish = publish
        self.seed = seed
        self.state_path = state_path
        # (minute after DEFAULT_START, action, service, principal), in time order: `rollbackd ctl` runs.
        self.commands = sorted(commands or [])
        self._load()
        saved = self.saved_clock()
        if saved is not None:  # a restart: the commands of the minutes already simulated were written
            self.commands = [c for c in self.commands if DEFAULT_START + timedelta(minutes=c[0]) > saved]
        for s in services:
            if not s.deployed:
                self.cloud.ensure_service(s.service, project=SANDBOX_PROJECT, location=SANDBOX_LOCATION)
                if not self.cloud.traffic_of(s.service):
                    self.cloud.set_traffic_by_hand(s.service, {s.baseline: 100})

    def _rng(self, at: datetime, index: int) -> np.random.Generator:
        # One generator per service and minute, from (seed, minute, service): with the replayed
        # history, a restarted sandbox simulates the minutes after a crash exactly as an
        # uninterrupted run would, so their decisions can be compared.
        return np.random.default_rng([self.seed, int(at.timestamp()) // 60, index])

    def minute(self, at: datetime) -> None:
        while self.commands and at >= DEFAULT_START + timedelta(minutes=self.commands[0][0]):
            _, action, service, principal = self.commands.pop(0)
            if self.cloud.find(service, SANDBOX_PROJECT, SANDBOX_LOCATION) is not None:
                self.command(service, action, "sandbox --command", at, principal=principal)
        for index, s in enumerate(self.services.values()):
            if not s.deployed and at >= s.deploy_at:
                known = self.cloud.find(s.service, SANDBOX_PROJECT, SANDBOX_LOCATION)
                if known is None or s.canary not in known.revisions:  # a restart may find it deployed
                    self.cloud.deploy(s.service, s.canary, baseline=s.baseline)
                self.publish(json.dumps(audit_deploy_entry(s.service, s.canary, s.baseline, at)).encode(), "audit")
                s.deployed = True
                continue
            if not s.deployed:
                continue
            percent = self.cloud.traffic_of(s.service).get(s.canary, 0)
            canary, baseline = s.model.minute(at, percent, self._rng(at, index))
            s.history.append([format_rfc3339(at), percent])
            for metrics in (baseline, canary):
                if metrics is None:
                    continue
                metrics = _with_place(metrics)
                s.errors_served[metrics.revision] = s.errors_served.get(metrics.revision, 0) + metrics.errors
                if metrics.revision == s.canary and percent == 0:
                    continue  # no traffic, no points (Cloud Monitoring writes none either)
                self.publish(json.dumps(event_to_json(metrics), sort_keys=True).encode(), "metrics")
        self._save(at)

    def _save(self, at: datetime) -> None:
        if not self.state_path:
            return
        data = {"clock": format_rfc3339(at),
                "services": {n: {"deployed": s.deployed, "errors_served": s.errors_served,
                                 "history": s.history} for n, s in self.services.items()}}
        temporary = self.state_path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(temporary, self.state_path)

    def _load(self) -> None:
        if not self.state_path or not os.path.exists(self.state_path):
            return
        with open(self.state_path, encoding="utf-8") as handle:
            data = json.load(handle)
        for name, saved in data.get("services", {}).items():
            if name in self.services:
                self.services[name].deployed = bool(saved.get("deployed"))
                self.services[name].errors_served = dict(saved.get("errors_served", {}))
        for index, s in enumerate(self.services.values()):
            saved_history = data.get("services", {}).get(s.service, {}).get("history", [])
            for stamp, percent in saved_history:  # rebuild the model's carried-over state
                at = parse_rfc3339(stamp)
                s.model.minute(at, percent, self._rng(at, index))
            s.history = [list(item) for item in saved_history]

    def saved_clock(self) -> datetime | None:
        if not self.state_path or not os.path.exists(self.state_path):
            return None
        with open(self.state_path, encoding="utf-8") as handle:
            value = json.load(handle).get("clock")
        return parse_rfc3339(value) if value else None

    def command(self, service: str, action: str, reason: str, at: datetime, *,
                principal: str = SANDBOX_OPERATOR) -> str:
        """What `rollbackd ctl ACTION SERVICE` does in production: write the command annotation on the
        (simulated) service as `principal`. Returns the command id."""
        import uuid

        from daemon.core.command_annotation import COMMAND_ANNOTATION, encode

        command_id = str(uuid.UUID(int=random.Random(f"{self.seed}/{service}/{action}/{at.isoformat()}").getrandbits(128),
                                   version=4))
        self.cloud.update_annotations(service, {COMMAND_ANNOTATION: encode(command_id, action, reason, at)},
                                      principal=principal, at=at)
        return command_id

    def finished(self, engine: Any) -> bool:
        """Every service deployed and its rollout finished."""
        for name, s in self.services.items():
            state = engine.state_of(name)
            if not s.deployed or state is None or state.rollout is None or state.rollout.status.active:
                return False
        return True


def _with_place(metrics: Any) -> Any:
    from dataclasses import replace

    return replace(metrics, project=SANDBOX_PROJECT, location=SANDBOX_LOCATION)
