"""The live mode's pieces for `daemon.bootstrap.run_live`, and `rollbackd status`.

The real google-cloud clients (Cloud Run Admin API v2, Cloud Monitoring v3, Cloud Logging v2), the
managed-service predicate, the Cloud Run traffic controller (dry-run wrapped), and the start-up
`restore` and per-tick `resync` that bring every managed service's rollout back from its
`rollbackd.dev/*` annotations. `daemon.bootstrap.run_live` wires them around the same Engine and
Daemon loop the sandbox uses.
"""
from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence, TextIO

from daemon.clock import SystemClock
from daemon.settings import Settings

log = logging.getLogger("rollbackd.live")


class LiveClients:
    """The Google clients, real endpoints or (for tests and private endpoints) plain gRPC ones."""

    def __init__(self, settings: Settings) -> None:
        import grpc
        from google.cloud import monitoring_v3, run_v2
        from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client

        if settings.run_endpoint:
            from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcTransport
            from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport
            channel = grpc.insecure_channel(settings.run_endpoint)
            self.services = run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel))
            self.revisions = run_v2.RevisionsClient(transport=RevisionsGrpcTransport(channel=channel))
        else:
            self.services = run_v2.ServicesClient()
            self.revisions = run_v2.RevisionsClient()
        if settings.monitoring_endpoint:
            from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport
            self.monitoring = monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(
                channel=grpc.insecure_channel(settings.monitoring_endpoint)))
        else:
            self.monitoring = monitoring_v3.MetricServiceClient()
        if settings.logging_endpoint:
            from google.cloud.logging_v2.services.logging_service_v2.transports import LoggingServiceV2GrpcTransport
            self.logging = LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(
                channel=grpc.insecure_channel(settings.logging_endpoint)))
        else:
            self.logging = LoggingServiceV2Client()


def managed_predicate(settings: Settings, policy: Any = None) -> Any:
    """The one managed-service predicate (`policies.managed`): the settings' label, the opt-out
    label, and the selectors of the policy `policy()` returns at the time of each check."""
    from policies.managed import ManagedPredicate

    return ManagedPredicate(settings.label, policy)


class ManagedServices:
    """The dispatcher's `managed(project, location, service)`: is a deploy's service one to roll out?

    Same predicate as the traffic controller's, over the service's labels as Cloud Run has them.
    Cached per service for `ttl` (labels change rarely, and every deploy would otherwise cost a
    GetService); an entry counts only under the policy object it was decided with, so a reloaded
    policy (a new object from `PolicyReloader`) decides again at once."""

    def __init__(self, predicate: Any, traffic: Any, *, clock: Any, locations: Sequence[str],
                 policy: Callable[[], Any], ttl: timedelta = timedelta(minutes=5)) -> None:
        self.predicate = predicate
        self.traffic = traffic
        self.clock = clock
        self.locations = tuple(locations)
        self.policy = policy
        self.ttl = ttl
        self._cache: dict[tuple[str, str, str], tuple[datetime, Any, bool]] = {}

    def __call__(self, project: str, location: str, service: str) -> bool:
        if location not in self.locations:
            return False  # a region rollbackd does not watch: no need to read the service
        key = (project, location, service)
        policy = self.policy()
        cached = self._cache.get(key)
        if cached and cached[1] is policy and self.clock.now() - cached[0] < self.ttl:
            return cached[2]
        view = self.traffic.get_service(project, location, service)
        result = bool(self.predicate(service, view.labels))
        self._cache[key] = (self.clock.now(), policy, result)
        return result


def build_traffic(settings: Settings, clients: LiveClients, clock: Any, rng: random.Random, telemetry: Any,
                  managed: Any = None) -> Any:
    from actions.cloud_run import CloudRunTrafficController

    controller = CloudRunTrafficController(
        clients.services, clients.revisions, clock=clock, rng=rng, managed_label=settings.label,
        managed=managed if managed is not None else managed_predicate(settings),
        projects_locations=[(settings.project, loc) for loc in settings.locations],
        on_error=telemetry.api_error)
    if settings.dry_run:
        from actions.dry_run import DryRunTrafficController
        return DryRunTrafficController(controller)
    return controller


def restore(engine: Any, traffic: Any, decision_log: Any) -> int:
    """Resume every managed service's rollout from its annotations (the core's `Resync` event,
    origin "restore"). A service whose traffic no longer matches what rollbackd last set was changed
    by a human while we were away: the core stands down."""
    from daemon.ports import ActionError

    try:
        views = traffic.list_services()
    except ActionError as error:
        decision_log.error(f"cannot list managed services on start: {error}")
        return 0
    engine.read_back(views, "restore")
    return sum(1 for state in engine.states.values() if state.rollout is not None)


