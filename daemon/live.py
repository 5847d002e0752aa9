"""`rollbackd run` on Google Cloud, and `rollbackd status`.

Wires the real google-cloud clients (Cloud Run Admin API v2, Cloud Monitoring v3, Cloud Logging v2,
Pub/Sub) around the same Engine and Daemon loop the sandbox uses. On start it restores every managed
service's rollout from its `rollbackd.dev/*` annotations, backfills the evidence from Cloud
Monitoring since the rollout began, and stands down where a human changed traffic meanwhile.
"""
from __future__ import annotations

import json
import logging
import random
import sys
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
        key = (project, location, service)
        policy = self.policy()
        cached = self._cache.get(key)
        if cached and cached[1] is policy and self.clock.now() - cached[0] < self.ttl:
            return cached[2]
        view = self.traffic.get_service(project, location, service)
        result = location in self.locations and bool(self.predicate(service, view.labels))
        self._cache[key] = (self.clock.now(), policy, result)
        return result


def build_traffic(settings: Settings, clients: LiveClients, clock: Any, rng: random.Random, telemetry: Any,
                  managed: Any = None) -> Any:
    from actions.cloud_run import CloudRunTrafficController
    from actions.redacting_traffic import RedactingTrafficController

    controller = RedactingTrafficController(CloudRunTrafficController(
        clients.services, clients.revisions, clock=clock, rng=rng, managed_label=settings.label,
        managed=managed if managed is not None else managed_predicate(settings),
        projects_locations=[(settings.project, loc) for loc in settings.locations],
        on_error=telemetry.api_error))
    if settings.dry_run:
        from actions.dry_run import DryRunTrafficController
        return DryRunTrafficController(controller)
    return controller


def run_live(settings: Settings, *, clients: LiveClients | None = None, stop_after: datetime | None = None,
             out: TextIO | None = None, clock: Any = None, install_signals: bool = True,
             on_started: Any = None) -> int:
    from google.cloud import pubsub_v1

    from actions.error_logs import CloudLoggingErrorLogs
    from actions.notify import LogNotifier, PubSubNotifier
    from daemon.adapters.decision_log import DecisionLog
    from daemon.adapters.http_server import HealthServer
    from daemon.adapters.journal import FileJournal
    from daemon.adapters.monitoring import MetricsPoller, MonitoringCollector, Target
    from daemon.adapters.pubsub_source import PubSubEventSource
    from daemon.bootstrap import _install_signals
    from daemon.dispatch import Dispatcher
    from daemon.engine import Engine
    from daemon.runner import Daemon, PolicyReloader
    from daemon.telemetry import PrometheusTelemetry

    clock = clock or SystemClock()
    rng = random.Random()
    telemetry = PrometheusTelemetry()
    decision_log = DecisionLog(out, project=settings.project)
    reloader = PolicyReloader(settings.policy or None, telemetry=telemetry,
                              on_error=lambda message: decision_log.error(message))
    clients = clients or LiveClients(settings)
    is_managed = managed_predicate(settings, reloader)  # reads the current policy on every check
    traffic = build_traffic(settings, clients, clock, rng, telemetry, managed=is_managed)
    if settings.notify_topic:
        notifier: Any = PubSubNotifier(pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)),
            settings.notify_topic_path, clock=clock, rng=rng, on_error=telemetry.api_error)
    else:
        # The record carries its own "message": pass it once (twice was a TypeError that nacked the
        # Pub/Sub message after its decision had been acted on, so it came back again and again).
        notifier = LogNotifier(sink=lambda record: decision_log.info(
            record["message"], **{k: v for k, v in record.items() if k != "message"}))
    error_logs = CloudLoggingErrorLogs(clients.logging, clock=clock, rng=rng, on_error=telemetry.api_error)
    journal = FileJournal(settings.journal, max_bytes=settings.journal_max_mb * 1024 * 1024)
    engine = Engine(policy=reloader, traffic=traffic, notifier=notifier, error_logs=error_logs, journal=journal,
                    telemetry=telemetry, clock=clock, dry_run=settings.dry_run,
                    actions_enabled=not settings.kill_switch, on_decision=decision_log.decision)
    managed = ManagedServices(is_managed, traffic, clock=clock, locations=settings.locations, policy=reloader)
    dispatcher = Dispatcher(engine, clock=clock, traffic=traffic, own_principals=frozenset({settings.principal}),
                            managed=managed, accept_metrics=settings.metrics_mode in ("pubsub", "both"),
                            default_project=settings.project,
                            default_location=settings.locations[0] if len(settings.locations) == 1 else "")
    collector = MonitoringCollector(clients.monitoring, project=settings.project, clock=clock, rng=rng,
                                    on_error=telemetry.api_error, settle_s=settings.monitoring_settle)
    poller = MetricsPoller(collector)
    restore(engine, traffic, decision_log)

    def collect(at: datetime) -> None:
        for adopted in resync(engine, traffic, decision_log):
            poller.forget(Target(adopted.service, adopted.location, adopted.canary, adopted.baseline))
        if settings.metrics_mode == "pubsub":
            return
        active = [(Target(r.service, r.location, r.canary, r.baseline), r.started_at)
                  for r in engine.active_rollouts() if r.phase_index >= 0]
        result = poller.poll(active)
        for metrics in result.metrics:
            engine.submit(metrics, received_at=clock.now())
        if not result.ok:  # never healthy: the minutes stay missing and the core holds
            decision_log.error(f"Cloud Monitoring collection failed: {result.error}", code=result.error_code)

    # Wall clock for the source: its probes and reconnect backoff are network business, and a
    # running VirtualClock (tests, --speed) would turn a 15 s probe interval into a busy loop.
    source = PubSubEventSource(pubsub_v1.SubscriberClient, settings.subscription_path, handle=dispatcher.handle,
                               clock=SystemClock(), rng=rng, on_error=telemetry.api_error)
    daemon = Daemon(engine=engine, clock=clock, tick_interval_s=settings.tick_interval, sources=[source],
                    before_tick=[collect], policy_reloader=reloader, stop_after=stop_after)
    health = HealthServer(settings.http_port, registry=telemetry.registry, ready=daemon.ready)
    health.start()
    if install_signals:
        _install_signals(daemon, reloader)
    if on_started is not None:
        on_started(daemon, engine, health)
    decision_log.info("rollbackd started", project=settings.project, locations=list(settings.locations),
                      dry_run=settings.dry_run, kill_switch=settings.kill_switch, http_port=health.port)
    try:
        daemon.run()
    finally:
        health.stop()
        journal.close()
    return 0


