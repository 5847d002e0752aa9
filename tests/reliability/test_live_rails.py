"""The live daemon under faults, humans and safety rails (issue 5, items 4, 6 and 8).

`run_live` with the real google-cloud clients against the Pub/Sub emulator and the gRPC fakes of
Cloud Run, Monitoring and Logging (tests/integration/live_harness.py), on a virtual clock, with the
short test policy (2-minute phases, max_data_gap 5m, on_missing_data hold). Faults are injected at
the fakes' wire; what was applied is read from the Cloud Run fake's own logs: `requests` (every RPC
received) and `accepted_updates` (every UpdateService it accepted).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.live_harness import (PRINCIPAL, START, TOKENS, Fakes, LiveDaemon, Publisher, RevisionProfile,
                                            SharedClock, Topics, TrafficFeeder, audit_replace_service,
                                            connect_audit_sink, ctl_as, journal_records, live_settings,
                                            monitoring_sink, wait_until)
from tests.reliability.engine_world import v2_update_entry

SPEED = 120.0
BASELINE, CANARY = "checkout-00041-mib", "checkout-00042-vux"
HEALTHY = RevisionProfile(error_ratio=0.0005, latency_median_ms=90)
BROKEN = RevisionProfile(error_ratio=0.08, latency_median_ms=90)
OPERATOR, STRANGER = "alice@example.com", "mallory@evil.test"  # the short policy authorises *@example.com
WAIT_S = 60.0


@dataclass
class World:
    clock: SharedClock
    fakes: Fakes
    topics: Topics
    tmp: Path

    def settings(self, **overrides: Any) -> Any:
        return live_settings(self.fakes, self.topics, self.tmp / "journal.jsonl", **overrides)

    @property
    def run(self) -> Any:
        return self.fakes.cloud_run

    def splits(self, service: str = "checkout") -> list[int]:
        """The canary share of every UpdateService the Cloud Run fake accepted."""
        return [split.get(CANARY, 0) for name, split, _ in self.run.traffic_changes if name == service]


@pytest.fixture
def world(pubsub_emulator: str, tmp_path: Path) -> Iterator[World]:
    clock = SharedClock(START, speed=SPEED)
    with Fakes(clock) as fakes:
        fakes.add_managed_service("checkout", BASELINE)
        topics = Topics.create("rel")
        connect_audit_sink(fakes, topics, clock)
        yield World(clock, fakes, topics, tmp_path)


def start_rollout(world: World, canary: RevisionProfile = HEALTHY) -> TrafficFeeder:
    world.fakes.deploy_canary("checkout", CANARY)
    feeder = TrafficFeeder(world.clock, world.run, monitoring_sink(world.fakes.monitoring))
    feeder.add("checkout", {BASELINE: HEALTHY, CANARY: canary})
    feeder.start()
    Publisher(world.topics.events).publish_deploy(audit_replace_service("checkout", CANARY, BASELINE,
                                                                        world.clock.now()))
    return feeder


def last_status(live: LiveDaemon, service: str = "checkout") -> str | None:
    decisions = live.decisions(service)
    return decisions[-1]["status"] if decisions else None


def wait_minutes(world: World, minutes: float) -> None:
    """Let `minutes` of virtual time pass."""
    target = world.clock.now().timestamp() + minutes * 60
    wait_until(lambda: world.clock.now().timestamp() >= target, minutes * 60 / SPEED + 10, f"{minutes} minutes")


def ctl(world: World, action: str, by: str, reason: str = "test", service: str = "checkout") -> None:
    """`rollbackd ctl ACTION SERVICE` run by `by` (its test token): the annotation is written on the
    Cloud Run fake, which publishes the audit entry the daemon reads."""
    token = next(token for token, email in TOKENS.items() if email == by)
    code, _, err = ctl_as(token, [action, service, "--reason", reason], world.fakes, world.clock)
    assert code == 0, err


# --- item 4: Cloud API faults ----------------------------------------------------------------------

def test_transient_cloud_run_faults_are_retried_and_the_rollout_completes(world: World) -> None:
    faults = world.run.faults
    for method in ("GetService", "UpdateService"):
        faults.inject(method, "UNAVAILABLE", times=2)
        faults.inject(method, "RESOURCE_EXHAUSTED")
        faults.inject(method, "DEADLINE_EXCEEDED")
        faults.inject(method, None, delay_s=0.5)  # a slow answer
    faults.inject("UpdateService", "ABORTED")  # a stale etag: re-read, re-decide
    with LiveDaemon(world.settings(), world.clock) as live:
        feeder = start_rollout(world)
        try:
            wait_until(lambda: last_status(live) == "completed", WAIT_S, "the rollout to complete")
        finally:
            feeder.stop()
        errors = live.scrape()
    assert world.splits() == [5, 25, 50, 100], "a change was lost or applied twice"
    assert world.run.requests.count("UpdateService") >= 4 + 5, "the faults were not all hit"
    assert not [d for d in live.decisions() if d["action"] == "halt"]
    counted = sum(v for (name, labels), v in errors.items() if name == "rollbackd_cloud_api_errors_total")
    assert counted >= 9


@pytest.mark.parametrize("method,code", [
    ("UpdateService", "PERMISSION_DENIED"),
    pytest.param("UpdateService", "NOT_FOUND", marks=pytest.mark.slow),
    pytest.param("GetService", "NOT_FOUND", marks=pytest.mark.slow),
])
def test_permanent_fault_halts_notifies_and_leaves_traffic(world: World, method: str, code: str) -> None:
    with LiveDaemon(world.settings(), world.clock) as live:
        feeder = start_rollout(world)
        try:
            wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")
            world.run.faults.inject(method, code, times=-1)
            wait_until(lambda: last_status(live) == "halted", WAIT_S, "the rollout to halt")
            sent = world.run.requests.count("UpdateService")
            wait_minutes(world, 6)  # long enough for two more promotions had it gone on
        finally:
            feeder.stop()
        notes = world.topics.pull_notifications(1)
    halt = live.decisions("checkout")[-1]
    assert halt["action"] == "halt" and code in halt["reason"] and "a human must decide" in halt["reason"]
    assert world.splits() == [5] and world.run.traffic_of("checkout") == {BASELINE: 95, CANARY: 5}
    # After halting it only tries to save its record (the halt) on the service, traffic sent back as
    # it is: never another traffic change.
    later = world.run.traffic_updates("checkout")[sent:]
    assert all({t.revision: t.percent for t in r.service.traffic if t.percent} == {BASELINE: 95, CANARY: 5}
               for r in later), "it kept trying to move traffic after halting"
    halts = [n for n in notes if n["action"] == "halt"]
    assert halts and halts[-1]["severity"] == "ERROR"


@pytest.mark.parametrize("code", ["UNAVAILABLE", pytest.param("PERMISSION_DENIED", marks=pytest.mark.slow)])
def test_monitoring_outage_never_promotes_holds_at_the_limit_and_recovers(world: World, code: str) -> None:
    with LiveDaemon(world.settings(), world.clock) as live:
        feeder = start_rollout(world)
        try:
            wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")
            world.fakes.monitoring.faults.inject("ListTimeSeries", code, times=-1)
            wait_until(lambda: any(d["action"] == "hold" for d in live.decisions()), WAIT_S, "a hold")
            wait_minutes(world, 4)
            assert world.splits() == [5], "promoted while Cloud Monitoring was failing"
            world.fakes.monitoring.faults.clear()
            wait_until(lambda: last_status(live) == "completed", WAIT_S, "the rollout to complete after")
        finally:
            feeder.stop()
    hold = next(d for d in live.decisions() if d["action"] == "hold")
    assert "metrics missing" in hold["reason"] and "never promoting without evidence" in hold["reason"]
    errors = [r for r in live.records() if "Cloud Monitoring collection failed" in str(r.get("message", ""))]
    assert errors and code in str(errors[0])
    assert world.splits() == [5, 25, 50, 100]


@pytest.mark.slow
def test_logging_fault_never_delays_a_rollback(world: World) -> None:
    world.fakes.logging.faults.inject("ListLogEntries", "PERMISSION_DENIED", times=-1)
    with LiveDaemon(world.settings(), world.clock) as live:
        feeder = start_rollout(world, BROKEN)
        try:
            wait_until(lambda: last_status(live) == "rolling-back", WAIT_S, "the rollback")
            wait_until(lambda: world.run.traffic_of("checkout").get(BASELINE) == 100, 10, "100% baseline")
        finally:
            feeder.stop()
        notes = world.topics.pull_notifications(1)
    assert notes and notes[0]["action"] == "rollback"
    assert world.splits()[-1] == 0


# --- item 6: humans -------------------------------------------------------------------------------

def test_manual_traffic_change_stands_down_and_never_fights(world: World) -> None:
    with LiveDaemon(world.settings(), world.clock) as live:
        feeder = start_rollout(world)
        try:
            wait_until(lambda: world.splits() == [5, 25], WAIT_S, "phase 2")
            world.run.set_traffic_by_hand("checkout", {BASELINE: 30, CANARY: 70})
            wait_until(lambda: last_status(live) == "halted", WAIT_S, "standing down")
            wait_minutes(world, 5)
        finally:
            feeder.stop()
        notes = world.topics.pull_notifications(1)
    halt = live.decisions()[-1]
    assert "standing down, never fighting a human" in halt["reason"]
    assert world.splits() == [5, 25], "rollbackd wrote the service after a human changed it"
    assert world.run.traffic_of("checkout") == {BASELINE: 30, CANARY: 70}
    assert notes and notes[-1]["action"] == "halt"


def test_ctl_commands_obeyed_from_an_operator_and_refused_from_anyone_else(world: World) -> None:
    with LiveDaemon(world.settings(), world.clock) as live:
        feeder = start_rollout(world)
        try:
            wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")
            ctl(world, "pause", OPERATOR, "investigating INC-9")
            wait_until(lambda: last_status(live) == "held", WAIT_S, "the pause")
            ctl(world, "abort", STRANGER, "let me in")
            wait_until(lambda: any(d["action"] == "refuse" for d in live.decisions()), WAIT_S, "the refusal")
            wait_minutes(world, 4)
            assert world.splits() == [5], "promoted while paused, or obeyed a stranger"
            ctl(world, "resume", OPERATOR, "fixed")
            wait_until(lambda: last_status(live) == "completed", WAIT_S, "completion after resume")
        finally:
            feeder.stop()
    decisions = live.decisions()
    refuse = next(d for d in decisions if d["action"] == "refuse")
    assert f"refused 'abort' from {STRANGER}" in refuse["reason"] and refuse["acted"] is False
    assert any("paused by alice@example.com (investigating INC-9)" in d["reason"] for d in decisions)
    assert world.splits() == [5, 25, 50, 100]


# --- item 8: safety rails -------------------------------------------------------------------------

def test_only_managed_services_and_never_its_own_audit_entries(world: World) -> None:
    world.fakes.add_managed_service("legacy", "legacy-00001-aaa", labels={})  # no rollbackd label
    world.fakes.deploy_canary("legacy", "legacy-00002-bbb")
    publisher = Publisher(world.topics.events)
    with LiveDaemon(world.settings(), world.clock) as live:
        publisher.publish_deploy(audit_replace_service("legacy", "legacy-00002-bbb", "legacy-00001-aaa",
                                                       world.clock.now()))
        feeder = start_rollout(world)
        try:
            wait_until(lambda: world.splits() == [5, 25], WAIT_S, "phase 2")
            # rollbackd's own update, as the audit log shows it (it re-sends the template).
            # It says 50% while rollbackd has set 25%: were it not ignored, it would stop the rollout.
            own = v2_update_entry("checkout", CANARY, BASELINE, 50, world.clock.now(), principal=PRINCIPAL)
            own = own.replace(b"shop-prod", world.fakes.project.encode()).replace(
                b"europe-west1", world.fakes.location.encode())
            publisher.client.publish(world.topics.events, own, ordering_key="checkout").result(30)
            wait_until(lambda: last_status(live) == "completed", WAIT_S, "completion")
        finally:
            feeder.stop()
    assert world.splits() == [5, 25, 50, 100]
    assert world.splits("legacy") == [] and not live.decisions("legacy")
    assert all(not req.service.name.endswith("/legacy") for req in world.run.requests.of("UpdateService"))
    journal = journal_records(world.settings().journal)
    assert any(r.get("type") == "ignored" and "own update" in r.get("reason", "") for r in journal)
    assert any(r.get("type") == "ignored" and "legacy is not managed" in r.get("reason", "") for r in journal)
    assert_no_credentials(live.out.text(), (world.tmp / "journal.jsonl").read_text())


def test_policy_selectors_manage_services_and_the_opt_out_label_wins(world: World) -> None:
    """`managed: [{service: pay-*}]` in the policy: a deploy of pay-api (no rollbackd label) starts a
    rollout; pay-legacy (matched, but labelled rollbackd=disabled) and legacy (unlabelled, unmatched)
    are ignored and never written to."""
    from tests.integration.live_harness import SHORT_POLICY

    policy = world.tmp / "selectors.yaml"
    policy.write_text(Path(SHORT_POLICY).read_text(encoding="utf-8") + "managed:\n  - service: pay-*\n",
                      encoding="utf-8")
    services = {"pay-api": {}, "pay-legacy": {"rollbackd": "disabled"}, "legacy": {}}
    for name, labels in services.items():
        world.fakes.add_managed_service(name, f"{name}-00001-aaa", labels=labels)
        world.fakes.deploy_canary(name, f"{name}-00002-bbb")
    publisher = Publisher(world.topics.events)
    with LiveDaemon(world.settings(policy=str(policy)), world.clock) as live:
        for name in services:
            publisher.publish_deploy(audit_replace_service(name, f"{name}-00002-bbb", f"{name}-00001-aaa",
                                                           world.clock.now()))

        def ignored(name: str) -> bool:
            return any(r.get("type") == "ignored" and f"{name} is not managed" in r.get("reason", "")
                       for r in journal_records(world.settings().journal))

        wait_until(lambda: any(name == "pay-api" for name, _, _ in world.run.traffic_changes), WAIT_S,
                   "the selector-managed service's first step")
        wait_until(lambda: ignored("pay-legacy") and ignored("legacy"), WAIT_S, "the other two ignored")
        assert live.decisions("pay-api")
    first = next(split for name, split, _ in world.run.traffic_changes if name == "pay-api")
    assert first == {"pay-api-00001-aaa": 95, "pay-api-00002-bbb": 5}
    assert not live.decisions("pay-legacy") and not live.decisions("legacy")
    touched = {req.service.name.rsplit("/", 1)[-1] for req in world.run.requests.of("UpdateService")}
    assert touched == {"pay-api"}


@pytest.mark.parametrize("mode", ["kill-switch-setting", "dry-run"])
def test_kill_switch_setting_and_dry_run_never_send_update_service(world: World, mode: str) -> None:
    overrides = {"kill_switch": True} if mode == "kill-switch-setting" else {"dry_run": True}
    with LiveDaemon(world.settings(**overrides), world.clock) as live:
        feeder = start_rollout(world)
        try:
            wait_until(lambda: len(live.decisions()) >= 1, WAIT_S, "a decision")
            wait_minutes(world, 8)  # a whole rollout's worth of time
        finally:
            feeder.stop()
    assert world.run.requests.count("UpdateService") == 0, f"{mode} sent an UpdateService"
    assert world.run.traffic_of("checkout") == {BASELINE: 100, CANARY: 0}
    decisions = live.decisions()
    assert decisions and not any(d["acted"] for d in decisions if d["canary_percent_before"] != d["canary_percent"])
    if mode == "kill-switch-setting":
        assert all("kill switch on, not acted" in d["reason"] for d in decisions)


@pytest.mark.slow
def test_kill_switch_command_stops_actions_mid_rollout(world: World) -> None:
    with LiveDaemon(world.settings(), world.clock) as live:
        feeder = start_rollout(world)
        try:
            wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")
            ctl(world, "kill-switch-on", OPERATOR, "incident")
            wait_until(lambda: any(d["action"] == "kill-switch" for d in live.records()
                                   if d.get("type") == "decision"), WAIT_S, "the kill switch")
            wait_minutes(world, 6)
        finally:
            feeder.stop()
    assert world.splits() == [5]
    assert any("kill switch on, not acted: would promote" in d["reason"] for d in live.decisions("checkout"))


SECRET_PATTERNS = (r"bearer\s", r"ya29\.", r"-----begin [a-z ]*private key", r"private_key", r"access_token",
                   r"refresh_token", r"client_secret", r"authorization:", r"\btoken\b")


def assert_no_credentials(*texts: str) -> None:
    for text in texts:
        for pattern in SECRET_PATTERNS:
            found = re.search(pattern, text, re.IGNORECASE)
            assert found is None, f"credential-like text {found.group(0)!r} in the logs" if found else ""
