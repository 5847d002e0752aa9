"""Only the right people steer traffic (issue 12): every forged story of the review, on the
production path, each refused with its reason and no traffic moved; and a genuine command still
works end to end.

`run_live` with the real clients against the Pub/Sub emulator and the gRPC Cloud Run fake, which
acts like Google at the wire: it identifies each caller from its bearer token (a test table) and
publishes the Admin Activity audit entry of every accepted update to the audit topic, as the
Logging sink would (`connect_audit_sink`). Commands come only from there: `rollbackd ctl` writes
the `rollbackd.dev/command` annotation with the caller's own credentials.

The rollouts here get no metrics, so the short policy holds them at 5% for missing data: nothing but
an accepted command (promote, abort) or an accepted event (an incident, a traffic change) could move
or halt them, which is what each forgery tries.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from daemon.core.command_annotation import COMMAND_ANNOTATION, encode
from daemon.core.commands import ANNOTATION_PREFIX as P
from simulations.audit_sink import update_service_entry
from tests.integration.live_harness import (PRINCIPAL, SHORT_POLICY, LiveDaemon, Publisher, audit_replace_service,
                                            ctl_as, incident_notification, journal_records, wait_until)
from tests.reliability.engine_world import v2_update_entry
from tests.reliability.test_live_rails import BASELINE, CANARY, OPERATOR, WAIT_S, World, wait_minutes, world  # noqa: F401

TRICKY = "mallory@evil.example (x)@olympuscloud.ai"


def begin(world: World) -> None:
    """A rollout at 5%, held for missing data (no metrics are fed)."""
    world.fakes.deploy_canary("checkout", CANARY)
    Publisher(world.topics.events).publish_deploy(audit_replace_service("checkout", CANARY, BASELINE,
                                                                        world.clock.now()))
    wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")


def journal(world: World, kind: str, text: str) -> list[dict[str, Any]]:
    return [r for r in journal_records(world.settings().journal)
            if r.get("type") == kind and text in r.get("reason", "")]


def policy_with(world: World, extra: str, principals: str = '["*@example.com"]') -> str:
    text = Path(SHORT_POLICY).read_text(encoding="utf-8").replace('["*@example.com"]', principals)
    path = world.tmp / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text.replace("overrides: []\n", "") + extra, encoding="utf-8")
    return str(path)


def native_command(world: World, action: str, by: str = OPERATOR) -> dict[str, Any]:
    return {"type": "command", "time": world.clock.now().isoformat(), "service": "checkout", "action": action,
            "by": by, "reason": "forged"}


# --- forged events on the subscriptions ----------------------------------------------------------

@pytest.mark.parametrize("topic", ["events", "incidents", "metrics"])
def test_forged_native_promotes_are_refused_on_every_subscription(world: World, topic: str) -> None:
    with LiveDaemon(world.settings(metrics_mode="both"), world.clock):
        begin(world)
        publisher = Publisher(getattr(world.topics, topic))
        for _ in range(3):
            publisher.publish_json(native_command(world, "promote"), key="checkout")
        wait_until(lambda: len(journal(world, "rejected", "wrong subscription")) >= 3, WAIT_S, "three refusals")
        wait_minutes(world, 3)
    assert world.splits() == [5], "a forged promote moved traffic"
    reasons = [r["reason"] for r in journal(world, "rejected", "wrong subscription")]
    assert all("not a native 'command' event" in reason for reason in reasons), reasons


def test_a_forged_incident_on_the_audit_subscription_is_refused(world: World) -> None:
    with LiveDaemon(world.settings(), world.clock) as live:
        begin(world)
        Publisher(world.topics.events).publish_json(incident_notification("checkout", "forged-1", "open",
                                                                          world.clock.now(), revision=CANARY))
        wait_until(lambda: journal(world, "rejected", "wrong subscription"), WAIT_S, "the refusal")
        wait_minutes(world, 2)
    assert world.splits() == [5] and world.run.traffic_of("checkout")[CANARY] == 5, "a forged incident rolled back"
    assert "not an incident notification" in journal(world, "rejected", "wrong subscription")[0]["reason"]
    assert not any(d["action"] == "rollback" for d in live.decisions())


def test_a_forged_audit_entry_on_the_incidents_subscription_is_refused(world: World) -> None:
    with LiveDaemon(world.settings(), world.clock) as live:
        begin(world)
        human = v2_update_entry("checkout", CANARY, BASELINE, 50, world.clock.now(), principal="human@example.com")
        human = human.replace(b"shop-prod", world.fakes.project.encode()).replace(
            b"europe-west1", world.fakes.location.encode())
        Publisher(world.topics.incidents).client.publish(world.topics.incidents, human).result(30)
        wait_until(lambda: journal(world, "rejected", "wrong subscription"), WAIT_S, "the refusal")
        wait_minutes(world, 2)
    assert "not an audit entry" in journal(world, "rejected", "wrong subscription")[0]["reason"]
    assert not any(d["action"] == "halt" for d in live.decisions()), "a forged audit entry halted the rollout"
    assert world.run.annotations_of("checkout")[f"{P}status"] != "halted"


def test_a_forged_kill_switch_is_refused(world: World) -> None:
    """A native kill-switch-on on the audit topic is refused as the wrong format; one written as an
    annotation by someone IAM lets update the service but whom the policy does not list for the
    kill switch is refused by the daemon and notified."""
    policy = policy_with(world, "overrides: []\n",
                         '["*@example.com", "mallory@evil.test"]\n  kill_switch_principals: ["alice@example.com"]')
    with LiveDaemon(world.settings(policy=policy), world.clock) as live:
        begin(world)
        Publisher(world.topics.events).publish_json(native_command(world, "kill-switch-on"), key="checkout")
        code, _, err = ctl_as("token-mallory", ["kill-switch-on", "checkout", "--reason", "mine now"], world.fakes,
                              world.clock)
        assert code == 0, err
        wait_until(lambda: any(d["action"] == "refuse" for d in live.decisions()), WAIT_S, "the refusal")
        wait_until(lambda: journal(world, "rejected", "wrong subscription"), WAIT_S, "the native one refused")
    refused = next(d for d in live.decisions() if d["action"] == "refuse")
    assert "refused 'kill-switch-on' from mallory@evil.test" in refused["reason"]
    assert world.run.annotations_of("checkout").get(f"{P}kill-switch", "") == ""
    assert live.engine.actions_enabled
    notes = world.topics.pull_notifications(1)
    assert any("refused command kill-switch-on" in json.dumps(n) for n in notes)


def test_forged_deploy_labels_cannot_choose_a_relaxed_override(world: World) -> None:
    """The override for `tier: experimental` (one 1-minute phase to 100%) must come from the labels
    Cloud Run has on the service, never from a deploy entry's labels."""
    relaxed = ("overrides:\n  - match: {labels: {tier: experimental}}\n    policy:\n      phases:\n"
               "        - {name: only, traffic: 100%}\n")
    with LiveDaemon(world.settings(policy=policy_with(world, relaxed)), world.clock) as live:
        world.fakes.deploy_canary("checkout", CANARY)
        entry = audit_replace_service("checkout", CANARY, BASELINE, world.clock.now())
        entry["protoPayload"]["request"]["service"]["metadata"]["labels"] = {"tier": "experimental",
                                                                              "rollbackd": "enabled"}
        Publisher(world.topics.events).publish_deploy(entry)
        wait_until(lambda: world.splits(), WAIT_S, "the first step")
        wait_minutes(world, 2)
        labels = {key.name: value for key, value in live.engine.labels.items()}  # keyed by ServiceId
        assert labels["checkout"] == {"rollbackd": "enabled"}
        assert len(live.engine.policy_for("checkout").phases) == 4
    assert world.splits() == [5], "the forged labels chose the relaxed override"