def restore(engine: Any, traffic: Any, decision_log: Any) -> int:
    """Resume every managed service's rollout from its annotations. A service whose traffic no
    longer matches what rollbackd last set was changed by a human while we were away: stand down."""
    from actions.base import ActionError
    from daemon.core.events import TrafficChanged
    from daemon.core.persist import AnnotationError, service_state_from_annotations

    try:
        views = traffic.list_services()
    except ActionError as error:
        decision_log.error(f"cannot list managed services on start: {error}")
        return 0
    restored = 0
    for view in views:
        policy = engine.policy_for(view.name)
        try:
            state = service_state_from_annotations(view.name, view.project, view.location, view.annotations, policy)
        except AnnotationError as error:
            decision_log.error(str(error), service=view.name)
            continue
        if state is None or state.rollout is None:
            continue
        engine.states[view.name] = state
        engine.labels[view.name] = dict(view.labels)
        restored += 1
        rollout = state.rollout
        observed = view.percent_of(rollout.canary)
        if rollout.status.active and observed != rollout.canary_percent:
            engine.submit(TrafficChanged(time=engine.clock.now(), service=view.name, canary_percent=observed,
                                         detail="found on start-up"))
    return restored


def resync(engine: Any, traffic: Any, decision_log: Any) -> list[Any]:
    """Adopt rollouts this replica does not know, or knows in an older form, from the annotations
    (another replica started or finished them, or stopped). Decisions are deterministic functions of
    the same Cloud Monitoring data, so replicas agree; the etag guard and idempotent updates make
    sure a traffic change is applied once even when two replicas decide it."""
    from actions.base import ActionError
    from daemon.core.persist import AnnotationError, service_state_from_annotations

    try:
        views = traffic.list_services()
    except ActionError as error:
        decision_log.error(f"cannot list managed services: {error}")
        return []
    adopted: list[Any] = []
    for view in views:
        try:
            found = service_state_from_annotations(view.name, view.project, view.location, view.annotations,
                                                   engine.policy_for(view.name))
        except AnnotationError:
            continue
        if found is None or found.rollout is None:
            continue
        with engine._lock:
            local = engine.states.get(view.name)
            rollout = local.rollout if local is not None else None
            stale = (rollout is None
                     or rollout.rollout_id != found.rollout.rollout_id
                     or (rollout.status.active and not found.rollout.status.active)
                     or found.rollout.phase_index > rollout.phase_index)
            if not stale:
                continue
            if rollout is None and not found.rollout.status.active:
                continue  # a finished rollout we never ran: nothing to do
            engine.states[view.name] = found
            engine.labels[view.name] = dict(view.labels)
            adopted.append(found.rollout)
    return adopted


def print_status(settings: Settings, out: TextIO, *, as_json: bool = False, clients: LiveClients | None = None) -> int:
    """Raises `policies.loader.PolicyError` when the configured policy (its managed selectors say
    which services to show) cannot be loaded."""
    from actions.redact import redact_json
    from daemon.core.commands import ANNOTATION_PREFIX as P
    from daemon.telemetry import NullTelemetry
    from daemon.terminal_text import printable
    from policies import load_default_policy
    from policies.loader import load_policy

    policy = load_policy(settings.policy) if settings.policy else load_default_policy()
    is_managed = managed_predicate(settings, lambda: policy)
    clients = clients or LiveClients(settings)
    traffic = build_traffic(settings, clients, SystemClock(), random.Random(), NullTelemetry(), managed=is_managed)
    rows = []
    for view in sorted(traffic.list_services(), key=lambda v: v.name):
        a = view.annotations
        rows.append({
            "service": view.name, "location": view.location,
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
        out.write(f"{t['service']:<20} {t['status']:<12} phase {t['phase'] or '-':<3} "
                  f"canary {t['canary'] or '-'} / baseline {t['baseline'] or '-'}  [{split}]\n")
        if row["last_decision"]:
            out.write(f"{'':<20} last: {t['last_decision']}\n")
    return 0
