"""The composition root: the one place adapters are chosen and the only code that builds an `Engine`.

Every mode builds the same `Engine` around the same decision core through `build(mode, ...)`; only
the adapters differ (traffic controller, metrics source, event source, notifier, error-log source,
journal, telemetry, clock):

- live (`run_live`): Cloud Run, Cloud Monitoring, Cloud Logging and Pub/Sub (`daemon.live` has the
  clients and the restore/resync pieces), a file journal, Prometheus, the system clock;
- sandbox (`run_sandbox`): the simulated Cloud Run and traffic (`daemon.sandbox`), an in-process bus
  or the Pub/Sub emulator, a virtual clock running at `--speed`;
- replay and backtest: `engine_factory("replay")` is handed to `simulations.replay`, which drives a
  simulated Cloud Run on a virtual clock (simulations/ sits below this module and never imports it);
- benchmark: `benchmarks/memory_cycles.py`.

Called by the CLI (`daemon.cli_run`, `daemon.cli`, `daemon.cli_tools`) and by tests and benchmarks.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import random
import signal
import sys
import threading
from datetime import datetime
from typing import Any, Callable, Literal, TextIO, get_args

from daemon.adapters.journal import FileJournal, read_lines
from daemon.clock import SystemClock, VirtualClock
from daemon.core.service_id import several_locations
from daemon.dispatch import Dispatcher
from daemon.engine import Engine
from daemon.live import LiveClients, ManagedServices, build_traffic, managed_predicate, restore, resync
from daemon.ports import (EngineFactory, ErrorLogSource, Journal, ListJournal, Notifier, TrafficController)
from daemon.runner import Daemon, PolicyReloader
from daemon.settings import Settings
from daemon.telemetry import PrometheusTelemetry

log = logging.getLogger("rollbackd")
SANDBOX_PRINCIPAL = "rollbackd@rollbackd-sandbox.iam.gserviceaccount.com"

Mode = Literal["live", "sandbox", "replay", "backtest", "benchmark"]
MODES: tuple[str, ...] = get_args(Mode)
# Modes that act on a world (real or simulated) must be given every adapter; the others run on a
# simulated Cloud Run with nothing to notify, and default to no journal and no metrics.
_ACTING = ("live", "sandbox")


def build(mode: Mode, *, policy: Callable[[], Any], traffic: TrafficController, clock: Any,
          notifier: Notifier | None = None, error_logs: ErrorLogSource | None = None,
          journal: Journal | None = None, telemetry: Any = None, **options: Any) -> Engine:
    """The Engine for `mode`, around the adapters that mode chose. `options` are the engine's
    (dry_run, actions_enabled, on_decision, on_action, labels_of, journal_evaluations)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    if mode in _ACTING:
        missing = [name for name, adapter in (("notifier", notifier), ("error_logs", error_logs),
                                              ("journal", journal), ("telemetry", telemetry)) if adapter is None]
        if missing:
            raise TypeError(f"a {mode} engine needs {', '.join(missing)}")
    return Engine(policy=policy, traffic=traffic, notifier=notifier, error_logs=error_logs, journal=journal,
                  telemetry=telemetry, clock=clock, **options)


