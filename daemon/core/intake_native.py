"""Native events: rollbackd's own JSON contract (issue 2 §4), one object per Pub/Sub message or
recording line, dispatched on `"type"`.

Called by `daemon.core.intake.parse_message`; `daemon.core.codec` writes the same form back.
Unknown extra fields are allowed (the contract may grow optional fields); every known field is
checked for type and range, and a problem raises `Bad` with the dotted path of the field.

Request latencies are a Cloud Monitoring Distribution in its JSON form (camelCase as
`MessageToJson` writes it; the snake_case of proto-plus `to_json` is accepted too).
"""
from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable, Mapping

from daemon.core.events import (
    COMMAND_ACTIONS, ActionFailed, Alert, Command, Deploy, Event, Metrics, Tick, TrafficChanged,
)
from daemon.core.intake_fields import (
    INT64_MAX, Bad, as_count, as_float, as_int, not_future, opt_count, opt_name, opt_str, parse_time, percent,
    req_str, short, type_name,
)
from detectors.histogram import Histogram

REQUEST_CLASSES = frozenset({"1xx", "2xx", "3xx", "4xx", "5xx", "other"})
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)  # fits int64 without a range check
DEPLOY_SOURCES = frozenset({"native", "audit-v1", "audit-v2"})
MAX_UTILIZATION = 1.5  # memory/CPU ratios slightly above 1 happen (burst); beyond 1.5 is garbage
MAX_FINITE_BUCKETS = 10_000  # Cloud Monitoring's own limit


def _time(msg: Mapping[str, Any], now: datetime, fallback: datetime | None) -> datetime:
    if "time" not in msg and fallback is not None:
        return not_future(fallback, now, "time (from message attributes)")
    if "time" not in msg:
        raise Bad(f"{msg['type']}.time: missing")
    return not_future(parse_time(msg["time"], f"{msg['type']}.time"), now, f"{msg['type']}.time")


