"""Harness for running the live daemon end to end against the fakes (tests, benchmarks, reliability).

The daemon under test is the production `daemon.bootstrap.run_live` with the real google-cloud clients:
Cloud Run, Monitoring and Logging go to the in-process gRPC fakes (through the `*_endpoint`
settings), Pub/Sub to the real emulator (PUBSUB_EMULATOR_HOST). Only the clock is virtual, so a
rollout with 2-minute phases takes seconds.

Building blocks (each usable on its own):
- `Fakes(clock)`: the three gRPC fakes, started and stopped together; `add_managed_service`,
  `deploy_canary` set up a service the way gcloud would.
- `Topics.create(prefix)`: a fresh events topic + subscription and notification topic + subscription
  on the emulator (names are unique: the emulator lives for the whole session).
- `live_settings(...)`: `Settings` pointing at the fakes and topics; `write_config` turns them into a
  YAML file for `rollbackd run --config` / `rollbackd status --config`.
- `Publisher`: `publish_deploy` / `publish_metrics` / `publish_json` on the emulator, ordered by service.
- From `live_traffic` (re-exported): `audit_replace_service(...)`, a v1 ReplaceService audit entry
  (gcp-formats.md example (a)); `TrafficFeeder`, per-revision metrics every virtual minute that
  follow the Cloud Run fake's CURRENT split, into the Monitoring fake (`monitoring_sink`) or as
  native `metrics` events (`pubsub_sink`).
- `LiveDaemon`: `run_live` in a thread (install_signals=False), with its decision log captured,
  `engine`/`daemon`/`health` handles, `/metrics` scraping and `stop()`.
- `LiveProcess`: the daemon in a subprocess: with a `SharedClock`, `run_live` on the test's virtual
  time (`python -m tests.integration.live_harness run`, for SIGKILL/restart trials); without one,
  the real `rollbackd run --config` on the wall clock. `run_cli` runs any `rollbackd` command.

Virtual time across processes: `SharedClock.spec()` gives (start, speed, monotonic anchor); since
`time.monotonic()` is the system-wide CLOCK_MONOTONIC on Linux, a subprocess rebuilding the clock
from the spec reads the same virtual time as the test (to within microseconds).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from daemon.clock import VirtualClock
from daemon.core.codec import event_to_json
from daemon.core.events import Metrics
from daemon.core.timefmt import format_rfc3339, parse_rfc3339
from daemon.settings import Settings
from tests.integration.live_traffic import (DEPLOYER, LOCATION, PROJECT, RevisionProfile, TrafficFeeder,
                                            audit_replace_service, latency_histogram, monitoring_sink,
                                            pubsub_sink)

REPO = Path(__file__).resolve().parents[2]
SHORT_POLICY = str(Path(__file__).resolve().parent / "policies" / "short.yaml")
PRINCIPAL = "rollbackd@shop-e2e.iam.gserviceaccount.com"
# A Tuesday afternoon: outside any weekend freeze a policy might carry.
START = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
MANAGED = {"rollbackd": "enabled"}
_names = itertools.count()


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str = "condition",
               interval_s: float = 0.05) -> Any:
    """Poll `condition` (wall time) until it returns something truthy; AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


# --- clock ------------------------------------------------------------------------------------------
class SharedClock(VirtualClock):
    """A running VirtualClock that another process can rebuild from `spec()` (see module doc)."""

    def __init__(self, start: datetime = START, speed: float = 60.0, anchor: float | None = None) -> None:
        anchor = time.monotonic() if anchor is None else anchor
        # Virtual time at this instant, given that `start` was the virtual time at `anchor`.
        super().__init__(start + timedelta(seconds=(time.monotonic() - anchor) * speed), speed)
        self.start, self.anchor = start, anchor

    def spec(self) -> dict[str, Any]:
        return {"start": format_rfc3339(self.start), "speed": self.speed, "anchor": self.anchor}

    @staticmethod
    def from_spec(spec: Mapping[str, Any]) -> "SharedClock":
        return SharedClock(parse_rfc3339(spec["start"]), float(spec["speed"]), float(spec["anchor"]))


