"""Native events (issue 2 §4): what is accepted, and every kind of rejection with its precise reason.

Each case starts from a valid message and changes one thing, so a test can only pass if that one
change is what the intake objected to.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from daemon.core.events import (
    ActionFailed, Alert, Command, Deploy, Metrics, Rejected, Tick, TrafficChanged,
)
from daemon.core.intake import parse_message
from tests.unit.test_intake_examples import NATIVE_COMMAND, NATIVE_DEPLOY, NATIVE_METRICS, NOW

DROP = object()


def _msg(base: str, **changes: Any) -> dict[str, Any]:
    msg = json.loads(base)
    for key, value in changes.items():
        if value is DROP:
            msg.pop(key, None)
        else:
            msg[key] = value
    return msg


def _parse(msg: Any, **kwargs: Any) -> Any:
    text = msg if isinstance(msg, (str, bytes)) else json.dumps(msg)
    return parse_message(text, kwargs.pop("attributes", None), now=kwargs.pop("now", NOW), where="line 3",
                         **kwargs)


def _reject(msg: Any, fragment: str, **kwargs: Any) -> Rejected:
    result = _parse(msg, **kwargs)
    assert isinstance(result, Rejected), result
    assert fragment in result.reason, result.reason
    assert result.where == "line 3"
    return result


def _one(msg: Any, **kwargs: Any) -> Any:
    result = _parse(msg, **kwargs)
    assert isinstance(result, list) and len(result) == 1, result
    return result[0]


def _latencies(**changes: Any) -> dict[str, Any]:
    dist = json.loads(NATIVE_METRICS)["request_latencies"]
    for key, value in changes.items():
        if value is DROP:
            dist.pop(key, None)
        else:
            dist[key] = value
    return dist


# --- decoding and dispatch ----------------------------------------------------------------------
@pytest.mark.parametrize("data, fragment", [
    (b"\xff\xfe{}", "not UTF-8"),
    (b"", "empty message"),
    ("   \n", "empty message"),
    ('{"type": "deploy",', "not JSON"),
    ("[1, 2]", "expected a JSON object, got array"),
    ('"deploy"', "expected a JSON object, got string"),
    ("null", "expected a JSON object, got null"),
    ('{"type": "rollout"}', "type: unknown event type 'rollout'"),
    ('{"type": 7}', "type: expected a string, got number"),
    ('{"hello": "world"}', "unrecognised message"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ('{"n": ' + "9" * 5000 + "}", "not JSON"),
])
def test_undecodable_or_unknown_input_is_rejected(data: Any, fragment: str) -> None:
    _reject(data, fragment)


def test_rejected_keeps_a_bounded_copy_of_the_raw_input() -> None:
    result = _reject('{"type":"nope","pad":"' + "x" * 5000 + '"}', "unknown event type")
    assert result.raw.startswith('{"type":"nope"') and len(result.raw) < 600


def test_internal_events_only_from_the_journal() -> None:
    tick = '{"type":"tick","time":"2026-11-28T10:00:00Z"}'
    _reject(tick, "unknown event type 'tick'")
    assert _one(tick, allow_internal=True) == Tick(datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc))
    failed = '{"type":"action-failed","time":"2026-11-28T10:00:00Z","service":"s","action":"set-traffic",' \
             '"error":"403","permanent":false}'
    assert _one(failed, allow_internal=True) == ActionFailed(
        datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc), "s", "set-traffic", "403", False)


# --- times --------------------------------------------------------------------------------------
@pytest.mark.parametrize("time", [
    "2026-11-28T10:00:00", "2026-11-28", "28/11/2026 10:00", "2026-11-28T10:00Z", "20261128T100000Z",
    "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-28T10:00:60Z", "2026-11-28T10:00:00+25:00",
    "２０２６-11-28T10:00:00Z", 1795169700, None,
])
def test_time_must_be_rfc3339(time: Any) -> None:
    _reject(_msg(NATIVE_COMMAND, time=time), "command.time")


def test_time_offsets_and_nanoseconds_are_normalised_to_utc() -> None:
    event = _one(_msg(NATIVE_COMMAND, time="2026-11-28T11:04:59.123456789+01:00"))
    assert event.time == datetime(2026, 11, 28, 10, 4, 59, 123456, tzinfo=timezone.utc)
    assert event.time.tzinfo == timezone.utc


def test_time_more_than_ten_minutes_ahead_of_now_is_rejected() -> None:
    at_limit = (NOW + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert isinstance(_parse(_msg(NATIVE_COMMAND, time=at_limit)), list)
    beyond = (NOW + timedelta(minutes=10, seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _reject(_msg(NATIVE_COMMAND, time=beyond), "in the future")
    _reject(_msg(NATIVE_COMMAND, time="2030-01-01T00:00:00Z"), "command.time: 2030-01-01")
    # The limit is relative to the `now` passed in, not to any clock.
    assert isinstance(_parse(_msg(NATIVE_COMMAND, time="2030-01-01T00:00:00Z"),
                             now=datetime(2030, 1, 1, tzinfo=timezone.utc)), list)


def test_missing_time_falls_back_to_the_sink_attribute_only_when_absent() -> None:
    attrs = {"logging.googleapis.com/timestamp": "2026-11-28T09:00:00.5Z"}
    event = _one(_msg(NATIVE_COMMAND, time=DROP), attributes=attrs)
    assert event.time == datetime(2026, 11, 28, 9, 0, 0, 500000, tzinfo=timezone.utc)
    assert _one(_msg(NATIVE_COMMAND), attributes=attrs).time == datetime(2026, 11, 28, 10, 5, tzinfo=timezone.utc)
    _reject(_msg(NATIVE_COMMAND, time=DROP), "command.time: missing")


# --- deploy -------------------------------------------------------------------------------------
def test_deploy_optional_fields() -> None:
    event = _one(_msg(NATIVE_DEPLOY, revision=None, baseline=DROP, canary_percent=None,
                      labels={"team": "payments"}, principal="ci@x", source="audit-v1"))
    assert isinstance(event, Deploy) and event.needs_resolution and event.baseline is None
    assert event.canary_percent is None and event.labels == (("team", "payments"),)
    assert (event.principal, event.source) == ("ci@x", "audit-v1")
    assert _one(_msg(NATIVE_DEPLOY)).canary_percent == 0  # the contract: a deploy is at 0% unless said


@pytest.mark.parametrize("changes, fragment", [
    ({"service": DROP}, "deploy.service: missing"),
    ({"service": ""}, "deploy.service: empty string"),
    ({"service": 5}, "deploy.service: expected a string, got number"),
    ({"revision": ""}, "deploy.revision: empty string"),
    ({"revision": ["r"]}, "deploy.revision: expected a string, got array"),
    ({"baseline": " "}, "deploy.baseline: empty string"),
    ({"canary_percent": 101}, "deploy.canary_percent: 101 is not a percent"),
    ({"canary_percent": "5%"}, "deploy.canary_percent"),
    ({"source": "cloud-build"}, "deploy.source"),
    ({"labels": {"team": 1}}, "deploy.labels.'team': expected a string"),
    ({"project": 3}, "deploy.project: expected a string"),
])
def test_deploy_rejections(changes: dict[str, Any], fragment: str) -> None:
    _reject(_msg(NATIVE_DEPLOY, **changes), fragment)


# --- metrics ------------------------------------------------------------------------------------
def test_metrics_int64_as_strings_and_optional_fields_absent() -> None:
    event = _one(_msg(NATIVE_METRICS, request_count={"2xx": "10", "5xx": 2}, interval_s="60",
                      memory_utilization=DROP, cpu_utilization=None, instance_count=DROP,
                      max_instances=DROP, request_latencies=DROP))
    assert isinstance(event, Metrics)
    assert event.requests_by_class == (("2xx", 10), ("5xx", 2)) and event.interval_s == 60
    assert event.latency is None and event.memory_utilization is None and event.instance_count is None


def test_metrics_total_is_a_cross_check_and_a_shorthand() -> None:
    event = _one(_msg(NATIVE_METRICS, request_count={"5xx": 3, "total": 300}))
    assert (event.requests, event.errors) == (300, 3)
    assert dict(event.requests_by_class) == {"5xx": 3, "other": 297}
    exact = _one(_msg(NATIVE_METRICS, request_count={"2xx": 297, "5xx": 3, "total": 300}))
    assert exact.requests_by_class == (("2xx", 297), ("5xx", 3))


@pytest.mark.parametrize("changes, fragment", [
    ({"revision": DROP}, "metrics.revision: missing"),
    ({"revision": ""}, "metrics.revision: empty string"),
    ({"interval_s": 0}, "metrics.interval_s: 0 is not positive"),
    ({"interval_s": -60}, "metrics.interval_s: -60 is not positive"),
    ({"interval_s": 60.5}, "metrics.interval_s: 60.5 is not an integer"),
    ({"interval_s": DROP}, "metrics.interval_s: missing"),
    ({"request_count": DROP}, "metrics.request_count: missing"),
    ({"request_count": [1, 2]}, "metrics.request_count: expected an object, got array"),
    ({"request_count": {"5xx": -1}}, "metrics.request_count.5xx: negative count"),
    ({"request_count": {"2xx": 2.5}}, "metrics.request_count.2xx: 2.5 is not an integer"),
    ({"request_count": {"2xx": "12a"}}, "metrics.request_count.2xx: '12a' is not an integer"),
    ({"request_count": {"2xx": True}}, "metrics.request_count.2xx: expected an integer, got boolean"),
    ({"request_count": {"2xx": 2**63}}, "does not fit in int64"),
    ({"request_count": {"2xx": 5, "5xx": 10, "total": 8}}, "metrics.request_count.5xx: 10 is greater than total 8"),
    ({"request_count": {"2xx": 5, "5xx": 3, "total": 7}}, "classes sum to 8, more than total 7"),
    ({"request_count": {"6xx": 1}}, "metrics.request_count.'6xx': unknown response class"),
    ({"memory_utilization": 1.51}, "metrics.memory_utilization: 1.51 is outside [0, 1.5]"),
    ({"memory_utilization": -0.1}, "metrics.memory_utilization: -0.1 is outside"),
    ({"cpu_utilization": "high"}, "metrics.cpu_utilization: 'high' is not a number"),
    ({"instance_count": -1}, "metrics.instance_count: negative count"),
    ({"max_instances": 1.5}, "metrics.max_instances: 1.5 is not an integer"),
])
def test_metrics_rejections(changes: dict[str, Any], fragment: str) -> None:
    _reject(_msg(NATIVE_METRICS, **changes), fragment)


@pytest.mark.parametrize("literal, field", [
    ("NaN", "memory_utilization"), ("Infinity", "cpu_utilization"), ("-Infinity", "memory_utilization"),
    ("1e999", "memory_utilization"), ("NaN", "interval_s"), ("Infinity", "instance_count"),
])
def test_nan_and_infinity_are_rejected(literal: str, field: str) -> None:
    text = json.dumps(_msg(NATIVE_METRICS, **{field: "PLACEHOLDER"})).replace('"PLACEHOLDER"', literal)
    result = _reject(text, f"metrics.{field}")
    assert "finite" in result.reason


def test_nan_inside_request_count_is_rejected() -> None:
    text = json.dumps(_msg(NATIVE_METRICS, request_count={"2xx": "X"})).replace('"X"', "NaN")
    _reject(text, "metrics.request_count.2xx: nan is not a finite number")


# --- distributions ------------------------------------------------------------------------------
def test_linear_and_explicit_buckets_and_omitted_trailing_zeros() -> None:
    linear = _latencies(count="6", bucketOptions={"linearBuckets": {"numFiniteBuckets": 4, "width": 250}},
                        bucketCounts=["1", "2", "3"])
    hist = _one(_msg(NATIVE_METRICS, request_latencies=linear)).latency
    assert hist.layout == "linear" and hist.edges == (0.0, 250.0, 500.0, 750.0, 1000.0)  # offset omitted = 0
    assert hist.counts == (1, 2, 3, 0, 0, 0)
    explicit = _latencies(count=4, bucketOptions={"explicitBuckets": {"bounds": [10, 100, "1000"]}},
                          bucketCounts=[0, 1, 2, 1])
    hist = _one(_msg(NATIVE_METRICS, request_latencies=explicit)).latency
    assert hist.layout == "explicit" and hist.edges == (10.0, 100.0, 1000.0) and hist.counts == (0, 1, 2, 1)


def test_distribution_snake_case_and_no_counts() -> None:
    dist = {"bucket_options": {"exponential_buckets": {"num_finite_buckets": 3, "growth_factor": 2, "scale": 1}}}
    hist = _one(_msg(NATIVE_METRICS, request_latencies=dist)).latency
    assert hist.edges == (1.0, 2.0, 4.0, 8.0) and hist.total == 0


@pytest.mark.parametrize("changes, fragment", [
    ({"bucketOptions": DROP}, "request_latencies.bucketOptions: missing"),
    ({"bucketOptions": {}}, "expected exactly one of exponentialBuckets"),
    ({"bucketOptions": {"exponentialBuckets": {"numFiniteBuckets": 2, "growthFactor": 2, "scale": 1},
                        "linearBuckets": {"numFiniteBuckets": 2, "width": 1}}}, "expected exactly one of"),
    ({"bucketOptions": {"exponentialBuckets": {"numFiniteBuckets": 0, "growthFactor": 2, "scale": 1}}},
     "numFiniteBuckets: 0 is not between 1 and 10000"),
    ({"bucketOptions": {"exponentialBuckets": {"growthFactor": 2, "scale": 1}}}, "numFiniteBuckets: missing"),
    ({"bucketOptions": {"exponentialBuckets": {"numFiniteBuckets": 64, "growthFactor": 1.0, "scale": 1}}},
     "growthFactor: 1.0 is not greater than 1"),
    ({"bucketOptions": {"exponentialBuckets": {"numFiniteBuckets": 64, "growthFactor": 1.4, "scale": 0}}},
     "scale: 0.0 is not greater than 0"),
    ({"bucketOptions": {"exponentialBuckets": {"numFiniteBuckets": 64, "growthFactor": 1e300, "scale": 1}}},
     "exponentialBuckets"),
    ({"bucketOptions": {"linearBuckets": {"numFiniteBuckets": 4, "width": -1}}}, "width: -1.0 is not greater than 0"),
    ({"bucketOptions": {"explicitBuckets": {"bounds": []}}}, "bounds: expected a non-empty array"),
    ({"bucketOptions": {"explicitBuckets": {"bounds": [1, 1, 2]}}}, "bounds[1]: bounds must be strictly increasing"),
    ({"bucketOptions": {"exponentialBuckets": "64"}}, "exponentialBuckets: expected an object, got string"),
    ({"bucketCounts": ["0", "-3"], "count": DROP}, "bucketCounts[1]: negative count"),
    ({"bucketCounts": ["0", "1.5"], "count": DROP}, "bucketCounts[1]: '1.5' is not an integer"),
    ({"bucketCounts": "0,3"}, "bucketCounts: expected an array, got string"),
    ({"bucketCounts": ["1"] * 67, "count": "67"}, "67 bucketCounts for a layout of 66 buckets"),
    ({"count": "295"}, "request_latencies.count: 295 disagrees with the sum of bucketCounts 294"),
    ({"count": "5", "bucketCounts": DROP}, "count: 5 disagrees with the sum of bucketCounts 0"),
    ({"mean": "fast"}, "request_latencies.mean: 'fast' is not a number"),
])
def test_malformed_distributions_are_rejected(changes: dict[str, Any], fragment: str) -> None:
    result = _reject(_msg(NATIVE_METRICS, request_latencies=_latencies(**changes)), fragment)
    assert result.reason.startswith("metrics.request_latencies")


def test_distribution_that_is_not_an_object() -> None:
    _reject(_msg(NATIVE_METRICS, request_latencies=[1, 2]), "metrics.request_latencies: expected a Distribution")


# --- alert, command, traffic-changed ------------------------------------------------------------
ALERT = '{"type":"alert","time":"2026-11-28T10:02:00Z","service":"api-gateway","incident_id":"0.abc","state":"open"}'


def test_native_alert_and_its_rejections() -> None:
    event = _one(_msg(ALERT, revision="api-gateway-00043-def", policy_name="p99", summary="slow"))
    assert event == Alert(datetime(2026, 11, 28, 10, 2, tzinfo=timezone.utc), "api-gateway",
                          "api-gateway-00043-def", "0.abc", "open", "p99", "slow")
    assert _one(_msg(ALERT, service=None)).service is None
    _reject(_msg(ALERT, state="OPEN"), "alert.state: 'OPEN' is not open or closed")
    _reject(_msg(ALERT, incident_id=DROP), "alert.incident_id: missing")
    _reject(_msg(ALERT, service=DROP), "alert.service: missing")
    _reject(_msg(ALERT, revision=""), "alert.revision: empty string")


@pytest.mark.parametrize("action", ["pause", "resume", "abort", "promote", "kill-switch-on", "kill-switch-off"])
def test_every_command_action(action: str) -> None:
    event = _one(_msg(NATIVE_COMMAND, action=action, reason=DROP))
    assert event == Command(datetime(2026, 11, 28, 10, 5, tzinfo=timezone.utc), "api-gateway", action,
                            "sre@example.com", "")


@pytest.mark.parametrize("changes, fragment", [
    ({"action": "rollback"}, "command.action: unknown action 'rollback'"),
    ({"action": "Pause"}, "command.action: unknown action 'Pause'"),
    ({"action": DROP}, "command.action: missing"),
    ({"by": DROP}, "command.by: missing"),
    ({"by": ""}, "command.by: empty string"),
    ({"service": ""}, "command.service: empty string"),
    ({"reason": 42}, "command.reason: expected a string, got number"),
])
def test_command_rejections(changes: dict[str, Any], fragment: str) -> None:
    _reject(_msg(NATIVE_COMMAND, **changes), fragment)


TRAFFIC = '{"type":"traffic-changed","time":"2026-11-28T10:03:00Z","service":"api-gateway",' \
          '"canary_percent":50,"principal":"sre@example.com","detail":"manual split"}'


def test_traffic_changed() -> None:
    assert _one(TRAFFIC) == TrafficChanged(datetime(2026, 11, 28, 10, 3, tzinfo=timezone.utc), "api-gateway",
                                           50, "sre@example.com", "manual split")
    assert _one(_msg(TRAFFIC, canary_percent=None)).canary_percent is None
    _reject(_msg(TRAFFIC, canary_percent=-5), "traffic-changed.canary_percent: -5 is not a percent")
    _reject(_msg(TRAFFIC, canary_percent=DROP), "traffic-changed.canary_percent: missing")


def test_naive_now_is_taken_as_utc() -> None:
    assert isinstance(_parse(NATIVE_COMMAND, now=NOW.replace(tzinfo=None)), list)


def test_utilisation_bounds_are_inclusive() -> None:
    for ratio in (0.0, 1.5):
        assert _one(_msg(NATIVE_METRICS, memory_utilization=ratio)).memory_utilization == ratio
    assert not math.isnan(_one(_msg(NATIVE_METRICS)).cpu_utilization)
