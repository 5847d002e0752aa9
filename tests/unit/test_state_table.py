"""Every (status x event kind) pair: either it transitions as TRANSITIONS says, or it is rejected and
the state is unchanged."""
from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from daemon.core.events import (ActionApplied, ActionFailed, Alert, Command, Deploy, GlobalState, Metrics, Resync,
                                Tick, TrafficChanged)
from daemon.core.rollout import EVENT_KINDS, TRANSITIONS, ServiceState, Status, IllegalTransition
from daemon.core.step import step, table_kind
from policies import load_default_policy

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)  # a Tuesday: no freeze window
POLICY = load_default_policy()
SRE = "sre@olympuscloud.ai"


def _state(status: Status) -> ServiceState:
    empty = ServiceState(service="api")
    if status is Status.IDLE:
        return empty
    started = step(empty, Deploy(time=T0, service="api", revision="api-2", baseline="api-1"), POLICY).state
    assert started.rollout is not None and started.rollout.status is Status.PHASE
    hold = "paused" if status is Status.HELD else ""
    return replace(started, rollout=replace(started.rollout, status=status, hold_reason=hold,
                                            paused=status is Status.HELD))


def _event(kind: str):
    at = T0 + timedelta(minutes=3)
    return {
        "deploy": Deploy(time=at, service="api", revision="api-3", baseline="api-1"),
        "metrics": Metrics(time=at, service="api", revision="api-2", interval_s=60,
                           requests_by_class=(("2xx", 100), ("5xx", 0))),
        "tick": Tick(time=at),
        "alert-open": Alert(time=at, service="api", revision="api-2", incident_id="i-1", state="open"),
        "alert-close": Alert(time=at, service="api", revision="api-2", incident_id="i-1", state="closed"),
        "command:pause": Command(time=at, service="api", action="pause", by=SRE),
        "command:resume": Command(time=at, service="api", action="resume", by=SRE),
        "command:abort": Command(time=at, service="api", action="abort", by=SRE),
        "command:promote": Command(time=at, service="api", action="promote", by=SRE),
        "traffic-changed": TrafficChanged(time=at, service="api", canary_percent=40, principal="human@x"),
        "action-failed": ActionFailed(time=at, service="api", action="set-traffic", error="PERMISSION_DENIED"),
        "action-applied": ActionApplied(time=at, service="api", action="set-traffic", canary_percent=0),
        "resync": Resync(time=at, service="api", found=_state(Status.HALTED), observed_canary_percent=5,
                         origin="restore"),
        "global-state": GlobalState(time=at, service="api", kill_switch=True, by=SRE),
    }[kind]


@pytest.mark.parametrize("status,kind", list(itertools.product(Status, EVENT_KINDS)),
                         ids=lambda v: v.value if isinstance(v, Status) else v)
def test_every_status_event_pair(status: Status, kind: str) -> None:
    state = _state(status)
    event = _event(kind)
    assert table_kind(event) == kind
    result = step(state, event, POLICY)
    allowed = TRANSITIONS.get((status, kind))
    if allowed is None:
        assert result.rejected is not None, f"{status.value} x {kind} should be rejected"
        assert result.rejected.reason
        assert result.state is state
        assert not result.commands and not result.decisions
        return
    assert result.rejected is None, result.rejected
    after = result.state.status
    assert after in allowed, f"{status.value} x {kind} -> {after.value}, table allows {sorted(s.value for s in allowed)}"


def test_illegal_transition_raises_and_changes_nothing() -> None:
    rollout = _state(Status.COMPLETED).rollout
    assert rollout is not None
    with pytest.raises(IllegalTransition):
        rollout.moved(Status.PHASE, "metrics")
    assert rollout.status is Status.COMPLETED


def test_table_covers_only_known_kinds() -> None:
    assert {kind for _, kind in TRANSITIONS} <= set(EVENT_KINDS)
    assert all(targets for targets in TRANSITIONS.values())