def resync(engine: Any, traffic: Any, decision_log: Any) -> list[Any]:
    """Adopt what other replicas wrote on the services (the core's `Resync` event, origin "resync"):
    a pause, a halt, a promotion, a new rollout. The etag guard and the record check on every write
    make sure a replica never overwrites a record it did not know. Returns the rollouts whose
    evidence must be backfilled from Cloud Monitoring."""
    from daemon.ports import ActionError

    try:
        views = traffic.list_services()
    except ActionError as error:
        decision_log.error(f"cannot list managed services: {error}")
        return []
    return engine.read_back(views, "resync")


def print_status(settings: Settings, out: TextIO, *, as_json: bool = False, clients: LiveClients | None = None,
                 service: str = "", region: str = "", project: str = "", err: TextIO | None = None) -> int:
    """The managed services' rollouts, read from their annotations. `region` and `project` narrow the
    services read (a region need not be one the daemon manages: status only reads); `service` shows
    one, by name or resource name. A name managed in several regions is not guessed: the regions are
    listed on `err` and the exit code is 2. Raises `policies.loader.PolicyError` when the configured
    policy (its managed selectors say which services to show) cannot be loaded."""
    from daemon.core.redact import redact_json
    from daemon.core.commands import ANNOTATION_PREFIX as P
    from daemon.core.service_id import ServiceId, several_locations
    from daemon.telemetry import NullTelemetry
    from daemon.terminal_text import printable
    from policies import load_default_policy
    from policies.loader import load_policy

    err = err or out
    if service:
        try:
            wanted = ServiceId.parse(service, project=project, location=region)
        except ValueError as error:
            err.write(f"rollbackd status: {error}\n")
            return 2
        project, region = wanted.project or project, wanted.location or region
    if project or region:
        settings = settings.model_copy(update={"project": project or settings.project,
                                               "locations": (region,) if region else settings.locations})
    policy = load_policy(settings.policy) if settings.policy else load_default_policy()
    is_managed = managed_predicate(settings, lambda: policy)
    clients = clients or LiveClients(settings)
    traffic = build_traffic(settings, clients, SystemClock(), random.Random(), NullTelemetry(), managed=is_managed)
    views = sorted(traffic.list_services(), key=lambda v: (v.name, v.location, v.project))
    if service:
        views = [v for v in views if v.name == wanted.name]
        if len(views) > 1:
            places = ", ".join(str(ServiceId(v.project, v.location, v.name)) for v in views)
            err.write(f"rollbackd status: {wanted.name} is managed in {len(views)} locations ({places}); "
                      f"name one with --region\n")
            return 2
        if not views:
            err.write(f"rollbackd status: no managed service {service} in {settings.project} "
                      f"({', '.join(settings.locations)})\n")
            return 1
    many = several_locations(ServiceId(v.project, v.location, v.name) for v in views)
    rows = []
    for view in views:
        a = view.annotations
        rows.append({
            "service": view.name, "location": view.location, "project": view.project,
            "status": a.get(f"{P}status", "idle"), "phase": a.get(f"{P}phase", ""),
            "canary": a.get(f"{P}canary", ""), "baseline": a.get(f"{P}baseline", ""),
            "traffic": {t.revision: t.percent for t in view.traffic if t.percent},
            "last_decision": a.get(f"{P}last-decision", ""),
        })
    if as_json:
        for row in rows:
            out.write(json.dumps(redact_json(row), sort_keys=True) + "\n")  # JSON escapes control characters
        return 0
    if not rows:
        out.write(f"no managed services ({is_managed.describe()}) in {settings.project}\n")
        return 0
    for row in rows:
        # Annotations are anybody's text: no terminal escape sequence or credential is printed as is.
        t = {k: printable(v) for k, v in row.items() if isinstance(v, str)}
        split = ", ".join(f"{printable(rev)} {pct}%" for rev, pct in row["traffic"].items())
        # Same-named services in several regions: each row names its region.
        name = f"{t['service']} ({t['location']})" if many else t["service"]
        out.write(f"{name:<20} {t['status']:<12} phase {t['phase'] or '-':<3} "
                  f"canary {t['canary'] or '-'} / baseline {t['baseline'] or '-'}  [{split}]\n")
        if row["last_decision"]:
            out.write(f"{'':<20} last: {t['last_decision']}\n")
    return 0
