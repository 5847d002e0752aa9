"""A controller you can leave alone (issue 11): the stories the review found on the production path.

Each test runs the production `run_live` with the real `run_v2`, Monitoring, Logging and Pub/Sub
clients, against the Pub/Sub emulator and the gRPC fakes (tests/integration/live_harness.py), on a
virtual clock. A restart is a new daemon restored from the service's annotations, as production
restarts: nothing carries over in memory. Each of these failed before every state change went
through the state machine and onto the service.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from daemon.core.commands import ANNOTATION_PREFIX as P
from tests.integration.live_harness import (LiveDaemon, Publisher, audit_replace_service, incident_notification,
                                            live_settings, wait_until)
from tests.reliability.test_live_rails import (BASELINE, BROKEN, CANARY, HEALTHY, OPERATOR, WAIT_S, World, ctl,
                                               last_status, start_rollout, wait_minutes, world)  # noqa: F401

NEXT = "checkout-00043-new"


def annotations(world: World, service: str = "checkout") -> dict[str, str]:
    return world.run.annotations_of(service)


def restarted(world: World, **overrides: Any) -> LiveDaemon:
    """A new daemon process's worth of state: a fresh engine, restored from the annotations. It reads
    fresh subscriptions on the same topics: the emulator (0.8.20) keeps leasing messages to the
    stopped daemon's stream until their ack deadline (60 s), which real Pub/Sub does not (see
    story_trials.run_trial); nothing is published while it is down, so nothing is missed."""
    from tests.reliability.story_trials import fresh_subscription

    global _incarnation
    _incarnation += 1
    audit = fresh_subscription(world.topics, _incarnation)
    return LiveDaemon(world.settings(audit_subscription=audit,
                                     incidents_subscription=f"{world.topics.incidents_subscription}-{_incarnation}",
                                     **overrides), world.clock)


_incarnation = 0


# --- 1. pause, hold, halt and the kill switch survive a restart -----------------------------------

def test_a_pause_survives_a_restart(world: World) -> None:
    feeder = start_rollout(world)
    try:
        with LiveDaemon(world.settings(), world.clock):
            wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")
            ctl(world, "pause", OPERATOR, "INC-1")
            wait_until(lambda: annotations(world).get(f"{P}paused") == "true", WAIT_S, "the pause on the service")
        assert annotations(world)[f"{P}status"] == "held"
        with restarted(world):
            wait_minutes(world, 5)  # two phases' worth: it would have promoted twice
            assert world.splits() == [5], "a paused rollout was promoted after a restart"
            ctl(world, "resume", OPERATOR, "fixed")
            wait_until(lambda: annotations(world).get(f"{P}status") == "completed", WAIT_S, "completion")
    finally:
        feeder.stop()
    assert world.splits() == [5, 25, 50, 100]


def test_the_kill_switch_survives_a_restart(world: World) -> None:
    feeder = start_rollout(world)
    try:
        with LiveDaemon(world.settings(), world.clock):
            wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")
            ctl(world, "kill-switch-on", OPERATOR, "incident")
            wait_until(lambda: annotations(world).get(f"{P}kill-switch") == "on", WAIT_S, "the switch recorded")
        with restarted(world) as live:
            wait_minutes(world, 5)
            assert world.splits() == [5], "the kill switch was forgotten on restart"
            assert any("kill switch on, not acted" in d["reason"] for d in live.decisions())
    finally:
        feeder.stop()


def test_a_second_replica_obeys_a_pause_sent_to_the_first(world: World) -> None:
    """One subscription, two replicas: the command reaches one of them. The other must adopt the
    paused record instead of promoting over it (before, resync even copied its promotion back)."""
    feeder = start_rollout(world)
    try:
        with LiveDaemon(world.settings(), world.clock), \
                LiveDaemon(live_settings(world.fakes, world.topics, world.tmp / "journal-2.jsonl"), world.clock):
            wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")
            ctl(world, "pause", OPERATOR, "INC-2")
            wait_until(lambda: annotations(world).get(f"{P}paused") == "true", WAIT_S, "the pause on the service")
            wait_minutes(world, 5)
            assert world.splits() == [5], "the other replica promoted a paused rollout"
            assert annotations(world).get(f"{P}paused") == "true", "the pause was overwritten"
    finally:
        feeder.stop()


# --- 2. a rollback is a goal --------------------------------------------------------------------

def test_a_rollback_is_retried_until_cloud_run_takes_it(world: World) -> None:
    """UpdateService unavailable past the controller's 60 s retry budget: the rollout stays
    rolling-back and retries with backoff; it never halts with the bad canary serving."""
    feeder = start_rollout(world, BROKEN)
    try:
        with LiveDaemon(world.settings(), world.clock) as live:
            wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")
            world.run.faults.inject("UpdateService", "UNAVAILABLE", times=-1)
            wait_until(lambda: last_status(live) == "rolling-back", WAIT_S, "the rollback decision")
            wait_until(lambda: any(r.get("record_type") == "action" and r.get("outcome") == "failed"
                                   for r in live.records()), WAIT_S, "a failed attempt")
            wait_minutes(world, 3)
            assert world.run.traffic_of("checkout")[CANARY] == 5
            assert annotations(world)[f"{P}status"] == "phase"  # nothing could be written
            world.run.faults.clear()
            wait_until(lambda: world.run.traffic_of("checkout").get(CANARY) == 0, WAIT_S, "the rollback to land")
            wait_until(lambda: annotations(world).get(f"{P}status") == "rolled-back", WAIT_S, "the record")
    finally:
        feeder.stop()
    assert not [d for d in live.decisions() if d["action"] == "halt"], "a failed rollback was abandoned"
    notes = world.topics.pull_notifications(2)
    assert any("not done yet" in json.dumps(n) for n in notes), "nobody was told the rollback was failing"


def test_rollbacks_are_never_rate_limited(world: World, tmp_path: Any) -> None:
    """A policy allowing one traffic change per hour: the first step uses it; the rollback must
    still happen."""
    from pathlib import Path

    from tests.integration.live_harness import SHORT_POLICY

    policy = tmp_path / "one-change.yaml"
    policy.write_text(Path(SHORT_POLICY).read_text(encoding="utf-8").replace(
        "max_actions_per_service_per_hour: 30", "max_actions_per_service_per_hour: 1"), encoding="utf-8")
    feeder = start_rollout(world, BROKEN)
    try:
        with LiveDaemon(world.settings(policy=str(policy)), world.clock):
            wait_until(lambda: world.run.traffic_of("checkout").get(CANARY) == 0 and world.splits() == [5, 0],
                       WAIT_S, "the rollback despite the rate limit")
    finally:
        feeder.stop()


# --- 3. a redeploy mid-rollout -------------------------------------------------------------------

def test_a_redeploy_at_25_percent_takes_over_the_old_canarys_share(world: World) -> None:
    feeder = start_rollout(world)
    try:
        with LiveDaemon(world.settings(), world.clock) as live:
            wait_until(lambda: world.splits() == [5, 25], WAIT_S, "phase 2")
            world.fakes.deploy_canary("checkout", NEXT)
            feeder.add("checkout", {BASELINE: HEALTHY, CANARY: HEALTHY, NEXT: HEALTHY})
            Publisher(world.topics.events).publish_deploy(audit_replace_service("checkout", NEXT, BASELINE,
                                                                                world.clock.now()))
            wait_until(lambda: world.run.traffic_of("checkout").get(NEXT) == 5, WAIT_S, "the new canary's first step")
            assert world.run.traffic_of("checkout").get(CANARY, 0) == 0, "the old canary kept its share"
            assert world.run.tags_of("checkout").get("canary") == NEXT
            wait_until(lambda: annotations(world).get(f"{P}status") == "completed"
                       and annotations(world).get(f"{P}canary") == NEXT, WAIT_S, "the new rollout to complete")
    finally:
        feeder.stop()
    assert not [d for d in live.decisions() if d["action"] == "halt"]
    assert world.run.traffic_of("checkout") == {BASELINE: 0, CANARY: 0, NEXT: 100} or \
        {r: p for r, p in world.run.traffic_of("checkout").items() if p} == {NEXT: 100}


# --- 6. an incident already open when the canary starts ------------------------------------------

def test_an_incident_open_before_the_deploy_blocks_promotion(world: World) -> None:
    publisher = Publisher(world.topics.incidents)
    feeder = None
    try:
        with LiveDaemon(world.settings(), world.clock) as live:
            publisher.publish_json(incident_notification("checkout", "inc-7", "open", world.clock.now()))
            wait_until(lambda: annotations(world).get(f"{P}open-alerts") == "inc-7", WAIT_S, "the incident recorded")
            feeder = start_rollout(world)
            wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")
            wait_minutes(world, 5)
            assert world.splits() == [5], "promoted during an incident that predates the canary"
            assert last_status(live) == "held"
            publisher.publish_json(incident_notification("checkout", "inc-7", "closed", world.clock.now()))
            wait_until(lambda: annotations(world).get(f"{P}status") == "completed", WAIT_S, "completion after")
    finally:
        if feeder is not None:
            feeder.stop()


# --- 7. a deploy is not lost when Cloud Run cannot be read ---------------------------------------

def test_a_deploy_survives_cloud_run_being_unreadable(world: World) -> None:
    # More failures than one read's retry budget (6 attempts): the message is nacked, redelivered,
    # and resolved once Cloud Run answers again.
    world.run.faults.inject("GetService", "UNAVAILABLE", times=14)
    feeder = start_rollout(world)
    try:
        with LiveDaemon(world.settings(), world.clock) as live:
            wait_until(lambda: world.splits()[:1] == [5], WAIT_S, "the rollout to start")
    finally:
        feeder.stop()
    assert not any(r.get("type") == "rejected" and "cannot read service" in r.get("reason", "")
                   for r in live.records())


# --- 4. one service's corrupt record never stops the others ---------------------------------------

# The other corrupt dates (1900, 2099, a phase the policy lacks) are refused by the same check; they
# are covered at the unit level (tests/unit/test_sane_annotations.py, test_sane_restore.py).
@pytest.mark.parametrize("started", ["0001-01-01T00:30:00+01:00"])
def test_a_corrupt_record_holds_one_service_and_the_others_go_on(world: World, started: str) -> None:
    world.fakes.add_active_rollout("broken", baseline="broken-00001-aaa", canary="broken-00002-bbb",
                                   started=world.clock.now())
    world.run.set_annotations("broken", {f"{P}rollout-started": started, f"{P}phase-started": started})
    feeder = start_rollout(world)
    try:
        with LiveDaemon(world.settings(), world.clock):
            wait_until(lambda: annotations(world).get(f"{P}status") == "completed", WAIT_S, "checkout to complete")
    finally:
        feeder.stop()
    assert world.run.traffic_of("broken") == {"broken-00001-aaa": 95, "broken-00002-bbb": 5}, "touched"
    notes = world.topics.pull_notifications(1)
    assert any("broken" in json.dumps(n) and "a human must look" in json.dumps(n) for n in notes)


# --- 8. two regions, one name ------------------------------------------------------------------------

US, EU = "us-central1", "europe-west1"
US_BASELINE, US_CANARY = "checkout-00007-usa", "checkout-00008-usb"


def test_same_named_services_in_two_regions_are_two_rollouts_and_survive_a_restart(world: World) -> None:
    """`checkout` in europe-west1 (the world's own) and in us-central1, a deploy in each: the
    European canary is healthy and promoted; the American one turns bad after a restart and is
    rolled back. Each region's traffic changes only on its own service, and the restarted daemon
    (restored from the annotations) resumes both. Before services were identified by project,
    location and name, the second deploy superseded the first: one rollout for two services."""
    from tests.integration.live_harness import MANAGED, PROJECT, TrafficFeeder, monitoring_sink

    eu = f"projects/{PROJECT}/locations/{EU}/services/checkout"
    us = world.run.add_service("checkout", PROJECT, US, revisions=[US_BASELINE], labels=dict(MANAGED))
    world.fakes.deploy_canary(eu, CANARY)
    world.fakes.deploy_canary(us, US_CANARY)
    sink = monitoring_sink(world.fakes.monitoring)
    eu_feeder = TrafficFeeder(world.clock, world.run, sink, location=EU)
    eu_feeder.add("checkout", {BASELINE: HEALTHY, CANARY: HEALTHY})
    us_feeder = TrafficFeeder(world.clock, world.run, sink, location=US, seed=11)
    us_feeder.add("checkout", {US_BASELINE: HEALTHY, US_CANARY: HEALTHY})
    settings = {"locations": (EU, US)}

    def changes(resource: str, canary: str) -> list[int]:
        return [split.get(canary, 0) for name, split in world.run.resource_traffic_changes if name == resource]

    eu_feeder.start()
    us_feeder.start()
    try:
        with LiveDaemon(world.settings(**settings), world.clock):
            publisher = Publisher(world.topics.events)
            publisher.publish_deploy(audit_replace_service("checkout", CANARY, BASELINE, world.clock.now(),
                                                           location=EU))
            publisher.publish_deploy(audit_replace_service("checkout", US_CANARY, US_BASELINE, world.clock.now(),
                                                           location=US))
            wait_until(lambda: changes(eu, CANARY) == [5] and changes(us, US_CANARY) == [5], WAIT_S,
                       "both canaries at 5%")
        assert world.run.annotations_of(eu)[f"{P}canary"] == CANARY
        assert world.run.annotations_of(us)[f"{P}canary"] == US_CANARY
        us_feeder.set_profile("checkout", US_CANARY, BROKEN)
        with restarted(world, **settings) as live:
            wait_until(lambda: world.run.annotations_of(us).get(f"{P}status") == "rolled-back", WAIT_S,
                       "the American canary rolled back")
            wait_until(lambda: world.run.annotations_of(eu).get(f"{P}status") == "completed", WAIT_S,
                       "the European canary promoted to 100%")
            decisions = live.decisions("checkout")
    finally:
        eu_feeder.stop()
        us_feeder.stop()
    assert changes(eu, CANARY) == [5, 25, 50, 100]
    assert changes(us, US_CANARY) == [5, 0]
    assert world.run.traffic_of(us) == {US_BASELINE: 100, US_CANARY: 0}
    assert world.run.traffic_of(eu).get(CANARY) == 100
    # Every changed split named only its own region's revisions.
    for name, split in world.run.resource_traffic_changes:
        assert set(split) <= ({BASELINE, CANARY} if name == eu else {US_BASELINE, US_CANARY}), (name, split)
    rollback = next(d for d in decisions if d["action"] == "rollback")
    assert (rollback["location"], rollback["canary"]) == (US, US_CANARY)
    assert {d["location"] for d in decisions if d["action"] == "promote"} == {EU}
