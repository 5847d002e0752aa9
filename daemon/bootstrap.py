"""The one place adapters are chosen: live Google Cloud, or the built-in sandbox.

Both build the same `Engine` and `Daemon` loop around the same decision core; only the traffic
controller, metrics source, event source, notifier, error-log source and journal differ.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
from datetime import timedelta
from typing import Any, Callable, TextIO

from daemon.adapters.journal import FileJournal, read_lines
from daemon.clock import SystemClock, VirtualClock
from daemon.dispatch import Dispatcher
from daemon.engine import Engine, ListJournal
from daemon.runner import Daemon, PolicyReloader
from daemon.telemetry import PrometheusTelemetry

log = logging.getLogger("rollbackd")
SANDBOX_PRINCIPAL = "rollbackd@rollbackd-sandbox.iam.gserviceaccount.com"


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
                err: TextIO = sys.stderr, install_signals: bool = True) -> int:
    from daemon.sandbox import DEFAULT_START, SandboxErrorLogs, SandboxWorld, load_services
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

    engine = Engine(policy=reloader, traffic=cloud, notifier=LogNotifier(sink=notes.append),
                    error_logs=SandboxErrorLogs({s.service: s for s in services}, rng), journal=journal,
                    telemetry=telemetry, clock=clock, on_decision=emit)
    dispatcher = Dispatcher(engine, clock=clock, traffic=cloud, own_principals=frozenset({SANDBOX_PRINCIPAL}),
                            managed=lambda p, l, s: is_managed(s, cloud.get_service(p, l, s).labels),
                            default_project="rollbackd-sandbox", default_location="us-central1")
    sources: list[Any] = []
    publish: Callable[[bytes], None] = lambda data: dispatcher.handle(data)  # in-process bus
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        publish, source = _emulator_bus(dispatcher, clock, rng)
        sources.append(source)
    world = SandboxWorld(services, cloud, publish, seed, world_path)
    saved = world.saved_clock()
    if journal_path and os.path.exists(journal_path):
        count, _ = recover_engine(engine, read_lines(journal_path))
        # Resume after the world's last complete minute, not after the last journaled event: a crash
        # in the middle of a minute must simulate that minute again (its events already journaled
        # are duplicates, which change nothing), or its remaining deploys and metrics are lost.
        resume_at = saved if saved is not None else DEFAULT_START
        clock.advance_to(resume_at)
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


def _emulator_bus(dispatcher: Dispatcher, clock: Any, rng: random.Random) -> tuple[Callable[[bytes], None], Any]:
    from google.cloud import pubsub_v1

    from daemon.adapters.pubsub_source import PubSubEventSource, ensure_subscription
    from daemon.sandbox import SUBSCRIPTION, TOPIC

    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
    subscriber = pubsub_v1.SubscriberClient()
    ensure_subscription(publisher, subscriber, TOPIC, SUBSCRIPTION, ordering=True)

    def publish(data: bytes) -> None:
        import json as _json

        try:
            key = _json.loads(data).get("service") or _json.loads(data)["resource"]["labels"]["service_name"]
        except (ValueError, KeyError, TypeError):
            key = ""
        publisher.publish(TOPIC, data, ordering_key=key).result(timeout=30)

    source = PubSubEventSource(pubsub_v1.SubscriberClient, SUBSCRIPTION, handle=dispatcher.handle,
                               clock=SystemClock(), rng=rng)
    return publish, source


def _summary(engine: Engine, out: TextIO) -> None:
    out.write("\nsummary:\n")
    for name, state in sorted(engine.states.items()):
        rollout = state.rollout
        if rollout is None:
            continue
        out.write(f"  {name:<12} {rollout.status.value:<12} canary {rollout.canary} at {rollout.canary_percent}%"
                  f" — {rollout.last_decision}\n")
    out.flush()
