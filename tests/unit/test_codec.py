"""The codec: every event kind → native JSON → `parse_message` → an equal event, byte-stable lines,
and histograms written back with their original bucket options."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.codec import (
    dumps_event, event_to_json, format_rfc3339, histogram_to_json, ignored_to_json, rejected_to_json,
)
from daemon.core.events import (
    COMMAND_ACTIONS, ActionFailed, Alert, Command, Deploy, Event, Ignored, Metrics, Rejected, Tick,
    TrafficChanged,
)
from daemon.core.intake import parse_message
from detectors.histogram import Histogram
from tests.unit.test_intake_examples import (
    INCIDENT_OPEN, NATIVE_COMMAND, NATIVE_DEPLOY, NATIVE_METRICS, NOW, V1_REPLACE, V2_UPDATE,
)


def _round_trip(event: Event) -> Event:
    result = parse_message(dumps_event(event).encode(), None, now=NOW, allow_internal=True)
    assert isinstance(result, list) and len(result) == 1, result
    return result[0]


# --- strategies ---------------------------------------------------------------------------------
# The intake refuses times outside the sane range (daemon.core.sanity), so round trips stay inside it.
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2026, 11, 28, 10, 10),
                     timezones=st.just(timezone.utc))
names = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != "")
texts = st.text(max_size=40)
counts = st.integers(min_value=0, max_value=2**62)
percents = st.integers(min_value=0, max_value=100)


@st.composite
def histograms(draw: st.DrawFn) -> Histogram:
    layout = draw(st.sampled_from(["exponential", "linear", "explicit"]))
    if layout == "explicit":
        bounds = sorted(set(draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20))))
        n_buckets = len(bounds) + 1
        make = lambda c: Histogram.explicit(bounds, c)  # noqa: E731
    else:
        n = draw(st.integers(1, 100))
        n_buckets = n + 2
        if layout == "exponential":
            growth = draw(st.floats(1.001, 4.0))
            scale = draw(st.floats(1e-3, 1e3))
            make = lambda c: Histogram.exponential(n, growth, scale, c)  # noqa: E731
        else:
            width = draw(st.floats(1e-3, 1e3))
            offset = draw(st.floats(-1e3, 1e3))
            make = lambda c: Histogram.linear(n, width, offset, c)  # noqa: E731
    return make(draw(st.lists(st.integers(0, 10**9), max_size=n_buckets)))


@st.composite
def metrics(draw: st.DrawFn) -> Metrics:
    classes = draw(st.dictionaries(st.sampled_from(["1xx", "2xx", "3xx", "4xx", "5xx", "other"]), counts))
    utilization = st.none() | st.floats(0.0, 1.5)
    optional_count = st.none() | counts
    return Metrics(
        time=draw(times), service=draw(names), revision=draw(names),
        interval_s=draw(st.integers(1, 3600)), requests_by_class=tuple(sorted(classes.items())),
        latency=draw(st.none() | histograms()), memory_utilization=draw(utilization),
        cpu_utilization=draw(utilization), instance_count=draw(optional_count),
        max_instances=draw(optional_count), project=draw(texts), location=draw(texts))


deploys = st.builds(
    Deploy, time=times, service=names, revision=st.none() | names, baseline=st.none() | names,
    project=texts, location=texts, canary_percent=st.none() | percents, principal=texts,
    source=st.sampled_from(["native", "audit-v1", "audit-v2"]),
    labels=st.dictionaries(texts, texts, max_size=4).map(lambda d: tuple(sorted(d.items()))))
alerts = st.builds(Alert, time=times, service=st.none() | names, revision=st.none() | names,
                   incident_id=names, state=st.sampled_from(["open", "closed"]), policy_name=texts,
                   summary=texts, project=texts)
commands = st.builds(Command, time=times, service=names, action=st.sampled_from(COMMAND_ACTIONS),
                     by=names, reason=texts)
traffic = st.builds(TrafficChanged, time=times, service=names, canary_percent=st.none() | percents,
                    principal=texts, detail=texts)
failures = st.builds(ActionFailed, time=times, service=names, action=names, error=texts,
                     permanent=st.booleans())
ticks = st.builds(Tick, time=times)
events = st.one_of(deploys, metrics(), alerts, commands, traffic, failures, ticks)


# --- round trips --------------------------------------------------------------------------------
@settings(max_examples=500, deadline=None)
@given(events)
def test_every_event_kind_round_trips(event: Event) -> None:
    back = _round_trip(event)
    assert back == event
    if isinstance(event, Metrics) and event.latency is not None:
        assert back.latency.params == event.latency.params  # type: ignore[union-attr]
    assert dumps_event(back) == dumps_event(event)


def test_the_examples_round_trip_through_native_form() -> None:
    for text in (V1_REPLACE, V2_UPDATE, INCIDENT_OPEN, NATIVE_DEPLOY, NATIVE_METRICS, NATIVE_COMMAND):
        (event,) = parse_message(text, None, now=NOW)  # type: ignore[misc]
        assert _round_trip(event) == event


def test_dumps_is_one_compact_sorted_line() -> None:
    (event,) = parse_message(NATIVE_METRICS, None, now=NOW)  # type: ignore[misc]
    line = dumps_event(event)
    assert "\n" not in line and ", " not in line and ": " not in line
    assert list(json.loads(line)) == sorted(json.loads(line))
    assert json.loads(line)["request_latencies"] == {
        "count": "294", "bucketCounts": ["0", "3", "200", "91"],
        "bucketOptions": {"exponentialBuckets": {"numFiniteBuckets": 64, "growthFactor": 1.4, "scale": 1.0}}}
    weird = Command(NOW, "svc\n\u2028", "pause", "\ud800", "x")  # a lone surrogate from a JSON escape
    assert dumps_event(weird).isascii() and _round_trip(weird) == weird


def test_times_keep_microseconds_and_four_digit_years() -> None:
    assert format_rfc3339(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2026-01-02T03:04:05Z"
    assert format_rfc3339(datetime(12, 1, 2, 3, 4, 5, 70, tzinfo=timezone.utc)) == "0012-01-02T03:04:05.000070Z"
    plus_one = timezone(timedelta(hours=1))
    assert format_rfc3339(datetime(2026, 1, 2, 4, 4, 5, tzinfo=plus_one)) == "2026-01-02T03:04:05Z"


def test_histograms_without_params_are_recovered_or_written_as_explicit() -> None:
    built = Histogram.exponential(64, 1.4, 1.0, [0, 3, 5])
    bare = Histogram("exponential", built.edges, built.counts)  # e.g. made by hand, no params
    out = histogram_to_json(bare)
    assert out["bucketOptions"] == {"exponentialBuckets": {"numFiniteBuckets": 64, "growthFactor": 1.4, "scale": 1.0}}
    assert out["bucketCounts"] == ["0", "3", "5"] and out["count"] == "8"
    linear = Histogram.linear(3, 10.0, 5.0, [1])
    assert histogram_to_json(Histogram("linear", linear.edges, linear.counts))["bucketOptions"] == {
        "linearBuckets": {"numFiniteBuckets": 3, "width": 10.0, "offset": 5.0}}
    odd = Histogram("exponential", (1.0, 2.0, 5.0), (0, 1, 1, 0))  # not a geometric series
    assert histogram_to_json(odd)["bucketOptions"] == {"explicitBuckets": {"bounds": [1.0, 2.0, 5.0]}}


def test_merged_histograms_keep_their_params() -> None:
    a = Histogram.exponential(8, 2.0, 1.0, [1, 2])
    assert histogram_to_json(a.merge(a))["bucketOptions"]["exponentialBuckets"]["numFiniteBuckets"] == 8


def test_rejected_and_ignored_to_json() -> None:
    rejected = parse_message('{"type":"metrics"}', None, now=NOW, where="line 4")
    assert isinstance(rejected, Rejected)
    out = rejected_to_json(rejected)
    assert out == {"type": "rejected", "reason": "metrics.time: missing", "where": "line 4",
                   "kind_hint": "metrics", "raw": '{"type":"metrics"}'}
    assert rejected_to_json(Rejected("x")) == {"type": "rejected", "reason": "x", "where": ""}
    assert ignored_to_json(Ignored("own update", "msg 1")) == {"type": "ignored", "reason": "own update",
                                                              "where": "msg 1"}


def test_event_to_json_refuses_non_events() -> None:
    try:
        event_to_json("deploy")  # type: ignore[arg-type]
    except TypeError as exc:
        assert "not an event" in str(exc)
    else:
        raise AssertionError("expected TypeError")
