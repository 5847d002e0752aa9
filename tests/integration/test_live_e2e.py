"""The live daemon end to end: `run_live` with the real google-cloud clients against the Pub/Sub
emulator and the gRPC fakes of Cloud Run, Monitoring and Logging, on a virtual clock (120x).

A v1 ReplaceService audit entry is published on the events topic; per-minute metrics that follow
the Cloud Run fake's current traffic split go into the Monitoring fake; the daemon must walk a
healthy canary 0 → 5 → 25 → 50 → 100 under the short test policy, and roll a bad one back with its
error logs captured and a notification published. Every test also checks that the four records of
what happened agree: the decision log on stdout, the journal, the service's rollbackd.dev/*
annotations, and the Prometheus counters served on /metrics.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from daemon.core.commands import ANNOTATION_PREFIX as P
from tests.integration.live_harness import (START, Fakes, LiveDaemon, Publisher, RevisionProfile, SharedClock,
                                            Topics, TrafficFeeder, audit_replace_service, http_status,
                                            journal_records, live_settings, monitoring_sink, run_cli,
                                            wait_until, write_config)

SPEED = 120.0  # virtual seconds per wall second: one virtual minute is half a wall second
BASELINE, CANARY = "checkout-00041-mib", "checkout-00042-vux"
HEALTHY = RevisionProfile(error_ratio=0.0005, latency_median_ms=90)
BROKEN = RevisionProfile(error_ratio=0.08, latency_median_ms=90)
ERROR_LINES = (["upstream request timeout after 5000ms calling inventory-svc"] * 6
               + ["database connection refused: pool exhausted (42 waiting)"] * 3
               + ["panic: nil pointer dereference in handler /checkout/123"])


@dataclass
class World:
    clock: SharedClock
    fakes: Fakes
    topics: Topics
    tmp: Path

    def settings(self, **overrides: Any) -> Any:
        return live_settings(self.fakes, self.topics, self.tmp / "journal.jsonl", **overrides)


@pytest.fixture
def world(pubsub_emulator: str, tmp_path: Path) -> Iterator[World]:
    clock = SharedClock(START, speed=SPEED)
    with Fakes(clock) as fakes:
        yield World(clock, fakes, Topics.create("e2e"), tmp_path)


def start_rollout(world: World, live: LiveDaemon, canary_profile: RevisionProfile) -> TrafficFeeder:
    """Deploy the canary at 0% (tagged), publish the audit entry, feed metrics that follow the split."""
    world.fakes.deploy_canary("checkout", CANARY)
    feeder = TrafficFeeder(world.clock, world.fakes.cloud_run, monitoring_sink(world.fakes.monitoring))
    feeder.add("checkout", {BASELINE: HEALTHY, CANARY: canary_profile})
    feeder.start()
    Publisher(world.topics.events).publish_deploy(audit_replace_service("checkout", CANARY, BASELINE, world.clock.now()))
    return feeder


def logged_status(live: LiveDaemon, service: str) -> str | None:
    """The status in the service's last decision-log line. Waiting on this rather than on the
    engine's state: the state changes before the decision is logged and acted on."""
    decisions = live.decisions(service)
    return decisions[-1]["status"] if decisions else None