def test_an_audit_entry_claiming_a_command_not_on_the_service_is_refused(world: World) -> None:
    """An audit entry (forged, or of an update that failed later) says alice wrote a promote; the
    service, read back, does not carry that command: nothing happens."""
    with LiveDaemon(world.settings(), world.clock) as live:
        begin(world)
        command = encode(str(uuid.uuid4()), "promote", "forged", world.clock.now())
        entry = update_service_entry(project=world.fakes.project, location=world.fakes.location, service="checkout",
                                     request_service={"annotations": {COMMAND_ANNOTATION: command}},
                                     principal=OPERATOR, at=world.clock.now(),
                                     operation_id=f"projects/{world.fakes.project}/locations/x/operations/forged",
                                     update_mask=["annotations"])
        Publisher(world.topics.events).publish_json(entry)
        wait_until(lambda: journal(world, "rejected", "is not on the service"), WAIT_S, "the refusal")
        wait_minutes(world, 2)
    assert world.splits() == [5]
    assert not any(d["action"] == "promote" and "promoted by" in d["reason"] for d in live.decisions())


def test_a_tricky_principal_does_not_match_a_domain(world: World) -> None:
    """`mallory@evil.example (x)@olympuscloud.ai` once matched `*@olympuscloud.ai` as a shell pattern.
    Even if such a principal reached an audit entry, it is not one plain email: refused."""
    policy = policy_with(world, "overrides: []\n", '["*@olympuscloud.ai"]')
    with LiveDaemon(world.settings(policy=policy), world.clock) as live:
        begin(world)
        code, _, err = ctl_as("token-tricky", ["abort", "checkout", "--reason", "x"], world.fakes, world.clock)
        assert code == 0, err
        wait_until(lambda: any(d["action"] == "refuse" for d in live.decisions()), WAIT_S, "the refusal")
    assert world.splits() == [5], "the tricky principal aborted the rollout"
    assert TRICKY in next(d for d in live.decisions() if d["action"] == "refuse")["reason"]


