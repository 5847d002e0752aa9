"""Issue 12, at the unit level: whole-email authorisation (`policies.principals`), each subscription
accepting only its own format (`daemon.core.intake`), commands read from audit entries only
(`daemon.core.intake_audit`), handled command ids kept on the service, the settings migration."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.core.command_annotation import COMMAND_ANNOTATION, encode
from daemon.core.events import Command, Deploy, Ignored, Rejected, TrafficChanged
from daemon.core.intake import parse_message
from daemon.core.outcome import record_of
from daemon.core.persist import service_state_from_annotations
from daemon.core.rollout import HANDLED_COMMANDS_KEPT, ServiceState
from daemon.settings import SettingsError, load_settings
from policies import load_default_policy
from policies.model import Commands
from policies.principals import entry_problem, may_command_service, may_flip_kill_switch, principal_matches
from simulations.audit_sink import update_service_entry

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
TRICKY = "mallory@evil.example (x)@olympuscloud.ai"


# --- principals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("principal,allowed,expected", [
    ("alice@olympuscloud.ai", ["*@olympuscloud.ai"], True),
    ("alice@OlympusCloud.AI", ["*@olympuscloud.ai"], True),  # domains compare case-insensitively
    ("alice@olympuscloud.ai", ["alice@olympuscloud.ai"], True),
    ("Alice@olympuscloud.ai", ["alice@olympuscloud.ai"], False),  # local parts exactly
    (TRICKY, ["*@olympuscloud.ai"], False),
    ("mallory@evil.example", ["*@olympuscloud.ai"], False),
    ("mallory@olympuscloud.ai.evil.example", ["*@olympuscloud.ai"], False),
    ("mallory@sub.olympuscloud.ai", ["*@olympuscloud.ai"], False),
    ("alice@olympuscloud.ai ", ["*@olympuscloud.ai"], False),
    ("<alice@olympuscloud.ai>", ["*@olympuscloud.ai"], False),
    ("alice@olympuscloud.ai,mallory@evil.example", ["*@olympuscloud.ai"], False),
    ("", ["*@olympuscloud.ai"], False),
    ("*@olympuscloud.ai", ["*@olympuscloud.ai"], False),
])
def test_principal_matching_is_whole_email(principal: str, allowed: list[str], expected: bool) -> None:
    assert principal_matches(principal, allowed) is expected


@given(st.text(max_size=80))
def test_no_text_with_spaces_or_two_ats_ever_matches(text: str) -> None:
    if " " in text or text.count("@") != 1:
        assert not principal_matches(text, ["*@olympuscloud.ai", "*@example.com"])
        assert not may_command_service(text, [])


def test_iam_alone_for_services_but_a_list_for_the_kill_switch() -> None:
    assert may_command_service("bob@example.com", [])  # IAM let bob write on the service
    assert not may_command_service("bob@example.com", ["alice@example.com"])
    assert not may_command_service(TRICKY, [])
    assert not may_flip_kill_switch("bob@example.com", [])  # nobody listed: nobody
    assert may_flip_kill_switch("alice@example.com", ["alice@example.com"])


@pytest.mark.parametrize("entry", ["sre-*@olympuscloud.ai", "*", "*@*", TRICKY, "alice", "[a]@x.com", "*@bad domain"])
def test_patterns_are_refused_when_the_policy_loads(entry: str) -> None:
    assert entry_problem(entry) is not None
    with pytest.raises(ValueError, match="authorized_principals"):
        Commands(authorized_principals=(entry,))


def test_plain_entries_load() -> None:
    commands = Commands(authorized_principals=("*@olympuscloud.ai", "bob@example.com"))
    assert commands.kill_switch_allowed == commands.authorized_principals
    assert Commands(kill_switch_principals=("alice@example.com",)).kill_switch_allowed == ("alice@example.com",)


# --- one format per subscription -------------------------------------------------------------------

def audit_command(action: str = "pause", *, principal: str = "alice@example.com", mask: tuple[str, ...] = ("annotations",),
                  error: tuple[int, str] | None = None, command_id: str = "") -> dict[str, Any]:
    value = encode(command_id or str(uuid.uuid4()), action, "why", NOW)
    return update_service_entry(project="p", location="us-central1", service="checkout",
                                request_service={"annotations": {COMMAND_ANNOTATION: value, "team": "x"}},
                                principal=principal, at=NOW, operation_id="projects/p/locations/us-central1/operations/1",
                                update_mask=mask, error=error)


NATIVE = {"type": "command", "time": "2026-11-24T15:00:00Z", "service": "checkout", "action": "promote",
          "by": "alice@example.com"}
INCIDENT = {"version": "1.2", "incident": {"incident_id": "i-1", "state": "open", "started_at": 1795100000,
                                           "resource": {"labels": {"service_name": "checkout"}}}}
METRICS = {"type": "metrics", "time": "2026-11-24T15:00:00Z", "service": "checkout", "revision": "r1",
           "interval_s": 60, "request_count": {"2xx": 10}}


def parse(body: dict[str, Any], source: str) -> Any:
    return parse_message(json.dumps(body).encode(), None, now=NOW, source=source,
                         own_principals=frozenset({"rollbackd@p.iam.gserviceaccount.com"}))


@pytest.mark.parametrize("body,source,found", [
    (NATIVE, "audit", "a native 'command' event"),
    (NATIVE, "incidents", "a native 'command' event"),
    (NATIVE, "metrics", "a native 'command' event"),
    (INCIDENT, "audit", "an incident notification"),
    (METRICS, "audit", "a native 'metrics' event"),
    (METRICS, "incidents", "a native 'metrics' event"),
    (audit_command(), "incidents", "an audit entry"),
    (audit_command(), "metrics", "an audit entry"),
    ({"hello": 1}, "audit", "an unrecognised message"),
])
def test_each_subscription_refuses_other_formats(body: dict[str, Any], source: str, found: str) -> None:
    result = parse(body, source)
    assert isinstance(result, Rejected) and result.reason.startswith("wrong subscription")
    assert found in result.reason


def test_each_subscription_accepts_its_own_format() -> None:
    assert isinstance(parse(INCIDENT, "incidents")[0], type(parse(INCIDENT, "recording")[0]))
    assert parse(METRICS, "metrics")[0].kind == "metrics"
    assert isinstance(parse(NATIVE, "recording")[0], Command)  # replay files keep native events


# --- commands from audit entries -------------------------------------------------------------------

def test_an_annotation_only_update_is_the_command_by_googles_principal() -> None:
    [command] = parse(audit_command("abort"), "audit")
    assert isinstance(command, Command)
    assert (command.action, command.by, command.service, command.time) == ("abort", "alice@example.com", "checkout", NOW)
    assert command.command_id and command.location == "us-central1"


def test_commands_refused_or_ignored_at_intake() -> None:
    assert isinstance(parse(audit_command(principal=""), "audit"), Rejected)
    failed = parse(audit_command(error=(10, "conflict")), "audit")
    assert isinstance(failed, Ignored) and "failed operation" in failed.reason
    own = parse(audit_command(principal="rollbackd@p.iam.gserviceaccount.com"), "audit")
    assert isinstance(own, Ignored) and "own update" in own.reason
    bad = audit_command()
    bad["protoPayload"]["request"]["service"]["annotations"][COMMAND_ANNOTATION] = '{"id": "x", "action": "promote"}'
    assert isinstance(parse(bad, "audit"), Rejected)
    plain = update_service_entry(project="p", location="us-central1", service="checkout",
                                 request_service={"annotations": {"team": "x"}}, principal="bob@example.com", at=NOW,
                                 operation_id="op", update_mask=("annotations",))
    assert isinstance(parse(plain, "audit"), Ignored)  # no deploy, no traffic change


def test_a_full_update_re_sending_a_command_is_the_command_and_the_traffic_change() -> None:
    entry = audit_command(mask=())
    entry["protoPayload"]["request"]["service"]["traffic"] = [{"revision": "r1", "percent": 100}]
    events = parse(entry, "audit")
    assert [type(e) for e in events] == [Command, TrafficChanged]


def test_deploy_labels_in_an_entry_are_kept_only_as_what_the_entry_said() -> None:
    """The dispatcher replaces them with the service's own (tested live in test_forged_commands)."""
    from tests.integration.live_traffic import audit_replace_service

    entry = audit_replace_service("checkout", "checkout-2", "checkout-1", NOW)
    [deploy] = parse(entry, "audit")
    assert isinstance(deploy, Deploy)