# --- fakes ------------------------------------------------------------------------------------------
class Fakes:
    """Cloud Run, Monitoring and Logging fakes on loopback; `with Fakes(clock) as fakes:`."""

    def __init__(self, clock: Any, *, project: str = PROJECT, location: str = LOCATION,
                 cloud_run: Any = None, monitoring: Any = None) -> None:
        """`cloud_run`/`monitoring`: an instance of the fake (or a subclass) to use instead of a new one."""
        from tests.fakes.cloud_run import CloudRunFake
        from tests.fakes.logging_fake import LoggingFake
        from tests.fakes.monitoring import FakeMonitoring

        self.project, self.location, self.clock = project, location, clock
        self.cloud_run = cloud_run if cloud_run is not None else CloudRunFake()
        self.monitoring = monitoring if monitoring is not None else \
            FakeMonitoring(project=project, location=location, clock=clock)
        self.logging = LoggingFake()

    def start(self) -> "Fakes":
        self.cloud_run.start()
        self.monitoring.start()
        self.logging.start()
        return self

    def stop(self) -> None:
        for fake in (self.cloud_run, self.monitoring, self.logging):
            fake.stop()

    def __enter__(self) -> "Fakes":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_managed_service(self, service: str, baseline: str, *, labels: Mapping[str, str] = MANAGED) -> str:
        """A service serving 100% on `baseline`, labelled for rollbackd."""
        return self.cloud_run.add_service(service, self.project, self.location, revisions=[baseline],
                                          labels=dict(labels))

    def deploy_canary(self, service: str, revision: str) -> None:
        """`gcloud run deploy SERVICE --no-traffic --tag=canary`: the new revision at 0%, tagged."""
        self.cloud_run.deploy_revision(service, revision, tag="canary")

    def add_active_rollout(self, service: str, *, baseline: str, canary: str, started: datetime,
                           canary_percent: int = 5, phase: int = 1) -> None:
        """A managed service in the middle of a rollout, as a (previous) rollbackd left it: traffic
        split and tag, plus the rollbackd.dev/* annotations restore() adopts. For benchmarks with
        many active rollouts without publishing a deploy for each."""
        from daemon.core.commands import ANNOTATION_PREFIX as P

        stamp = format_rfc3339(started)
        annotations = {f"{P}rollout-id": f"{service}/{canary}", f"{P}status": "phase", f"{P}phase": str(phase),
                       f"{P}phase-started": stamp, f"{P}rollout-started": stamp, f"{P}canary": canary,
                       f"{P}baseline": baseline, f"{P}canary-percent": str(canary_percent), f"{P}hold-reason": "",
                       f"{P}last-decision": "promote: set up by the harness", f"{P}decisions": "1"}
        self.cloud_run.add_service(service, self.project, self.location, revisions=[baseline, canary],
                                   traffic=[(baseline, 100 - canary_percent, ""), (canary, canary_percent, "canary")],
                                   labels=dict(MANAGED), annotations=annotations)

    def seed_error_logs(self, service: str, revision: str, messages: list[str], at: datetime) -> None:
        """ERROR lines the bad revision wrote (what rollback captures from Cloud Logging)."""
        for n, message in enumerate(messages):
            self.logging.add_entry(project=self.project, service=service, revision=revision, severity="ERROR",
                                   message=message, timestamp=at + timedelta(seconds=n % 50),
                                   location=self.location)


