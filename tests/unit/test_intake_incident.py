"""Cloud Monitoring incident notifications (schema 1.2): open, closed, test notifications, and
defensive parsing of fields Google says may be absent or empty."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from daemon.core.events import Alert, Ignored, Rejected
from daemon.core.intake import parse_message
from tests.unit.test_intake_examples import INCIDENT_OPEN, NOW

BASE = json.loads(INCIDENT_OPEN)
STARTED = datetime.fromtimestamp(1795169700, tz=timezone.utc)


def incident(**changes: Any) -> dict[str, Any]:
    msg = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            msg["incident"].pop(key, None)
        else:
            msg["incident"][key] = value
    return msg


def _parse(msg: Any, attributes: Any = None) -> Any:
    return parse_message(json.dumps(msg), attributes, now=NOW, where="msg 2")


def _one(msg: Any, attributes: Any = None) -> Alert:
    result = _parse(msg, attributes)
    assert isinstance(result, list) and len(result) == 1, result
    assert isinstance(result[0], Alert)
    return result[0]


def test_closed_incident_uses_ended_at() -> None:
    event = _one(incident(state="closed", ended_at=1795170000))
    assert event.state == "closed" and event.time == datetime.fromtimestamp(1795170000, tz=timezone.utc)
    assert event.incident_id == "0.n4kq2w8zt1ab"
    # No ended_at: fall back to started_at.
    assert _one(incident(state="closed", ended_at=None)).time == STARTED


@pytest.mark.parametrize("state, expected", [("OPEN", "open"), ("Closed", "closed"), (" open ", "open")])
def test_state_is_compared_case_insensitively(state: str, expected: str) -> None:
    assert _one(incident(state=state, ended_at=1795170000)).state == expected


def test_empty_revision_label_means_the_whole_service() -> None:
    msg = incident()
    msg["incident"]["resource"]["labels"]["revision_name"] = ""
    event = _one(msg)
    assert event.service == "checkout" and event.revision is None


def test_minimal_incident_with_most_fields_absent() -> None:
    msg = {"version": "1.2", "incident": {"incident_id": "x1", "state": "open", "started_at": "1795169700",
                                          "policy_name": 17, "resource": "garbage"}}
    event = _one(msg)
    assert (event.service, event.revision, event.policy_name, event.project) == (None, None, "", "")
    assert event.time == STARTED


def test_attribute_timestamp_is_only_a_fallback() -> None:
    attrs = {"logging.googleapis.com/timestamp": "2026-11-20T10:20:00Z"}
    assert _one(incident(), attrs).time == STARTED
    assert _one(incident(started_at=None), attrs).time == datetime(2026, 11, 20, 10, 20, tzinfo=timezone.utc)


def test_test_notification_is_ignored() -> None:
    msg = copy.deepcopy(BASE)
    msg["version"] = "test"
    result = _parse(msg)
    assert isinstance(result, Ignored) and "test notification" in result.reason and result.where == "msg 2"


@pytest.mark.parametrize("msg, fragment", [
    (incident(incident_id=None), "incident.incident_id: missing"),
    (incident(incident_id=""), "incident.incident_id: empty string"),
    (incident(incident_id=12), "incident.incident_id: expected a string, got number"),
    (incident(state=None), "incident.state: missing"),
    (incident(state="acknowledged"), "incident.state: 'acknowledged' is not open or closed"),
    (incident(started_at=None), "incident.started_at: missing"),
    (incident(started_at="soon"), "incident.started_at: 'soon' is not a number"),
    (incident(started_at=-5), "incident.started_at: negative epoch seconds"),
    (incident(started_at=1e300), "incident.started_at: epoch seconds 1e+300 out of range"),
    (incident(started_at=4102444800), "incident.started_at: 2100-01-01T00:00:00+00:00 is"),
    ({"version": "1.2"}, "incident: missing"),
    ({"version": "1.2", "incident": []}, "incident: expected an object, got array"),
    ({"version": "2.0", "incident": {}}, "incident.version: '2.0' is not a supported schema version"),
    ({"incident": {"incident_id": "x"}}, "incident.version: None"),
])
def test_rejected_incidents(msg: dict[str, Any], fragment: str) -> None:
    result = _parse(msg)
    assert isinstance(result, Rejected), result
    assert fragment in result.reason, result.reason
    assert result.kind_hint == "incident"
