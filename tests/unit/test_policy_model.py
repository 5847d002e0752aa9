"""The policy model on its own: override resolution, freeze windows, units, and validators that
reject bad policies even when built without the YAML loader."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from policies import load_default_policy
from policies.model import Freeze, FreezeWindow, Policy
from policies.units import format_duration, format_ms, format_percent, parse_duration, parse_percent


def _base() -> dict[str, Any]:
    return load_default_policy().model_dump(mode="json")


def _with_overrides(*overrides: dict[str, Any]) -> Policy:
    data = _base()
    data["overrides"] = list(overrides)
    return Policy.model_validate(data)


def test_for_service_applies_the_matching_override_only() -> None:
    policy = _with_overrides(
        {"match": {"service": "ai-service"},
         "policy": {"key_metrics": {"latency_p99": {"normal": "2s", "warning": "4s", "critical": "8s"}}}},
        {"match": {"labels": {"tier": "batch"}, "service": "reports"},
         "policy": {"evidence": {"min_requests": 20}}},
    )
    ai = policy.for_service("ai-service")
    assert ai.key_metrics.latency_p99.normal == 2000.0
    assert ai.key_metrics.error_rate == policy.key_metrics.error_rate  # deep merge keeps siblings
    assert ai.evidence.min_requests == 200
    assert policy.for_service("api-gateway") is policy
    assert policy.for_service("reports").evidence.min_requests == 200  # labels missing: no match
    assert policy.for_service("reports", {"tier": "batch"}).evidence.min_requests == 20
    assert policy.for_service("reports", {"tier": "web"}).evidence.min_requests == 200


def test_phases_replaced_as_a_whole_by_an_override() -> None:
    policy = _with_overrides({"match": {"service": "fast"}, "policy": {"phases": [
        {"traffic": "50%", "duration": "5m", "criteria": ["error_rate"]}, {"traffic": "100%"}]}})
    assert [p.percent for p in policy.for_service("fast").phases] == [50, 100]


@pytest.mark.parametrize("first,second", [
    ({"service": "a"}, {"service": "a"}),
    ({"service": "a"}, {"labels": {"tier": "web"}}),
    ({"labels": {"tier": "web"}}, {"labels": {"team": "x"}}),
])
def test_ambiguous_overrides_rejected_by_the_model(first: dict, second: dict) -> None:
    with pytest.raises(ValidationError) as caught:
        _with_overrides({"match": first, "policy": {}}, {"match": second, "policy": {}})
    error = caught.value.errors()[0]
    assert error["type"] == "ambiguous_overrides"
    assert error["ctx"]["at"] == ("overrides", 1, "match")


def test_exclusive_label_values_are_not_ambiguous() -> None:
    policy = _with_overrides({"match": {"labels": {"tier": "web"}}, "policy": {}},
                             {"match": {"labels": {"tier": "batch"}}, "policy": {}})
    assert len(policy.overrides) == 2


def test_invalid_override_fragment_rejected_by_the_model() -> None:
    with pytest.raises(ValidationError) as caught:
        _with_overrides({"match": {"service": "a"}, "policy": {"evidence": {"min_requests": -1}}})
    assert caught.value.errors()[0]["ctx"]["at"][:5] == ("overrides", 0, "policy", "evidence", "min_requests")


def test_level_order_and_phase_order_name_the_field() -> None:
    data = _base()
    data["key_metrics"]["latency_p99"]["warning"] = "3s"
    data["phases"][2]["traffic"] = "20%"
    with pytest.raises(ValidationError) as caught:
        Policy.model_validate(data)
    found = {(tuple(e["loc"]), e["ctx"]["at"]) for e in caught.value.errors()}
    assert (("phases",), (2, "traffic")) in found
    assert (("key_metrics", "latency_p99"), ("warning",)) in found


# Freeze windows. 2026-11-27 is a Friday.
FRI = datetime(2026, 11, 27)


@pytest.mark.parametrize("local,inside", [
    (FRI.replace(hour=16, minute=59), False),
    (FRI.replace(hour=17), True),
    (FRI + timedelta(days=1, hours=12), True),  # Saturday noon
    (FRI + timedelta(days=2, hours=23, minutes=59), True),  # Sunday night
    (FRI + timedelta(days=3, hours=7, minutes=59), True),  # Monday 07:59
    (FRI + timedelta(days=3, hours=8), False),  # Monday 08:00: end is exclusive
    (FRI - timedelta(days=2), False),  # Wednesday
])
def test_weekend_window_wraps_over_the_week_end(local: datetime, inside: bool) -> None:
    window = FreezeWindow(start="Fri 17:00", end="Mon 08:00")
    assert window.contains(local) is inside


def test_midweek_window_does_not_wrap() -> None:
    window = FreezeWindow(start="Tuesday 09:30", end="thu 18:00")
    assert window.contains(FRI - timedelta(days=2))  # Wednesday 00:00
    assert not window.contains(FRI)  # Friday 00:00
    assert not window.contains(FRI - timedelta(days=3, hours=-9, minutes=-29))  # Tuesday 09:29


def test_freeze_uses_its_time_zone() -> None:
    freeze = Freeze(timezone="America/Chicago", windows=(FreezeWindow(start="Fri 17:00", end="Mon 08:00"),))
    # 22:30 UTC on Friday is 16:30 in Chicago (CST, UTC-6): not frozen yet; 23:30 UTC is 17:30.
    assert freeze.active_window(datetime(2026, 11, 27, 22, 30, tzinfo=timezone.utc)) is None
    assert freeze.active_window(datetime(2026, 11, 27, 23, 30, tzinfo=timezone.utc)) is not None
    # Monday 13:30 UTC is 07:30 in Chicago: still frozen; 14:30 UTC is 08:30: open.
    assert freeze.active_window(datetime(2026, 11, 30, 13, 30, tzinfo=timezone.utc)) is not None
    assert freeze.active_window(datetime(2026, 11, 30, 14, 30, tzinfo=timezone.utc)) is None
    # In summer (CDT, UTC-5) the same local window is an hour earlier in UTC.
    assert freeze.active_window(datetime(2026, 7, 3, 22, 30, tzinfo=timezone.utc)) is not None


@pytest.mark.parametrize("text", ["Fri 24:00", "Fri 17:60", "Fribble 17:00", "17:00", "Fri", ""])
def test_bad_window_times_rejected(text: str) -> None:
    with pytest.raises(ValidationError):
        FreezeWindow(start=text, end="Mon 08:00")


def test_empty_window_and_unknown_zone_rejected() -> None:
    with pytest.raises(ValidationError):
        FreezeWindow(start="Fri 17:00", end="friday 17:00")
    for zone in ("Mars/Olympus", "America", ""):
        with pytest.raises(ValidationError):
            Freeze(timezone=zone)


@pytest.mark.parametrize("text,seconds", [("10m", 600), ("90s", 90), ("500ms", 0.5), ("1s", 1), ("1h", 3600),
                                          ("1m30s", 90), ("0.5s", 0.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration(format_duration(parse_duration(text))) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["10", 10, "10 minutes", "m", "-5m", True, None])
def test_durations_need_units(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_percents_and_formatters() -> None:
    assert parse_percent("0.1%") == pytest.approx(0.001)
    assert parse_percent(" 85 %") == pytest.approx(0.85)
    for bad in ("0.1", 0.1, "85 percent", "-1%"):
        with pytest.raises(ValueError):
            parse_percent(bad)
    assert format_percent(0.001) == "0.1%"
    assert format_percent(0.07) == "7%"
    assert format_ms(500.0) == "500ms" and format_ms(2000.0) == "2s"
    assert format_duration(600.0) == "10m"


def test_default_policy_round_trips_through_json() -> None:
    policy = load_default_policy()
    assert Policy.model_validate(policy.model_dump(mode="json")) == policy