def parse_deploy(msg: Mapping[str, Any], now: datetime, fallback: datetime | None) -> list[Event]:
    canary_percent: int | None = 0
    if "canary_percent" in msg:
        raw = msg["canary_percent"]
        canary_percent = None if raw is None else percent(raw, "deploy.canary_percent")
    source = opt_str(msg, "source", "deploy.source", "native")
    if source not in DEPLOY_SOURCES:
        raise Bad(f"deploy.source: {short(source)} is not one of {', '.join(sorted(DEPLOY_SOURCES))}")
    return [Deploy(
        time=_time(msg, now, fallback),
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


def parse_metrics(msg: Mapping[str, Any], now: datetime, fallback: datetime | None) -> list[Event]:
    when = _time(msg, now, fallback)
    service = req_str(msg, "service", "metrics.service")
    revision = req_str(msg, "revision", "metrics.revision")
    if "interval_s" not in msg:
        raise Bad("metrics.interval_s: missing")
    interval_s = as_int(msg["interval_s"], "metrics.interval_s")
    if interval_s <= 0:
        raise Bad(f"metrics.interval_s: {interval_s} is not positive")
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


def _pick(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def parse_distribution(raw: Any, path: str) -> Histogram:
    """A Cloud Monitoring Distribution (JSON) as a Histogram. Bucket 0 is underflow, the last is
    overflow; trailing zero counts may be omitted; `count`, when present, must equal their sum."""
    if not isinstance(raw, dict):
        raise Bad(f"{path}: expected a Distribution object, got {type_name(raw)}")
    options = _pick(raw, "bucketOptions", "bucket_options")
    if not isinstance(options, dict):
        raise Bad(f"{path}.bucketOptions: " + ("missing" if options is None else
                                              f"expected an object, got {type_name(options)}"))
    counts_raw = _pick(raw, "bucketCounts", "bucket_counts")
    if counts_raw is None:
        counts_raw = []
    if not isinstance(counts_raw, list):
        raise Bad(f"{path}.bucketCounts: expected an array, got {type_name(counts_raw)}")
    counts = _counts(counts_raw, f"{path}.bucketCounts")
    count = raw.get("count")
    if count is not None:
        declared = as_count(count, f"{path}.count")
        if declared != sum(counts):
            raise Bad(f"{path}.count: {declared} disagrees with the sum of bucketCounts {sum(counts)}")
    for key in ("mean", "sumOfSquaredDeviation", "sum_of_squared_deviation"):
        if raw.get(key) is not None:
            as_float(raw[key], f"{path}.{key}")
    layouts = [k for k in options if k in _LAYOUTS]
    if len(layouts) != 1:
        raise Bad(f"{path}.bucketOptions: expected exactly one of exponentialBuckets, linearBuckets, "
                  f"explicitBuckets, got {short(sorted(str(k) for k in options), 80)}")
    name = layouts[0]
    spec = options[name]
    if not isinstance(spec, dict):
        raise Bad(f"{path}.bucketOptions.{name}: expected an object, got {type_name(spec)}")
    return _LAYOUTS[name](spec, counts, f"{path}.bucketOptions.{name}")


def _num_finite(spec: Mapping[str, Any], path: str) -> int:
    value = _pick(spec, "numFiniteBuckets", "num_finite_buckets")
    if value is None:
        raise Bad(f"{path}.numFiniteBuckets: missing")
    n = as_int(value, f"{path}.numFiniteBuckets")
    if not 1 <= n <= MAX_FINITE_BUCKETS:
        raise Bad(f"{path}.numFiniteBuckets: {n} is not between 1 and {MAX_FINITE_BUCKETS}")
    return n


def _check_len(counts: list[int], n_buckets: int, path: str) -> None:
    if len(counts) > n_buckets:
        raise Bad(f"{path}: {len(counts)} bucketCounts for a layout of {n_buckets} buckets")


def _exponential(spec: Mapping[str, Any], counts: list[int], path: str) -> Histogram:
    n = _num_finite(spec, path)
    growth = as_float(_required(spec, "growthFactor", "growth_factor", path), f"{path}.growthFactor")
    scale = as_float(_required(spec, "scale", "scale", path), f"{path}.scale")
    if growth <= 1.0:
        raise Bad(f"{path}.growthFactor: {growth} is not greater than 1")
    if scale <= 0.0:
        raise Bad(f"{path}.scale: {scale} is not greater than 0")
    _check_len(counts, n + 2, path)
    return _build(("exponential", n, growth, scale), counts, path)


def _linear(spec: Mapping[str, Any], counts: list[int], path: str) -> Histogram:
    n = _num_finite(spec, path)
    width = as_float(_required(spec, "width", "width", path), f"{path}.width")
    offset_raw = spec.get("offset")
    offset = 0.0 if offset_raw is None else as_float(offset_raw, f"{path}.offset")  # proto3 omits 0
    if width <= 0.0:
        raise Bad(f"{path}.width: {width} is not greater than 0")
    _check_len(counts, n + 2, path)
    return _build(("linear", n, width, offset), counts, path)


def _explicit(spec: Mapping[str, Any], counts: list[int], path: str) -> Histogram:
    bounds_raw = spec.get("bounds")
    if not isinstance(bounds_raw, list) or not bounds_raw:
        raise Bad(f"{path}.bounds: expected a non-empty array of numbers")
    if len(bounds_raw) > MAX_FINITE_BUCKETS + 1:
        raise Bad(f"{path}.bounds: {len(bounds_raw)} bounds is more than {MAX_FINITE_BUCKETS + 1}")
    bounds = [as_float(b, f"{path}.bounds[{i}]") for i, b in enumerate(bounds_raw)]
    for i in range(1, len(bounds)):
        if bounds[i] <= bounds[i - 1]:
            raise Bad(f"{path}.bounds[{i}]: bounds must be strictly increasing")
    _check_len(counts, len(bounds) + 1, path)
    return _build(("explicit", *bounds), counts, path)


def _required(spec: Mapping[str, Any], camel: str, snake: str, path: str) -> Any:
    value = _pick(spec, camel, snake)
    if value is None:
        raise Bad(f"{path}.{camel}: missing")
    return value


def _counts(raw: list[Any], path: str) -> list[int]:
    """Bucket counts; the common shapes (ints, or decimal strings) skip the general reader."""
    out = []
    for i, value in enumerate(raw):
        if type(value) is int and 0 <= value <= INT64_MAX:
            out.append(value)
        elif type(value) is str and _DIGITS.fullmatch(value):
            out.append(int(value))
        else:
            out.append(as_count(value, f"{path}[{i}]"))
    return out


def _build(key: tuple[Any, ...], counts: list[int], path: str) -> Histogram:
    try:
        layout = _layout(key)
    except (ValueError, OverflowError) as exc:  # e.g. edges overflowing to inf
        raise Bad(f"{path}: {exc}") from None
    return Histogram(layout.layout, layout.edges, tuple(counts) + (0,) * (len(layout.counts) - len(counts)),
                     layout.params)


@lru_cache(maxsize=64)  # bounded: explicit layouts can hold 10k bounds
def _layout(key: tuple[Any, ...]) -> Histogram:
    """An empty histogram per bucket layout, built (and validated) once by the Histogram
    constructors; messages reuse its edges. Computing 65 powers per message was most of the cost
    of parsing a metrics line. Callers have checked the count length against the layout."""
    if key[0] == "exponential":
        return Histogram.exponential(key[1], key[2], key[3], ())
    if key[0] == "linear":
        return Histogram.linear(key[1], key[2], key[3], ())
    return Histogram.explicit(key[1:], ())


_LAYOUTS: dict[str, Callable[[Mapping[str, Any], list[int], str], Histogram]] = {
    "exponentialBuckets": _exponential, "exponential_buckets": _exponential,
    "linearBuckets": _linear, "linear_buckets": _linear,
    "explicitBuckets": _explicit, "explicit_buckets": _explicit,
}


def parse_alert(msg: Mapping[str, Any], now: datetime, fallback: datetime | None) -> list[Event]:
    state = req_str(msg, "state", "alert.state")
    if state not in ("open", "closed"):
        raise Bad(f"alert.state: {short(state)} is not open or closed")
    if "service" not in msg:
        raise Bad("alert.service: missing")
    return [Alert(
        time=_time(msg, now, fallback),
        service=opt_name(msg, "service", "alert.service"),
        revision=opt_name(msg, "revision", "alert.revision"),
        incident_id=req_str(msg, "incident_id", "alert.incident_id"),
        state="open" if state == "open" else "closed",
        policy_name=opt_str(msg, "policy_name", "alert.policy_name"),
        summary=opt_str(msg, "summary", "alert.summary"),
        project=opt_str(msg, "project", "alert.project"),
    )]


def parse_command(msg: Mapping[str, Any], now: datetime, fallback: datetime | None) -> list[Event]:
    action = req_str(msg, "action", "command.action")
    if action not in COMMAND_ACTIONS:
        raise Bad(f"command.action: unknown action {short(action)} "
                  f"(expected one of {', '.join(COMMAND_ACTIONS)})")
    return [Command(
        time=_time(msg, now, fallback),
        service=req_str(msg, "service", "command.service"),
        action=action,
        by=req_str(msg, "by", "command.by"),
        reason=opt_str(msg, "reason", "command.reason"),
    )]


def parse_traffic_changed(msg: Mapping[str, Any], now: datetime, fallback: datetime | None) -> list[Event]:
    if "canary_percent" not in msg:
        raise Bad("traffic-changed.canary_percent: missing")
    raw = msg["canary_percent"]
    return [TrafficChanged(
        time=_time(msg, now, fallback),
        service=req_str(msg, "service", "traffic-changed.service"),
        canary_percent=None if raw is None else percent(raw, "traffic-changed.canary_percent"),
        principal=opt_str(msg, "principal", "traffic-changed.principal"),
        detail=opt_str(msg, "detail", "traffic-changed.detail"),
    )]


def parse_action_failed(msg: Mapping[str, Any], now: datetime, fallback: datetime | None) -> list[Event]:
    permanent = msg.get("permanent", True)
    if not isinstance(permanent, bool):
        raise Bad(f"action-failed.permanent: expected a boolean, got {type_name(permanent)}")
    return [ActionFailed(
        time=_time(msg, now, fallback),
        service=req_str(msg, "service", "action-failed.service"),
        action=req_str(msg, "action", "action-failed.action"),
        error=opt_str(msg, "error", "action-failed.error"),
        permanent=permanent,
    )]


def parse_tick(msg: Mapping[str, Any], now: datetime, fallback: datetime | None) -> list[Event]:
    return [Tick(time=_time(msg, now, fallback))]


Parser = Callable[[Mapping[str, Any], datetime, "datetime | None"], list[Event]]
PUBLIC_TYPES: dict[str, Parser] = {
    "deploy": parse_deploy, "metrics": parse_metrics, "alert": parse_alert,
    "command": parse_command, "traffic-changed": parse_traffic_changed,
}
# Engine-internal events: only accepted from rollbackd's own journal (`allow_internal=True`). From
# Pub/Sub a forged tick could move the core's notion of time forward and hurry a promotion.
INTERNAL_TYPES: dict[str, Parser] = {"action-failed": parse_action_failed, "tick": parse_tick}