def engine_factory(mode: Mode) -> EngineFactory:
    """`build` for one mode, for code below this layer that makes its engine when it needs it
    (`simulations.replay.Replayer` builds one on the recording's first timestamp)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    return functools.partial(build, mode)


def _install_signals(daemon: Daemon, reloader: PolicyReloader) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: reloader.request())


def _printer(out: TextIO, as_json: bool) -> Callable[[Any], None]:
    from simulations.replay import decision_line, timeline_line

    lock = threading.Lock()

    def emit(decision: Any) -> None:
        text = decision_line(decision, "sandbox") if as_json else timeline_line(decision)
        with lock:
            out.write(text + "\n")
            out.flush()
    return emit


# --- sandbox --------------------------------------------------------------------------------------

def run_sandbox(*, scenario: str, speed: float, state_dir: str | None, as_json: bool, metrics_port: int | None,
                policy_path: str | None, keep_running: bool, seed: int, out: TextIO = sys.stdout,
                err: TextIO = sys.stderr, install_signals: bool = True,
                commands: list[tuple[float, str, str, str]] | None = None) -> int:
    """`commands`: (minute after the start, action, service, principal), written as command
    annotations on the simulated Cloud Run at that minute, as `rollbackd ctl` does in production."""
    from daemon.sandbox import (DEFAULT_START, SANDBOX_LOCATION, SANDBOX_PROJECT, SandboxErrorLogs, SandboxWorld,
                                load_services)
    from simulations.replay import recover_engine
    from simulations.sandbox_cloud import SimulatedCloudRun

    if state_dir:
        os.makedirs(state_dir, exist_ok=True)
    journal_path = os.path.join(state_dir, "journal.jsonl") if state_dir else None
    from policies.managed import ManagedPredicate

    telemetry = PrometheusTelemetry()
    reloader = PolicyReloader(policy_path, telemetry=telemetry, on_error=lambda m: print(f"rollbackd: {m}", file=err))
    # The live daemon's rule (label rollbackd=enabled, the current policy's selectors, opt-out label).
    is_managed = ManagedPredicate(policy=reloader)
    cloud = SimulatedCloudRun(path=os.path.join(state_dir, "cloud.json") if state_dir else None, managed=is_managed)
    services = load_services(scenario, DEFAULT_START)
    world_path = os.path.join(state_dir, "world.json") if state_dir else None
    clock = VirtualClock(DEFAULT_START)  # stopped while the world is built; started just before run()
    journal = FileJournal(journal_path) if journal_path else ListJournal()
    rng = random.Random(seed)
    emit = _printer(out, as_json)
    notes: list[dict[str, Any]] = []
    from actions.notify import LogNotifier

    engine = build("sandbox", policy=reloader, traffic=cloud, notifier=LogNotifier(sink=notes.append),
                   error_logs=SandboxErrorLogs({s.service: s for s in services}, rng), journal=journal,
                   telemetry=telemetry, clock=clock, on_decision=emit,
                   default_project=SANDBOX_PROJECT, default_location=SANDBOX_LOCATION)
    dispatcher = Dispatcher(engine, clock=clock, traffic=cloud, own_principals=frozenset({SANDBOX_PRINCIPAL}),
                            managed=lambda p, l, s: is_managed(s, cloud.get_service(p, l, s).labels),
                            default_project=SANDBOX_PROJECT, default_location=SANDBOX_LOCATION)
    sources: list[Any] = []
    # In-process bus: each message is handed in with its source, as each subscription does live.
    publish: Callable[[bytes, str], None] = lambda data, source: dispatcher.handle(data, source=source)
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        resuming = bool(journal_path and os.path.exists(journal_path))
        publish, sources = _emulator_bus(dispatcher, clock, rng, fresh=not resuming)
    # The simulated Cloud Run publishes the audit entry of a person's update, as the sink would.
    cloud.audit_sink = lambda entry: publish(json.dumps(entry, sort_keys=True).encode(), "audit")
    world = SandboxWorld(services, cloud, publish, seed, world_path, commands=commands or [])
    saved = world.saved_clock()
    if journal_path and os.path.exists(journal_path):
        count, _ = recover_engine(engine, read_lines(journal_path))
        # Resume after the world's last complete minute, not after the last journaled event: a crash
        # in the middle of a minute must simulate that minute again (its events already journaled
        # are duplicates, which change nothing), or its remaining deploys and metrics are lost.
        resume_at = saved if saved is not None else DEFAULT_START
        clock.advance_to(resume_at)
        # Then the live restore path: the services' own records win over what the journal replayed
        # (the same `Resync` events a restarted live daemon sends), so `make run` and the sandbox
        # restart tests exercise what production does.
        engine.read_back(cloud.list_services(), "restore")
        print(f"rollbackd: resumed from {state_dir}: {count} journaled events, virtual time "
              f"{resume_at.isoformat()}", file=err)
    elif saved is not None:
        clock.advance_to(saved)

    def stop_when_done(at: Any) -> None:
        if not keep_running and world.finished(engine):
            daemon.stop()

    daemon = Daemon(engine=engine, clock=clock, tick_interval_s=60, sources=sources,
                    before_tick=[world.minute], after_tick=[stop_when_done], policy_reloader=reloader)
    health = None
    if metrics_port is not None:
        from daemon.adapters.http_server import HealthServer

        health = HealthServer(metrics_port, registry=telemetry.registry, ready=daemon.ready, host="127.0.0.1")
        health.start()
        print(f"rollbackd: /metrics, /healthz, /readyz on 127.0.0.1:{health.port}", file=err)
    if install_signals:
        _install_signals(daemon, reloader)
    if not as_json:
        names = ", ".join(f"{s.service} ({s.canary} vs {s.baseline})" for s in services)
        print(f"rollbackd sandbox: scenario '{scenario}' at {speed:g}x: {names}", file=err)
    clock.set_speed(speed)
    try:
        daemon.run()
    finally:
        if health is not None:
            health.stop()
        if isinstance(journal, FileJournal):
            journal.close()
    if not as_json:
        _summary(engine, out)
    return 0


def _emulator_bus(dispatcher: Dispatcher, clock: Any, rng: random.Random, *,
                  fresh: bool) -> tuple[Callable[[bytes, str], None], list[Any]]:
    """The sandbox's events through the Pub/Sub emulator, one topic and subscription per source.
    `fresh`: a new sandbox world (not resuming a state dir) starts from empty subscriptions, since
    what an earlier world left unacknowledged (a killed run's deploys and metrics at the same virtual
    times) belongs to another world. A resumed world keeps them: they are its own redeliveries."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    from daemon.adapters.pubsub_source import PubSubEventSource, ensure_subscription
    from daemon.sandbox import SUBSCRIPTIONS, TOPICS

    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
    subscriber = pubsub_v1.SubscriberClient()
    for source, topic in TOPICS.items():
        if fresh:
            try:
                subscriber.delete_subscription(subscription=SUBSCRIPTIONS[source])
            except gexc.NotFound:
                pass
        ensure_subscription(publisher, subscriber, topic, SUBSCRIPTIONS[source], ordering=True)

    def publish(data: bytes, source: str) -> None:
        import json as _json

        try:
            key = _json.loads(data).get("service") or _json.loads(data)["resource"]["labels"]["service_name"]
        except (ValueError, KeyError, TypeError):
            key = ""
        publisher.publish(TOPICS[source], data, ordering_key=key).result(timeout=30)

    sources = [PubSubEventSource(pubsub_v1.SubscriberClient, path, handle=dispatcher.source(name),
                                 clock=SystemClock(), rng=rng) for name, path in SUBSCRIPTIONS.items()]
    return publish, sources


