"""Cloud Monitoring incident notifications (Pub/Sub channel, payload schema 1.2) as `Alert`
events. Called by `daemon.core.intake.parse_message`.

Google documents that any field may be absent or empty, so only what the core cannot do without
is required: the incident id (the dedup key), a state of open or closed (compared
case-insensitively: some senders write "OPEN"), and a time. The time is `started_at` for an open
incident and `ended_at` (else `started_at`) for a closed one, both epoch seconds; the Pub/Sub
`logging.googleapis.com/timestamp` attribute stands in only when neither is there. Service and
revision come from the Cloud Run resource labels; an empty revision label means the alert is about
the whole service (None). The "Send test notification" button's `"version": "test"` is Ignored.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from daemon.core.events import Alert, Event
from daemon.core.intake_fields import (
    Bad, Skip, Window, epoch_time, obj_at, parse_time, sane_time, short, str_at, type_name, wrong,
)

SUPPORTED_VERSIONS = frozenset({"1.2"})


def parse_incident(msg: Mapping[str, Any], attributes: Mapping[str, str] | None, *,
                   window: Window) -> list[Event]:
    version = msg.get("version")
    if version == "test":
        raise Skip("test notification (version \"test\")")
    if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
        raise Bad(f"incident.version: {short(version)} is not a supported schema version (1.2)")
    incident = msg.get("incident")
    if not isinstance(incident, dict):
        raise wrong("incident", "an object", incident)

    incident_id = incident.get("incident_id")
    if incident_id is None:
        raise Bad("incident.incident_id: missing")
    if not isinstance(incident_id, str):
        raise Bad(f"incident.incident_id: expected a string, got {type_name(incident_id)}")
    if not incident_id.strip():
        raise Bad("incident.incident_id: empty string")

    state_raw = incident.get("state")
    if not isinstance(state_raw, str):
        raise wrong("incident.state", "a string", state_raw)
    state = state_raw.strip().lower()
    if state not in ("open", "closed"):
        raise Bad(f"incident.state: {short(state_raw)} is not open or closed")

    when = _incident_time(incident, state, attributes, window)
    labels = obj_at(incident, "resource", "labels")
    service = _label(labels, "service_name")
    revision = _label(labels, "revision_name")
    return [Alert(
        time=when, service=service, revision=revision, incident_id=incident_id,
        state="open" if state == "open" else "closed",
        policy_name=str_at(incident, "policy_name"),
        summary=str_at(incident, "summary"),
        project=str_at(incident, "scoping_project_id") or (_label(labels, "project_id") or ""),
        severity=str_at(incident, "severity").strip().lower(),
        policy_labels=_user_labels(incident),
        # The service's region (cloud_run_revision resources have it): `checkout` may run in two.
        location=_label(labels, "location") or "",
    )]


def _user_labels(incident: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The alert policy's user labels (how a team marks its P0/P1 policies), strings only."""
    labels = obj_at(incident, "policy_user_labels")
    if not isinstance(labels, dict):
        return ()
    return tuple(sorted((k, v) for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)))


def _label(labels: Any, key: str) -> str | None:
    if not isinstance(labels, dict):
        return None
    value = labels.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _incident_time(incident: Mapping[str, Any], state: str, attributes: Mapping[str, str] | None,
                   window: Window) -> datetime:
    keys = ("started_at",) if state == "open" else ("ended_at", "started_at")
    for key in keys:
        value = incident.get(key)
        if value is not None and value != "":
            return sane_time(epoch_time(value, f"incident.{key}"), window, f"incident.{key}")
    attr = attributes.get("logging.googleapis.com/timestamp") if attributes else None
    if attr is not None:
        path = "attributes.logging.googleapis.com/timestamp"
        return sane_time(parse_time(attr, path), window, path)
    raise Bad(f"incident.{keys[0]}: missing (and no logging.googleapis.com/timestamp attribute)")