# --- Pub/Sub ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def running_emulator() -> Iterator[str]:
    """PUBSUB_EMULATOR_HOST when it is set; otherwise start the emulator (as the `pubsub_emulator`
    fixture does) for the duration of the block. For benchmark scripts, which have no fixtures."""
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        yield os.environ["PUBSUB_EMULATOR_HOST"]
        return
    import tempfile

    from tests.integration.conftest import _accepts, _die_with_parent, _kill_group, find_emulator, free_port

    command = find_emulator()
    if command is None:
        raise SystemExit("the Pub/Sub emulator is not installed (gcloud components install pubsub-emulator)")
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="pubsub-emulator-")
    args = command + (["--host=127.0.0.1", f"--port={port}"] if command[0].endswith("cloud-pubsub-emulator")
                      else [f"--host-port=127.0.0.1:{port}", f"--data-dir={data_dir}"])
    with open(os.path.join(data_dir, "emulator.log"), "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent, cwd=data_dir)
        try:
            wait_until(lambda: _accepts(port) or proc.poll() is not None, 60, "the emulator to listen")
            if proc.poll() is not None:
                raise SystemExit(f"the Pub/Sub emulator exited with {proc.returncode}")
            os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
            yield os.environ["PUBSUB_EMULATOR_HOST"]
        finally:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            _kill_group(proc)


# --- topics and publishing ------------------------------------------------------------------------
@dataclass
class Topics:
    """The daemon's three sources, each a topic + subscription (`events`/`subscription` is the audit
    sink's, `incidents`, `metrics`), and a notification topic + subscription (the test's), fresh on
    the emulator."""

    events: str
    subscription: str
    notify: str
    notify_subscription: str
    project: str = PROJECT
    incidents: str = ""
    incidents_subscription: str = ""
    metrics: str = ""
    metrics_subscription: str = ""

    @staticmethod
    def create(prefix: str = "e2e", project: str = PROJECT) -> "Topics":
        from daemon.adapters.pubsub_source import ensure_subscription, make_publisher, make_subscriber

        tag = f"{prefix}-{uuid.uuid4().hex[:8]}-{next(_names)}"
        topics = Topics(f"projects/{project}/topics/events-{tag}", f"projects/{project}/subscriptions/rollbackd-{tag}",
                        f"projects/{project}/topics/notify-{tag}", f"projects/{project}/subscriptions/notify-{tag}",
                        project, f"projects/{project}/topics/incidents-{tag}",
                        f"projects/{project}/subscriptions/incidents-{tag}", f"projects/{project}/topics/metrics-{tag}",
                        f"projects/{project}/subscriptions/metrics-{tag}")
        publisher, subscriber = make_publisher(), make_subscriber()
        try:
            ensure_subscription(publisher, subscriber, topics.events, topics.subscription, ordering=True)
            ensure_subscription(publisher, subscriber, topics.incidents, topics.incidents_subscription, ordering=True)
            ensure_subscription(publisher, subscriber, topics.metrics, topics.metrics_subscription, ordering=True)
            ensure_subscription(publisher, subscriber, topics.notify, topics.notify_subscription, ordering=True)
        finally:
            subscriber.close()
        return topics

    def pull_notifications(self, want: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """Pull (and ack) notification messages until `want` arrived or the time is up."""
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(out) < want and time.monotonic() < deadline:
                try:
                    response = subscriber.pull(request={"subscription": self.notify_subscription,
                                                        "max_messages": 100}, timeout=3)
                except gexc.DeadlineExceeded:
                    continue
                if response.received_messages:
                    subscriber.acknowledge(request={"subscription": self.notify_subscription,
                                                    "ack_ids": [m.ack_id for m in response.received_messages]})
                for received in response.received_messages:
                    body = json.loads(received.message.data)
                    body["_attributes"] = dict(received.message.attributes)
                    out.append(body)
        finally:
            subscriber.close()
        return out


class Publisher:
    """One ordered PublisherClient for a test; events keyed by service, as production publishes."""

    def __init__(self, topic: str, metrics_topic: str = "") -> None:
        """`topic` for everything but native metrics, which go to `metrics_topic` (default `topic`)."""
        from daemon.adapters.pubsub_source import make_publisher

        self.topic = topic
        self.metrics_topic = metrics_topic or topic
        self.client = make_publisher()

    def publish_json(self, body: Mapping[str, Any], *, key: str = "", attributes: Mapping[str, str] | None = None,
                     wait: bool = True) -> Any:
        future = self.client.publish(self.topic, json.dumps(body, sort_keys=True).encode(), ordering_key=key,
                                     **dict(attributes or {}))
        return future.result(timeout=30) if wait else future

    def publish_deploy(self, entry: Mapping[str, Any]) -> str:
        service = entry["resource"]["labels"]["service_name"]
        return str(self.publish_json(entry, key=service,
                                     attributes={"logging.googleapis.com/timestamp": entry["timestamp"]}))

    def publish_metrics(self, metrics: Metrics, wait: bool = True) -> Any:
        future = self.client.publish(self.metrics_topic, json.dumps(event_to_json(metrics), sort_keys=True).encode(),
                                     ordering_key=metrics.service, type="metrics")
        return future.result(timeout=30) if wait else future


# --- settings ---------------------------------------------------------------------------------------
def live_settings(fakes: Fakes, topics: Topics, journal: str | os.PathLike[str], **overrides: Any) -> Settings:
    """Settings for `run_live` against the fakes: short test policy, ephemeral /metrics port,
    one-minute ticks, Monitoring minutes counted complete after 60 s."""
    values: dict[str, Any] = dict(
        project=fakes.project, locations=(fakes.location,), audit_subscription=topics.subscription,
        incidents_subscription=topics.incidents_subscription, notify_topic=topics.notify, policy=SHORT_POLICY, principal=PRINCIPAL,
        metrics_mode="monitoring", http_port=0, journal=str(journal), tick_interval=60, monitoring_settle=60,
        run_endpoint=fakes.cloud_run.address, monitoring_endpoint=fakes.monitoring.address,
        logging_endpoint=fakes.logging.address)
    if overrides.get("metrics_mode") in ("pubsub", "both"):
        values["metrics_subscription"] = topics.metrics_subscription
    values.update(overrides)
    return Settings.model_validate(values)


def incident_notification(service: str, incident_id: str, state: str, at: datetime, *, project: str = PROJECT,
                          revision: str = "", policy_name: str = "checkout 5xx") -> dict[str, Any]:
    """A Cloud Monitoring notification (schema 1.2, gcp-formats.md §1b) for the incidents topic."""
    epoch = int(at.timestamp())
    return {"version": "1.2", "incident": {
        "incident_id": incident_id, "scoping_project_id": project, "state": state, "policy_name": policy_name,
        "started_at": epoch, "ended_at": epoch if state == "closed" else None, "summary": f"{policy_name} {state}",
        "resource": {"type": "cloud_run_revision", "labels": {"project_id": project, "service_name": service,
                                                              "revision_name": revision, "location": LOCATION}}}}


# --- identity and the audit trail ----------------------------------------------------------------
# Test-only bearer tokens the Cloud Run fake maps to principals (Google authenticates real ones).
TOKENS = {"token-alice": "alice@example.com", "token-mallory": "mallory@evil.test",
          "token-bob": "bob@example.com", "token-sre": "sre@example.com",
          "token-mallory-example": "mallory@evil.example",
          "token-tricky": "mallory@evil.example (x)@olympuscloud.ai"}


def connect_audit_sink(fakes: Fakes, topics: Topics, clock: Any) -> None:
    """Make the Cloud Run fake act like Google plus a Logging sink: callers are identified by their
    bearer token (no token: the daemon's own service account) and every accepted update is published
    as its Admin Activity audit entry to the audit topic."""
    publisher = Publisher(topics.events)

    def publish(entry: Mapping[str, Any]) -> None:
        # A Logging sink publishes without ordering keys: entries may arrive in any order.
        publisher.publish_json(entry, attributes={"logging.googleapis.com/timestamp": entry["timestamp"]})

    run = fakes.cloud_run
    run.tokens, run.anonymous_principal, run.clock, run.audit_sink = dict(TOKENS), PRINCIPAL, clock, publish


def ctl_as(token: str, argv: list[str], fakes: Fakes, clock: Any) -> tuple[int, str, str]:
    """`rollbackd ctl ARGV` run by whoever `token` belongs to, against the Cloud Run fake."""
    from daemon.ctl import ctl_main

    out, err = io.StringIO(), io.StringIO()
    env = {"ROLLBACKD_RUN_ENDPOINT": fakes.cloud_run.address, "ROLLBACKD_ACCESS_TOKEN": token,
           "ROLLBACKD_PROJECT": fakes.project, "PATH": ""}
    code = ctl_main(argv + ["--region", fakes.location], out, err, env=env, clock=clock)
    return code, out.getvalue(), err.getvalue()


def write_config(settings: Settings | Mapping[str, Any], path: str | os.PathLike[str]) -> str:
    """The settings as a YAML config file (JSON is YAML) for `rollbackd run|status --config`."""
    data = settings.model_dump(mode="json") if isinstance(settings, Settings) else dict(settings)
    Path(path).write_text(json.dumps(data, indent=1), encoding="utf-8")
    return str(path)


# --- the daemon in a thread -------------------------------------------------------------------------
class LineBuffer(io.TextIOBase):
    """A thread-safe text sink for the decision log; `lines()` returns complete lines so far."""

    def __init__(self, echo: Any = None) -> None:
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self.echo = echo

    def write(self, text: str) -> int:
        with self._lock:
            self._parts.append(text)
        if self.echo is not None:
            self.echo.write(text)
        return len(text)

    def writable(self) -> bool:
        return True

    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)

    def lines(self) -> list[str]:
        text = self.text()
        return text.split("\n")[:-1]


def parse_log(lines: list[str], *, strict: bool = True) -> list[dict[str, Any]]:
    """JSON records of a decision log, without StructuredLogHandler's one-off diagnostic line.
    `strict=False` skips lines that are not JSON (a subprocess's stderr shares the file)."""
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if strict:
                raise
            continue
        if not isinstance(record, dict):
            continue
        if "logging.googleapis.com/diagnostic" in record:
            continue
        out.append(record)
    return out


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics on 127.0.0.1:port → {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def http_status(port: int, path: str) -> int:
    import urllib.error

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class LiveDaemon:
    """`daemon.bootstrap.run_live` in a background thread: `with LiveDaemon(settings, clock) as d: ...`.

    `start()` returns once the daemon has restored state and its health server listens (the
    `on_started` hook). `stop()` asks the loop to finish and waits. The decision log (Cloud Logging
    JSON lines) is captured in `out`; `records()`/`decisions()` parse it."""

    def __init__(self, settings: Settings, clock: Any, *, clients: Any = None, echo: Any = None,
                 stop_after: datetime | None = None) -> None:
        self.settings, self.clock, self.clients, self.stop_after = settings, clock, clients, stop_after
        self.out = LineBuffer(echo)
        self.daemon: Any = None
        self.engine: Any = None
        self.health: Any = None
        self.rc: int | None = None
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._thread: threading.Thread | None = None

    def _on_started(self, daemon: Any, engine: Any, health: Any) -> None:
        self.daemon, self.engine, self.health = daemon, engine, health
        self._started.set()

    def _run(self) -> None:
        from daemon.bootstrap import run_live

        try:
            self.rc = run_live(self.settings, clients=self.clients, out=self.out, clock=self.clock,
                               install_signals=False, on_started=self._on_started, stop_after=self.stop_after)
        except BaseException as error:  # noqa: BLE001 - surfaced to the test by start()/stop()
            self.error = error
        finally:
            self._started.set()

    def start(self, timeout_s: float = 30.0) -> "LiveDaemon":
        self._thread = threading.Thread(target=self._run, name="run-live", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise AssertionError("run_live did not start in time")
        if self.error is not None:
            raise AssertionError(f"run_live failed to start: {type(self.error).__name__}: {self.error}")
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise AssertionError("run_live did not stop in time")
        if self.error is not None:
            raise AssertionError(f"run_live failed: {type(self.error).__name__}: {self.error}")

    def __enter__(self) -> "LiveDaemon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self.health.port)

    def records(self) -> list[dict[str, Any]]:
        return parse_log(self.out.lines())

    def decisions(self, service: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("type") == "decision"
                and (service is None or r.get("service") == service)]

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.port)

    def status(self, service: str) -> str | None:
        state = self.engine.state_of(service)
        return state.rollout.status.value if state is not None and state.rollout is not None else None


def journal_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a journal file, rotated files first (a torn last line is skipped)."""
    from daemon.adapters.journal import read_lines

    return [json.loads(line) for line in read_lines(str(path)) if line.strip()]


# --- subprocesses -----------------------------------------------------------------------------------
def subprocess_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The test's environment (PUBSUB_EMULATOR_HOST included), the repo on PYTHONPATH, no ROLLBACKD_*;
    then `extra`, where a None value removes the variable (e.g. {"PUBSUB_EMULATOR_HOST": None})."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLBACKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_cli(args: list[str], *, env: Mapping[str, str | None] | None = None, timeout_s: float = 120.0,
            cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """`rollbackd ARGS...` as a user runs it, output captured. Through the console-script entry point
    (`daemon.cli:main`), not `python -m daemon.cli`: under -m the CLI module is `__main__`, a second
    copy of `daemon.cli`, whose CliError is not the one the subcommands raise."""
    return subprocess.run([sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main())",
                           *args], capture_output=True, text=True,
                          timeout=timeout_s, env=subprocess_env(env), cwd=str(cwd or REPO))


class LiveProcess:
    """The live daemon in a subprocess, its stdout+stderr (the decision log) appended to `log_path`.

    With a `SharedClock`: `python -m tests.integration.live_harness run --config FILE --clock JSON`,
    i.e. `run_live` on the test's virtual time (SIGKILL/restart trials). Without one: the real
    `rollbackd run --config FILE` on the wall clock."""

    def __init__(self, config: str, log_path: str | os.PathLike[str], clock: SharedClock | None = None,
                 env: Mapping[str, str | None] | None = None) -> None:
        self.config, self.clock, self.log_path, self.env = config, clock, Path(log_path), env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "LiveProcess":
        if self.clock is not None:
            command = ["-m", "tests.integration.live_harness", "run", "--config", self.config,
                       "--clock", json.dumps(self.clock.spec())]
        else:
            command = ["-c", "import sys; from daemon.cli import main; sys.exit(main())", "run",
                       "--config", self.config]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, *command], stdout=log, stderr=subprocess.STDOUT,
                                     env=subprocess_env(self.env), cwd=str(REPO))
        log.close()
        return self

    def records(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").split("\n")[:-1] \
            if self.log_path.exists() else []
        return parse_log(lines, strict=False)

    def port(self, timeout_s: float = 30.0) -> int:
        """The /metrics port from the "rollbackd started" line."""
        def find() -> int | None:
            for record in reversed(self.records()):
                if record.get("message") == "rollbackd started":
                    return int(record["http_port"])
            return None
        return int(wait_until(find, timeout_s, "the daemon's started line"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout_s: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout_s)


def _main(argv: list[str] | None = None) -> int:
    """Subprocess entry point: run_live with the config and a shared virtual clock."""
    parser = argparse.ArgumentParser(prog="live_harness")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--config", required=True)
    run.add_argument("--clock", required=True, help="SharedClock.spec() as JSON")
    args = parser.parse_args(argv)
    from daemon.bootstrap import run_live
    from daemon.settings import load_settings

    settings = load_settings(args.config, env={})
    return run_live(settings, clock=SharedClock.from_spec(json.loads(args.clock)), install_signals=True)


__all__ = ["DEPLOYER", "Fakes", "LOCATION", "LiveDaemon", "LiveProcess", "PRINCIPAL", "PROJECT", "Publisher",
           "RevisionProfile", "SHORT_POLICY", "START", "SharedClock", "Topics", "TrafficFeeder",
           "audit_replace_service", "http_status", "journal_records", "latency_histogram", "live_settings",
           "monitoring_sink", "parse_log", "pubsub_sink", "run_cli", "scrape", "wait_until", "write_config"]

if __name__ == "__main__":
    sys.exit(_main())