def _summary(engine: Engine, out: TextIO) -> None:
    out.write("\nsummary:\n")
    many = several_locations(engine.states)
    for key, state in sorted(engine.states.items()):
        rollout = state.rollout
        if rollout is None:
            continue
        out.write(f"  {key.label(with_location=many):<12} {rollout.status.value:<12} "
                  f"canary {rollout.canary} at {rollout.canary_percent}%"
                  f" — {rollout.last_decision}\n")
    out.flush()


# --- live -----------------------------------------------------------------------------------------

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
    error_logs = CloudLoggingErrorLogs(clients.logging, clock=clock, rng=rng, on_error=telemetry.api_error,
                                       log_view=settings.log_view)
    journal = FileJournal(settings.journal, max_bytes=settings.journal_max_mb * 1024 * 1024)
    # One location managed: an event that does not name one (a command from an older ctl) is there.
    only_location = settings.locations[0] if len(settings.locations) == 1 else ""
    engine = build("live", policy=reloader, traffic=traffic, notifier=notifier, error_logs=error_logs,
                   journal=journal, telemetry=telemetry, clock=clock, dry_run=settings.dry_run,
                   default_project=settings.project, default_location=only_location,
                   actions_enabled=not settings.kill_switch, on_decision=decision_log.decision,
                   on_action=lambda record: decision_log.info(
                       f"{record['service']}: {record['command']} {record['outcome']}",
                       **{k: v for k, v in record.items() if k != "type"}, record_type="action"))
    managed = ManagedServices(is_managed, traffic, clock=clock, locations=settings.locations, policy=reloader)
    dispatcher = Dispatcher(engine, clock=clock, traffic=traffic, own_principals=frozenset({settings.principal}),
                            managed=managed, accept_metrics=settings.metrics_mode in ("pubsub", "both"),
                            default_project=settings.project, default_location=only_location)
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
    # One source per subscription; each accepts only its own format (a forged event published on
    # another topic is refused with a reason, docs/security.md).
    sources = [PubSubEventSource(pubsub_v1.SubscriberClient, path, handle=dispatcher.source(name),
                                 clock=SystemClock(), rng=rng, on_error=telemetry.api_error)
               for name, path in settings.subscriptions.items()]
    daemon = Daemon(engine=engine, clock=clock, tick_interval_s=settings.tick_interval, sources=sources,
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