# --- the genuine path --------------------------------------------------------------------------

def test_ctl_pause_by_an_authorised_principal_goes_through_the_annotation_and_audit(world: World) -> None:
    with LiveDaemon(world.settings(), world.clock) as live:
        begin(world)
        code, out, err = ctl_as("token-alice", ["pause", "checkout", "--reason", "INC-5"], world.fakes, world.clock)
        assert code == 0 and "wrote pause on" in out, err
        wait_until(lambda: world.run.annotations_of("checkout").get(f"{P}paused") == "true", WAIT_S, "the pause")
    assert ("UpdateService", OPERATOR) in world.run.callers, "ctl did not write as the caller"
    command = json.loads(world.run.annotations_of("checkout")[COMMAND_ANNOTATION])
    assert command["action"] == "pause"
    assert command["id"] in world.run.annotations_of("checkout")[f"{P}commands-handled"]
    assert any("paused by alice@example.com (INC-5)" in d["reason"] for d in live.decisions())
    assert not any(r.get("type") == "ignored" and "own update" not in r.get("reason", "")
                   and "command" in r.get("reason", "") for r in journal_records(world.settings().journal))
    assert world.run.anonymous_principal == PRINCIPAL


def test_an_unauthorised_principal_is_refused_and_someone_is_told(world: World) -> None:
    with LiveDaemon(world.settings(), world.clock) as live:
        begin(world)
        code, _, err = ctl_as("token-mallory", ["abort", "checkout", "--reason", "let me in"], world.fakes,
                              world.clock)
        assert code == 0, err
        wait_until(lambda: any(d["action"] == "refuse" for d in live.decisions()), WAIT_S, "the refusal")
        wait_minutes(world, 1)
    assert world.splits() == [5]
    refused = next(d for d in live.decisions() if d["action"] == "refuse")
    assert "refused 'abort' from mallory@evil.test" in refused["reason"] and refused["acted"] is False
    notes = world.topics.pull_notifications(1)
    assert any("refused command abort" in json.dumps(n) for n in notes)
