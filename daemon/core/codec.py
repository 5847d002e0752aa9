"""Events back to rollbackd's native JSON: the journal, recordings and the sandbox write these, and
`daemon.core.intake.parse_message` reads them back to an equal event (audit entries and incidents
become native `deploy` / `alert` / `traffic-changed` objects with their provenance kept).

`dumps_event` is one compact line with sorted keys, so the same event is always the same bytes
(replay's determinism test compares bytes). Latency histograms go back to the Cloud Monitoring
Distribution JSON form with their original bucket options; int64 values are written as strings,
as Cloud Monitoring does.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from daemon.core.events import (
    ActionApplied, ActionFailed, Alert, Command, Deploy, Event, Ignored, Metrics, Rejected, Tick, TrafficChanged,
)
from detectors.histogram import Histogram


def event_to_json(event: Event) -> dict[str, Any]:
    """The native form of `event` (a JSON-ready dict)."""
    if isinstance(event, Metrics):
        return _metrics(event)
    if isinstance(event, Deploy):
        out: dict[str, Any] = {
            "type": "deploy", "time": format_rfc3339(event.time), "service": event.service,
            "revision": event.revision, "project": event.project, "location": event.location,
            "canary_percent": event.canary_percent, "source": event.source,
        }
        if event.baseline is not None:
            out["baseline"] = event.baseline
        if event.principal:
            out["principal"] = event.principal
        if event.labels:
            out["labels"] = dict(event.labels)
        return out
    if isinstance(event, Alert):
        out = {"type": "alert", "time": format_rfc3339(event.time), "service": event.service,
               "incident_id": event.incident_id, "state": event.state}
        if event.revision is not None:
            out["revision"] = event.revision
        for key in ("policy_name", "summary", "project", "severity", "location"):
            if getattr(event, key):
                out[key] = getattr(event, key)
        if event.policy_labels:
            out["policy_labels"] = dict(event.policy_labels)
        return out
    if isinstance(event, Command):
        out = {"type": "command", "time": format_rfc3339(event.time), "service": event.service,
               "action": event.action, "by": event.by, "reason": event.reason}
        if event.command_id:
            out["command_id"] = event.command_id
        return _where(event, out)
    if isinstance(event, TrafficChanged):
        return _where(event, {"type": "traffic-changed", "time": format_rfc3339(event.time),
                              "service": event.service, "canary_percent": event.canary_percent,
                              "principal": event.principal, "detail": event.detail})
    if isinstance(event, ActionFailed):
        return _where(event, {"type": "action-failed", "time": format_rfc3339(event.time),
                              "service": event.service, "action": event.action, "error": event.error,
                              "permanent": event.permanent, "decision_id": event.decision_id,
                              "canary_percent_before": event.canary_percent_before})
    if isinstance(event, ActionApplied):
        return _where(event, {"type": "action-applied", "time": format_rfc3339(event.time),
                              "service": event.service, "action": event.action, "decision_id": event.decision_id,
                              "canary_percent": event.canary_percent, "changed": event.changed})
    if isinstance(event, Tick):
        return {"type": "tick", "time": format_rfc3339(event.time)}
    raise TypeError(f"not an event: {type(event).__name__}")


def _where(event: Command | TrafficChanged | ActionFailed | ActionApplied, out: dict[str, Any]) -> dict[str, Any]:
    """The service's project and location, when known: written only then, so a recording or journal
    from a source that never said (or from before services were told apart by region) keeps its bytes."""
    if event.project:
        out["project"] = event.project
    if event.location:
        out["location"] = event.location
    return out


def _metrics(event: Metrics) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "metrics", "time": format_rfc3339(event.time), "service": event.service,
        "revision": event.revision, "interval_s": event.interval_s,
        "request_count": {cls: count for cls, count in event.requests_by_class},
    }
    if event.project:
        out["project"] = event.project
    if event.location:
        out["location"] = event.location
    if event.latency is not None:
        out["request_latencies"] = histogram_to_json(event.latency)
    for key in ("memory_utilization", "cpu_utilization", "instance_count", "max_instances"):
        value = getattr(event, key)
        if value is not None:
            out[key] = value
    return out


def histogram_to_json(hist: Histogram) -> dict[str, Any]:
    """A Cloud Monitoring Distribution (JSON). Trailing zero buckets are omitted, as Monitoring
    does; the bucket options are the ones the histogram was built from."""
    counts = list(hist.counts)
    while counts and counts[-1] == 0:
        counts.pop()
    return {
        "count": str(hist.total),
        "bucketOptions": _bucket_options(hist),
        "bucketCounts": [str(c) for c in counts],
    }


def _bucket_options(hist: Histogram) -> dict[str, Any]:
    n = len(hist.edges) - 1
    if hist.layout == "exponential":
        if len(hist.params) == 3:
            return {"exponentialBuckets": {"numFiniteBuckets": int(hist.params[0]),
                                           "growthFactor": hist.params[1], "scale": hist.params[2]}}
        # Built without its parameters (by hand, or merged by older code): recover them, and use
        # them only if they regenerate exactly the same edges.
        if n >= 1 and hist.edges[0] > 0:
            scale, growth = hist.edges[0], hist.edges[1] / hist.edges[0]
            try:
                rebuilt = Histogram.exponential(n, growth, scale, ()).edges
            except (ValueError, OverflowError):
                rebuilt = ()
            if rebuilt == hist.edges:
                return {"exponentialBuckets": {"numFiniteBuckets": n, "growthFactor": growth, "scale": scale}}
    elif hist.layout == "linear":
        if len(hist.params) == 3:
            return {"linearBuckets": {"numFiniteBuckets": int(hist.params[0]),
                                      "width": hist.params[1], "offset": hist.params[2]}}
        if n >= 1:
            offset, width = hist.edges[0], hist.edges[1] - hist.edges[0]
            try:
                rebuilt = Histogram.linear(n, width, offset, ()).edges
            except (ValueError, OverflowError):
                rebuilt = ()
            if rebuilt == hist.edges:
                return {"linearBuckets": {"numFiniteBuckets": n, "width": width, "offset": offset}}
    # Explicit bounds always reproduce the edges exactly (the layout name is then "explicit").
    return {"explicitBuckets": {"bounds": list(hist.edges)}}


def dumps_event(event: Event) -> str:
    """One compact JSON line with sorted keys: identical events give identical bytes."""
    return json.dumps(event_to_json(event), sort_keys=True, separators=(",", ":"), allow_nan=False)


def format_rfc3339(when: datetime) -> str:
    """RFC 3339 UTC with a Z; microseconds only when present. Same text as
    `daemon.core.timefmt.format_rfc3339`, but always four-digit years, so year 1 still parses back."""
    when = when.astimezone(timezone.utc)
    text = (f"{when.year:04d}-{when.month:02d}-{when.day:02d}T"
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}")
    return text + (f".{when.microsecond:06d}Z" if when.microsecond else "Z")


def rejected_to_json(rejected: Rejected) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "rejected", "reason": rejected.reason, "where": rejected.where}
    if rejected.kind_hint:
        out["kind_hint"] = rejected.kind_hint
    if rejected.raw:
        out["raw"] = rejected.raw
    return out


def ignored_to_json(ignored: Ignored) -> dict[str, Any]:
    return {"type": "ignored", "reason": ignored.reason, "where": ignored.where}
