"""Native events: rollbackd's own JSON contract (issue 2 §4), one object per Pub/Sub message or
recording line, dispatched on `"type"`.

Called by `daemon.core.intake.parse_message`; `daemon.core.codec` writes the same form back.
Unknown extra fields are allowed (the contract may grow optional fields); every known field is
checked for type and range, and a problem raises `Bad` with the dotted path of the field.

Request latencies are read by `intake_distribution`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping

from daemon.core import sanity
from daemon.core.events import (
    COMMAND_ACTIONS, ActionApplied, ActionFailed, Alert, Command, Deploy, Event, Metrics, Tick, TrafficChanged,
)
from daemon.core.intake_distribution import parse_distribution
from daemon.core.intake_fields import (
    Bad, Window, as_count, as_float, as_int, opt_count, opt_name, opt_str, parse_time, percent, req_str,
    sane_time, short, type_name,
)

REQUEST_CLASSES = frozenset({"1xx", "2xx", "3xx", "4xx", "5xx", "other"})
DEPLOY_SOURCES = frozenset({"native", "audit-v1", "audit-v2"})
MAX_UTILIZATION = 1.5  # memory/CPU ratios slightly above 1 happen (burst); beyond 1.5 is garbage


def _time(msg: Mapping[str, Any], window: Window, fallback: datetime | None) -> datetime:
    if "time" not in msg and fallback is not None:
        return sane_time(fallback, window, "time (from message attributes)")
    if "time" not in msg:
        raise Bad(f"{msg['type']}.time: missing")
    return sane_time(parse_time(msg["time"], f"{msg['type']}.time"), window, f"{msg['type']}.time")


def parse_deploy(msg: Mapping[str, Any], window: Window, fallback: datetime | None) -> list[Event]:
    canary_percent: int | None = 0
    if "canary_percent" in msg:
        raw = msg["canary_percent"]
        canary_percent = None if raw is None else percent(raw, "deploy.canary_percent")
    source = opt_str(msg, "source", "deploy.source", "native")
    if source not in DEPLOY_SOURCES:
        raise Bad(f"deploy.source: {short(source)} is not one of {', '.join(sorted(DEPLOY_SOURCES))}")
    return [Deploy(
        time=_time(msg, window, fallback),
        service=req_str(msg, "service", "deploy.service"),
        revision=opt_name(msg, "revision", "deploy.revision"),
        baseline=opt_name(msg, "baseline", "deploy.baseline"),
        project=opt_str(msg, "project", "deploy.project"),
        location=opt_str(msg, "location", "deploy.location"),
        canary_percent=canary_percent,
        principal=opt_str(msg, "principal", "deploy.principal"),
        source=source,
        labels=_labels(msg.get("labels"), "deploy.labels"),
    )]


def _labels(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise Bad(f"{path}: expected an object, got {type_name(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise Bad(f"{path}.{short(key)}: expected a string, got {type_name(item)}")
    return tuple(sorted(value.items()))


def parse_metrics(msg: Mapping[str, Any], window: Window, fallback: datetime | None) -> list[Event]:
    when = _time(msg, window, fallback)
    service = req_str(msg, "service", "metrics.service")
    revision = req_str(msg, "revision", "metrics.revision")
    if "interval_s" not in msg:
        raise Bad("metrics.interval_s: missing")
    interval_s = as_int(msg["interval_s"], "metrics.interval_s")
    problem = sanity.interval_problem(interval_s, window.ranges)
    if problem is not None:
        raise Bad(f"metrics.interval_s: {problem}")
    latency_raw = msg.get("request_latencies")
    latency = None if latency_raw is None else parse_distribution(latency_raw, "metrics.request_latencies")
    return [Metrics(
        time=when, service=service, revision=revision, interval_s=interval_s,
        requests_by_class=_request_count(msg),
        latency=latency,
        memory_utilization=_utilization(msg, "memory_utilization"),
        cpu_utilization=_utilization(msg, "cpu_utilization"),
        instance_count=opt_count(msg, "instance_count", "metrics.instance_count"),
        max_instances=opt_count(msg, "max_instances", "metrics.max_instances"),
        project=opt_str(msg, "project", "metrics.project"),
        location=opt_str(msg, "location", "metrics.location"),
    )]


def _request_count(msg: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    if "request_count" not in msg:
        raise Bad("metrics.request_count: missing")
    raw = msg["request_count"]
    if not isinstance(raw, dict):
        raise Bad(f"metrics.request_count: expected an object, got {type_name(raw)}")
    counts: dict[str, int] = {}
    total: int | None = None
    for key, value in raw.items():
        path = f"metrics.request_count.{short(key, 20) if key not in REQUEST_CLASSES else key}"
        if key == "total":
            total = as_count(value, "metrics.request_count.total")
        elif key in REQUEST_CLASSES:
            counts[key] = as_count(value, path)
        else:
            raise Bad(f"{path}: unknown response class (expected 1xx..5xx, other or total)")
    if total is not None:
        # "total" is a cross-check, or a shorthand: requests not broken down by class go to "other".
        if counts.get("5xx", 0) > total:
            raise Bad(f"metrics.request_count.5xx: {counts['5xx']} is greater than total {total}")
        classified = sum(counts.values())
        if classified > total:
            raise Bad(f"metrics.request_count: classes sum to {classified}, more than total {total}")
        if classified < total:
            counts["other"] = counts.get("other", 0) + total - classified
    return tuple(sorted(counts.items()))


def _utilization(msg: Mapping[str, Any], key: str) -> float | None:
    value = msg.get(key)
    if value is None:
        return None
    ratio = as_float(value, f"metrics.{key}")
    if not 0.0 <= ratio <= MAX_UTILIZATION:
        raise Bad(f"metrics.{key}: {ratio} is outside [0, {MAX_UTILIZATION}]")
    return ratio


def parse_alert(msg: Mapping[str, Any], window: Window, fallback: datetime | None) -> list[Event]:
    state = req_str(msg, "state", "alert.state")
    if state not in ("open", "closed"):
        raise Bad(f"alert.state: {short(state)} is not open or closed")
    if "service" not in msg:
        raise Bad("alert.service: missing")
    return [Alert(
        time=_time(msg, window, fallback),
        service=opt_name(msg, "service", "alert.service"),
        revision=opt_name(msg, "revision", "alert.revision"),
        incident_id=req_str(msg, "incident_id", "alert.incident_id"),
        state="open" if state == "open" else "closed",
        policy_name=opt_str(msg, "policy_name", "alert.policy_name"),
        summary=opt_str(msg, "summary", "alert.summary"),
        project=opt_str(msg, "project", "alert.project"),
        severity=opt_str(msg, "severity", "alert.severity").lower(),
        policy_labels=_string_map(msg, "policy_labels", "alert.policy_labels"),
        location=opt_str(msg, "location", "alert.location"),
    )]


def _string_map(msg: Mapping[str, Any], key: str, where: str) -> tuple[tuple[str, str], ...]:
    raw = msg.get(key)
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise Bad(f"{where}: expected an object of strings, got {type_name(raw)}")
    return tuple(sorted(raw.items()))


def parse_command(msg: Mapping[str, Any], window: Window, fallback: datetime | None) -> list[Event]:
    action = req_str(msg, "action", "command.action")
    if action not in COMMAND_ACTIONS:
        raise Bad(f"command.action: unknown action {short(action)} "
                  f"(expected one of {', '.join(COMMAND_ACTIONS)})")
    return [Command(
        time=_time(msg, window, fallback),
        service=req_str(msg, "service", "command.service"),
        action=action,
        by=req_str(msg, "by", "command.by"),
        reason=opt_str(msg, "reason", "command.reason"),
        command_id=opt_str(msg, "command_id", "command.command_id"),
        project=opt_str(msg, "project", "command.project"),
        location=opt_str(msg, "location", "command.location"),
    )]


def parse_traffic_changed(msg: Mapping[str, Any], window: Window, fallback: datetime | None) -> list[Event]:
    if "canary_percent" not in msg:
        raise Bad("traffic-changed.canary_percent: missing")
    raw = msg["canary_percent"]
    return [TrafficChanged(
        time=_time(msg, window, fallback),
        service=req_str(msg, "service", "traffic-changed.service"),
        canary_percent=None if raw is None else percent(raw, "traffic-changed.canary_percent"),
        principal=opt_str(msg, "principal", "traffic-changed.principal"),
        detail=opt_str(msg, "detail", "traffic-changed.detail"),
        project=opt_str(msg, "project", "traffic-changed.project"),
        location=opt_str(msg, "location", "traffic-changed.location"),
    )]


def parse_action_failed(msg: Mapping[str, Any], window: Window, fallback: datetime | None) -> list[Event]:
    permanent = msg.get("permanent", True)
    if not isinstance(permanent, bool):
        raise Bad(f"action-failed.permanent: expected a boolean, got {type_name(permanent)}")
    return [ActionFailed(
        time=_time(msg, window, fallback),
        service=req_str(msg, "service", "action-failed.service"),
        action=req_str(msg, "action", "action-failed.action"),
        error=opt_str(msg, "error", "action-failed.error"),
        permanent=permanent,
        decision_id=opt_str(msg, "decision_id", "action-failed.decision_id"),
        canary_percent_before=_opt_percent(msg, "canary_percent_before", "action-failed.canary_percent_before"),
        project=opt_str(msg, "project", "action-failed.project"),
        location=opt_str(msg, "location", "action-failed.location"),
    )]


def parse_action_applied(msg: Mapping[str, Any], window: Window, fallback: datetime | None) -> list[Event]:
    changed = msg.get("changed", True)
    if not isinstance(changed, bool):
        raise Bad(f"action-applied.changed: expected a boolean, got {type_name(changed)}")
    return [ActionApplied(
        time=_time(msg, window, fallback),
        service=req_str(msg, "service", "action-applied.service"),
        action=req_str(msg, "action", "action-applied.action"),
        decision_id=opt_str(msg, "decision_id", "action-applied.decision_id"),
        canary_percent=_opt_percent(msg, "canary_percent", "action-applied.canary_percent"),
        changed=changed,
        project=opt_str(msg, "project", "action-applied.project"),
        location=opt_str(msg, "location", "action-applied.location"),
    )]


def _opt_percent(msg: Mapping[str, Any], key: str, where: str) -> int | None:
    raw = msg.get(key)
    return None if raw is None else percent(raw, where)


def parse_tick(msg: Mapping[str, Any], window: Window, fallback: datetime | None) -> list[Event]:
    return [Tick(time=_time(msg, window, fallback))]


Parser = Callable[[Mapping[str, Any], Window, "datetime | None"], list[Event]]
PUBLIC_TYPES: dict[str, Parser] = {
    "deploy": parse_deploy, "metrics": parse_metrics, "alert": parse_alert,
    "command": parse_command, "traffic-changed": parse_traffic_changed,
}
# Engine-internal events: only accepted from rollbackd's own journal (`allow_internal=True`). From
# Pub/Sub a forged tick could move the core's notion of time forward and hurry a promotion.
INTERNAL_TYPES: dict[str, Parser] = {"action-failed": parse_action_failed, "action-applied": parse_action_applied,
                                     "tick": parse_tick}