# --- handled command ids on the service ------------------------------------------------------------

def test_handled_commands_are_saved_read_back_and_capped() -> None:
    ids = [str(uuid.UUID(int=n, version=4)) for n in range(HANDLED_COMMANDS_KEPT + 3)]
    state = ServiceState(service="checkout")
    for command_id in ids:
        state = state.with_handled(command_id)
    assert state.handled_commands == tuple(ids[-HANDLED_COMMANDS_KEPT:])
    record = {k: v for k, v in record_of(state).items() if v}
    back = service_state_from_annotations("checkout", "p", "l", record, load_default_policy(), now=NOW)
    assert back is not None and back.handled_commands == state.handled_commands
    junk = dict(record, **{"rollbackd.dev/commands-handled": "not-an-id,../../x"})
    assert service_state_from_annotations("checkout", "p", "l", junk, load_default_policy(), now=NOW) is None


# --- settings migration ------------------------------------------------------------------------------

@pytest.mark.parametrize("old", ["subscription", "events_topic"])
def test_the_old_single_subscription_is_a_clear_start_up_error(old: str) -> None:
    values = {"project": "p", "locations": ["l"], "principal": "r@p.iam.gserviceaccount.com",
              "audit_subscription": "a", old: "rollbackd"}
    with pytest.raises(SettingsError, match=f"'{old}' is no longer a setting.*audit_subscription"):
        load_settings(None, env={}, overrides=values)
    with pytest.raises(SettingsError, match="no longer a setting"):
        load_settings(None, env={f"ROLLBACKD_{old.upper()}": "x"}, overrides={k: v for k, v in values.items()
                                                                              if k != old})