def counter(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def check_records_agree(live: LiveDaemon, world: World, service: str) -> list[dict[str, Any]]:
    """Decision log, journal, annotations and Prometheus counters tell the same story."""
    logged = live.decisions(service)
    journal = journal_records(world.settings().journal)
    journaled = [r for r in journal if r.get("type") == "decision" and r["service"] == service]
    assert [d["decision_id"] for d in logged] == [d["decision_id"] for d in journaled]
    for line, record in zip(logged, journaled):
        assert {k: line[k] for k in ("action", "status", "canary_percent", "reason")} == \
            {k: record[k] for k in ("action", "status", "canary_percent", "reason")}
        assert line["logging.googleapis.com/labels"]["service"] == service
        assert line["logging.googleapis.com/labels"]["action"] == record["action"]
        assert line["severity"] == ("ERROR" if record["action"] == "rollback" else line["severity"])

    annotations = world.fakes.cloud_run.annotations_of(service)
    last = journaled[-1]
    # A rollback decision says "rolling-back" (what was asked); once Cloud Run confirmed it, the
    # record on the service says "rolled-back" (what happened).
    confirmed = {"rolling-back": "rolled-back"}
    assert annotations[f"{P}status"] == confirmed.get(last["status"], last["status"])
    assert annotations[f"{P}phase"] == str(last["phase"])
    assert annotations[f"{P}canary-percent"] == str(last["canary_percent"])
    assert annotations[f"{P}canary"] == CANARY and annotations[f"{P}baseline"] == BASELINE
    assert annotations[f"{P}decisions"] == str(len(journaled))
    assert annotations[f"{P}last-decision"] == f"{last['action']}: {last['reason']}"[:500]

    samples = live.scrape()
    actions = Counter(d["action"] for d in journaled)
    for action, count in actions.items():
        assert counter(samples, "rollbackd_decisions_total", action=action) == count
    assert counter(samples, "rollbackd_rollbacks_total") == actions.get("rollback", 0)
    inputs = Counter(r["type"] for r in journal if r.get("type") in ("deploy", "metrics"))
    for kind, count in inputs.items():  # every journaled input was counted, whatever its result
        counted = sum(v for (name, labels), v in samples.items()
                      if name == "rollbackd_events_total" and ("type", kind) in labels)
        assert counted == count, (kind, counted, count)
    assert counter(samples, "rollbackd_events_total", result="accepted", type="deploy") == 1
    return journaled


def test_healthy_canary_walks_5_25_50_100(world: World) -> None:
    world.fakes.add_managed_service("checkout", BASELINE)
    with LiveDaemon(world.settings(), world.clock) as live:
        assert http_status(live.port, "/healthz") == 200
        feeder = start_rollout(world, live, HEALTHY)
        try:
            wait_until(lambda: logged_status(live, "checkout") == "completed", 40, "the rollout to complete")
            assert wait_until(lambda: http_status(live.port, "/readyz") == 200, 10, "/readyz")
        finally:
            feeder.stop()
        assert not feeder.errors
        notes = world.topics.pull_notifications(1)  # completion's last action
        journaled = check_records_agree(live, world, "checkout")

    updates = [(service, split) for service, split, _ in world.fakes.cloud_run.traffic_changes]
    assert [split.get(CANARY, 0) for _, split in updates] == [5, 25, 50, 100]
    assert all(split.get(BASELINE, 0) + split.get(CANARY, 0) == 100 for _, split in updates)
    assert world.fakes.cloud_run.traffic_of("checkout")[CANARY] == 100
    assert world.fakes.cloud_run.tags_of("checkout").get("canary") == CANARY
    assert [d["action"] for d in journaled] == ["promote"] * 4
    assert [d["canary_percent"] for d in journaled] == [5, 25, 50, 100]
    assert journaled[-1]["status"] == "completed"
    # Each promotion out of a phase cites evidence (criteria that passed), not just the clock.
    assert all(any(c["outcome"] == "pass" for c in d["criteria"]) for d in journaled[1:])
    # Completion is announced on the notification topic.
    assert [n["action"] for n in notes] == ["promote"] and notes[0]["severity"] == "INFO"


def test_bad_canary_is_rolled_back_with_error_logs_and_notification(world: World) -> None:
    world.fakes.add_managed_service("checkout", BASELINE)
    world.fakes.seed_error_logs("checkout", CANARY, ERROR_LINES, world.clock.now())
    world.fakes.seed_error_logs("checkout", BASELINE, ["old noise on the baseline"], world.clock.now())
    with LiveDaemon(world.settings(), world.clock) as live:
        feeder = start_rollout(world, live, BROKEN)
        try:
            wait_until(lambda: logged_status(live, "checkout") == "rolling-back", 40, "the rollback")
            # The rollback's actions (traffic, log capture, notification) follow its log line.
            wait_until(lambda: world.fakes.cloud_run.traffic_of("checkout")[BASELINE] == 100, 10, "100% baseline")
        finally:
            feeder.stop()
        notes = world.topics.pull_notifications(1)  # the rollback's last action: all records are written
        journaled = check_records_agree(live, world, "checkout")
        journal = journal_records(world.settings().journal)

    assert journaled[-1]["action"] == "rollback" and journaled[-1]["canary_percent"] == 0
    assert any(c["outcome"] == "fail" for c in journaled[-1]["criteria"])
    # Runbook rollback: 100% to the baseline, the canary kept and tagged at 0% for investigation.
    split = world.fakes.cloud_run.traffic_of("checkout")
    assert split[BASELINE] == 100 and split.get(CANARY) == 0
    assert world.fakes.cloud_run.tags_of("checkout") == {"canary": CANARY}
    assert CANARY in world.fakes.cloud_run.revisions_of("checkout")  # not deleted (policy default)
    # The bad revision's ERROR logs, grouped, attached to the decision in the journal ...
    captured = [r for r in journal if r.get("type") == "decision-logs"]
    assert [c["decision_id"] for c in captured] == [journaled[-1]["decision_id"]]
    logs = captured[0]["logs"]
    assert logs["revision"] == CANARY and logs["total"] == len(ERROR_LINES)
    assert [p["count"] for p in logs["patterns"]] == [6, 3, 1]
    assert "baseline" not in json.dumps(logs)
    query = world.fakes.logging.requests.of("ListLogEntries")[-1].filter
    assert f'revision_name="{CANARY}"' in query and "severity>=ERROR" in query
    # ... and in the notification published on the notify topic.
    assert len(notes) == 1
    note = notes[0]
    assert note["action"] == "rollback" and note["severity"] == "ERROR"
    assert note["_attributes"] == {"service": "checkout", "action": "rollback", "severity": "ERROR",
                                   "location": world.fakes.location}  # same-named services in two regions
    assert note["decision"]["decision_id"] == journaled[-1]["decision_id"]
    assert note["decision"]["error_logs"] == logs


def test_status_command_reads_the_rollout_from_annotations(world: World) -> None:
    """`rollbackd status --config` (a separate process, any machine with read access) shows what
    the daemon wrote: phase, canary, baseline, split, last decision."""
    world.fakes.add_managed_service("checkout", BASELINE)
    world.fakes.add_managed_service("cart", "cart-00007-abc")
    world.fakes.add_managed_service("legacy", "legacy-00001-aaa", labels={})  # not managed
    with LiveDaemon(world.settings(), world.clock) as live:
        feeder = start_rollout(world, live, HEALTHY)
        try:
            wait_until(lambda: (live.engine.state_of("checkout") is not None
                                and live.engine.state_of("checkout").rollout.canary_percent == 25),
                       40, "phase 2")
        finally:
            feeder.stop()
        live.daemon.stop()
    config = write_config(world.settings(), world.tmp / "rollbackd.yaml")
    done = run_cli(["status", "--config", config])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    row = next(line for line in lines if line.startswith("checkout"))
    assert "phase" in row and " 2 " in row and f"canary {CANARY} / baseline {BASELINE}" in row
    assert f"{BASELINE} 75%" in row and f"{CANARY} 25%" in row
    assert any(line.strip().startswith("last: promote: phase 1 passed") for line in lines)
    assert any(line.startswith("cart") and "idle" in line for line in lines)
    assert not any(line.startswith("legacy") for line in lines)

    as_json = run_cli(["status", "--config", config, "--json"])
    rows = {r["service"]: r for r in map(json.loads, as_json.stdout.splitlines())}
    assert rows["checkout"]["traffic"] == {BASELINE: 75, CANARY: 25}
    assert rows["checkout"]["phase"] == "2" and rows["checkout"]["status"] == "phase"
    assert rows["checkout"]["last_decision"].startswith("promote: phase 1 passed")
    assert set(rows) == {"checkout", "cart"}


def test_without_a_notify_topic_the_rollback_notification_goes_to_the_decision_log(world: World) -> None:
    """notify_topic '' = log only: the notification is a structured line, and the message that
    triggered the rollback is handled once (no exception, no nack, no redelivery)."""
    world.fakes.add_managed_service("checkout", BASELINE)
    with LiveDaemon(world.settings(notify_topic=""), world.clock) as live:
        feeder = start_rollout(world, live, BROKEN)
        try:
            wait_until(lambda: logged_status(live, "checkout") == "rolling-back", 40, "the rollback")
            wait_until(lambda: any("notification" in r for r in live.records()), 10, "the notification line")
        finally:
            feeder.stop()
        live.stop()
        assert live.daemon.sources[0].stats.handle_errors == 0
        assert live.daemon.tick_errors == 0
        notes = [r for r in live.records() if "notification" in r]
    assert [n["notification"]["action"] for n in notes] == ["rollback"]
    assert notes[0]["message"].startswith("notify checkout:")
    assert world.topics.pull_notifications(1, timeout_s=2) == []
