"""Issue 11 item 4 and issue 12 item 6, at the intake: a message with a time, an interval or a text
outside the sane range is refused (or its text cut) where it enters, as a `Rejected` with a
reason, so it never reaches the core (state untouched) and cannot crash or stall a tick.

Hypothesis checks the time parser and the range rules on any input; example counts stay small so
the suite stays fast."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.core import sanity
from daemon.core.codec import dumps_event
from daemon.core.events import Alert, Command, Deploy, Metrics, Rejected, TrafficChanged
from daemon.core.intake import parse_message
from policies import default_policy_path
from policies.loader import load_policy
from policies.model import Freeze, FreezeWindow
from tests.unit.test_intake_examples import (
    INCIDENT_OPEN, NATIVE_COMMAND, NATIVE_DEPLOY, NATIVE_METRICS, NOW, V2_UPDATE,
)

POLICY = load_policy(default_policy_path())
LIVE = sanity.ranges_from(POLICY.limits)  # what the live daemon passes: with the age limit
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse(base: str, ranges: sanity.Ranges = sanity.INTAKE_DEFAULT, **changes: Any) -> Any:
    msg = json.loads(base)
    msg.update(changes)
    return parse_message(json.dumps(msg), None, now=NOW, where="message 7", ranges=ranges)


def rejected(result: Any, fragment: str) -> Rejected:
    assert isinstance(result, Rejected), result
    assert fragment in result.reason and result.where == "message 7", result.reason
    return result


def one(result: Any) -> Any:
    assert isinstance(result, list) and len(result) == 1, result
    return result[0]


# --- metrics interval -----------------------------------------------------------------------------
def test_an_interval_of_1e11_seconds_is_refused() -> None:
    # It passed the intake and then overflowed timedelta inside the tick (evaluation.py:197).
    rejected(parse(NATIVE_METRICS, interval_s=1e11), "metrics.interval_s: 100000000000 s is longer than the limit")
    rejected(parse(NATIVE_METRICS, interval_s=3601), "metrics.interval_s: 3601 s is longer than the limit of 3600 s")
    rejected(parse(NATIVE_METRICS, interval_s=0), "metrics.interval_s: 0 is not positive")
    assert one(parse(NATIVE_METRICS, interval_s=3600)).interval_s == 3600


def test_the_interval_limit_comes_from_the_policy() -> None:
    tight = sanity.Ranges(max_interval_s=120)
    rejected(parse(NATIVE_METRICS, ranges=tight, interval_s=180), "limit of 120 s")
    assert isinstance(one(parse(NATIVE_METRICS, ranges=tight, interval_s=60)), Metrics)


# --- times ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "1900-01-01T00:00:00Z",
                                   "1999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"])
def test_a_deploy_dated_far_outside_the_sane_range_is_refused(stamp: str) -> None:
    # A year-1 deploy used to become a rollout whose freeze-window check overflowed (model.py:279).
    rejected(parse(NATIVE_DEPLOY, time=stamp), "deploy.time: ")


def test_year_one_is_refused_for_every_event_kind_and_format() -> None:
    for base in (NATIVE_METRICS, NATIVE_COMMAND):
        assert isinstance(parse(base, time="0001-01-01T00:00:00Z"), Rejected)
    audit = json.loads(V2_UPDATE)
    audit["timestamp"] = "0001-01-01T00:00:00Z"
    rejected(parse_message(json.dumps(audit), None, now=NOW, where="message 7"),
             "audit.timestamp: 0001-01-01 is outside the sane range")
    incident = json.loads(INCIDENT_OPEN)
    incident["incident"]["started_at"] = 0  # 1970
    rejected(parse_message(json.dumps(incident), None, now=NOW, where="message 7"),
             "incident.started_at: 1970-01-01 is outside the sane range")


def test_events_older_than_the_rollout_age_limit_are_refused_live_but_not_in_replay() -> None:
    old = (NOW - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    reason = rejected(parse(NATIVE_DEPLOY, ranges=LIVE, time=old), "deploy.time: ").reason
    assert "is 20d old (limit 14d)" in reason
    assert isinstance(one(parse(NATIVE_DEPLOY, time=old)), Deploy)  # replay: no "now", no age limit
    recent = (NOW - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert isinstance(one(parse(NATIVE_DEPLOY, ranges=LIVE, time=recent)), Deploy)  # a backlog after an outage


def test_the_future_limit_comes_from_the_policy() -> None:
    ahead = (NOW + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rejected(parse(NATIVE_COMMAND, time=ahead), "is 20m in the future (limit 10m)")
    assert isinstance(one(parse(NATIVE_COMMAND, ranges=sanity.Ranges(max_future_s=3600), time=ahead)), Command)


def test_freeze_windows_survive_the_ends_of_the_calendar() -> None:
    freeze = POLICY.freeze
    for when in (datetime(1, 1, 1, tzinfo=timezone.utc), datetime(1, 1, 1, 5, tzinfo=timezone.utc),
                 datetime.max.replace(tzinfo=timezone.utc)):
        freeze.active_window(when)  # raised OverflowError in America/Chicago
    friday_evening = Freeze(timezone="UTC", windows=(FreezeWindow(start="Fri 17:00", end="Mon 08:00"),))
    # 1 January of year 1 was a Monday (proleptic Gregorian): 07:00 is inside, 09:00 outside.
    assert friday_evening.active_window(datetime(1, 1, 1, 7, tzinfo=timezone.utc)) is not None
    assert friday_evening.active_window(datetime(1, 1, 1, 9, tzinfo=timezone.utc)) is None
    chicago = Freeze(timezone="America/Chicago", windows=(FreezeWindow(start="Mon 00:00", end="Mon 12:00"),))
    # Chicago's earliest offset (LMT, -5:50:36): 05:00 UTC on Monday is 23:09 on Sunday there.
    assert chicago.active_window(datetime(1, 1, 1, 5, tzinfo=timezone.utc)) is None


# --- free text and names --------------------------------------------------------------------------
def test_a_10_mb_command_reason_is_cut_with_a_marker() -> None:
    command = one(parse(NATIVE_COMMAND, reason="r" * 10_000_000))
    assert len(command.reason) <= POLICY.limits.max_text_chars
    assert command.reason.startswith("rrrr") and command.reason.endswith("more characters cut]")
    kept = command.reason.split("…")[0]
    assert set(kept) == {"r"} and f"[{10_000_000 - len(kept)} more characters cut]" in command.reason
    line = dumps_event(command)
    assert len(line) < 4_000 and one(parse_message(line, None, now=NOW)) == command  # cutting twice: no change


def test_principals_details_and_summaries_are_cut_with_a_marker() -> None:
    deploy = one(parse(NATIVE_DEPLOY, ranges=sanity.Ranges(max_text_chars=300), principal="p" * 5_000))
    assert len(deploy.principal) <= 300 and deploy.principal.endswith("more characters cut]")
    traffic = one(parse('{"type":"traffic-changed","time":"2026-11-28T10:03:00Z","service":"api-gateway",'
                        '"canary_percent":50}', principal="q" * 5_000, detail="d" * 5_000))
    assert isinstance(traffic, TrafficChanged)
    assert len(traffic.principal) <= 2000 and len(traffic.detail) <= 2000
    incident = json.loads(INCIDENT_OPEN)
    incident["incident"]["summary"] = "s" * 100_000
    incident["incident"]["policy_name"] = "n" * 100_000
    alert = one(parse_message(json.dumps(incident), None, now=NOW))
    assert isinstance(alert, Alert) and len(alert.summary) <= 2000 and len(alert.policy_name) <= 2000
    audit = json.loads(V2_UPDATE)
    audit["protoPayload"]["authenticationInfo"]["principalEmail"] = "e" * 100_000
    (event,) = parse_message(json.dumps(audit), None, now=NOW)  # type: ignore[misc]
    assert len(event.principal) <= 2000


def test_an_overlong_identity_is_refused_not_cut() -> None:
    # A cut principal could match an authorised pattern the full one does not: refuse it instead.
    rejected(parse(NATIVE_COMMAND, by="sre@example.com" + "x" * 10_000), "command.by: 10015 characters")
    rejected(parse(NATIVE_DEPLOY, service="s" * 600), "deploy.service: 600 characters")
    rejected(parse(NATIVE_METRICS, revision="r" * 600), "metrics.revision: 600 characters")
    rejected(parse(NATIVE_DEPLOY, labels={"team": "t" * 600}), "deploy.labels: label 'team'")
    rejected(parse(NATIVE_DEPLOY, labels={f"k{i}": "v" for i in range(300)}), "300 labels")


# --- hypothesis: the parser and the rules never raise ------------------------------------------------
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@FAST
@given(st.datetimes(timezones=st.just(timezone.utc)), offsets)
def test_any_time_with_any_offset_parses_back_or_is_a_value_error(when: datetime, tz: timezone) -> None:
    try:
        local = when.astimezone(tz)
    except OverflowError:
        return
    text = local.strftime("%Y-%m-%dT%H:%M:%S") if local.year >= 1000 else local.isoformat()[:19]
    text += local.isoformat()[-6:] if local.utcoffset() else "Z"
    try:
        parsed = sanity.parse_rfc3339(text)
    except ValueError:
        return
    assert parsed == when.replace(microsecond=0) and parsed.tzinfo is timezone.utc


@FAST
@given(st.text(max_size=40) | st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                                              r"(\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})", fullmatch=True))
def test_the_time_parser_only_ever_raises_value_error(text: str) -> None:
    try:
        parsed = sanity.parse_rfc3339(text)
    except ValueError:
        return
    assert parsed.tzinfo is timezone.utc


@FAST
@given(st.datetimes(timezones=st.just(timezone.utc)), st.datetimes(timezones=st.just(timezone.utc)),
       st.floats(0, 1e7), st.none() | st.floats(0, 1e9))
def test_the_time_rule_never_raises_and_accepts_only_sane_times(when: datetime, now: datetime, future: float,
                                                                 age: float | None) -> None:
    problem = sanity.time_problem(when, now, sanity.Ranges(max_future_s=future, max_age_s=age))
    if problem is None:
        assert sanity.EARLIEST <= when < sanity.LATEST
        assert (when - now).total_seconds() <= future
        assert age is None or (now - when).total_seconds() <= age


@FAST
@given(st.text(max_size=3_000), st.integers(100, 2_500))
def test_cut_text_fits_keeps_its_start_and_is_stable(text: str, limit: int) -> None:
    cut = sanity.cap_text(text, limit)
    assert len(cut) <= limit and sanity.cap_text(cut, limit) == cut
    assert cut == text or (cut.endswith("more characters cut]") and text.startswith(cut[:limit - 40]))


@FAST
@given(st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=25), st.none(), st.booleans()))
def test_any_interval_is_refused_or_in_range(value: Any) -> None:
    result = parse(NATIVE_METRICS, ranges=LIVE, interval_s=value)
    if isinstance(result, Rejected):
        assert result.reason.startswith("metrics.interval_s: ") and "internal parse error" not in result.reason
    else:
        assert 1 <= one(result).interval_s <= 3600


@FAST
@given(st.datetimes(timezones=st.just(timezone.utc)), offsets)
def test_any_deploy_time_is_refused_or_sane(when: datetime, tz: timezone) -> None:
    try:
        text = when.astimezone(tz).isoformat()
    except OverflowError:
        return
    result = parse(NATIVE_DEPLOY, ranges=LIVE, time=text)
    if isinstance(result, Rejected):
        assert result.reason.startswith("deploy.time: ") and "internal parse error" not in result.reason
    else:
        assert sanity.time_problem(one(result).time, NOW, LIVE) is None