def test_metrics_over_pubsub_needs_its_subscription() -> None:
    values = {"project": "p", "locations": ["l"], "principal": "r@p.iam.gserviceaccount.com",
              "audit_subscription": "a", "metrics_mode": "pubsub"}
    with pytest.raises(SettingsError, match="metrics_subscription"):
        load_settings(None, env={}, overrides=values)
    settings = load_settings(None, env={}, overrides=dict(values, metrics_subscription="m"))
    assert settings.subscriptions == {"audit": "projects/p/subscriptions/a", "metrics": "projects/p/subscriptions/m"}


def test_a_command_older_than_max_age_is_still_parsed_but_has_an_issue_time() -> None:
    """Expiry is the dispatcher's (it knows the policy); the intake keeps the issue time for it."""
    entry = audit_command()
    [command] = parse_message(json.dumps(entry).encode(), None, now=NOW + timedelta(hours=1), source="audit")
    assert command.time == NOW


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                     max_leaves=20)


@given(st.sampled_from(["audit", "incidents", "metrics"]), _json,
       st.sampled_from(["protoPayload", "incident", "type", "version"]))
def test_no_input_on_any_subscription_raises_or_yields_a_foreign_event(source: str, body: Any, key: str) -> None:
    message = {key: body} if not isinstance(body, dict) else {**body, key: body.get(key, body)}
    result = parse_message(json.dumps(message).encode(), None, now=NOW, source=source)
    if isinstance(result, list):
        kinds = {event.kind for event in result}
        allowed = {"audit": {"deploy", "traffic-changed", "command"}, "incidents": {"alert"},
                   "metrics": {"metrics"}}[source]
        assert kinds <= allowed, (source, kinds)


@given(st.text(max_size=300))
def test_a_command_annotation_of_any_text_is_a_command_or_a_reason(text: str) -> None:
    entry = audit_command()
    entry["protoPayload"]["request"]["service"]["annotations"][COMMAND_ANNOTATION] = text
    result = parse(entry, "audit")
    assert isinstance(result, Rejected) or all(isinstance(e, Command) for e in result)
