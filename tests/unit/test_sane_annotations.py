"""Issue 11 item 4, at the annotations: a service's `rollbackd.dev/*` state outside the sane range
is refused as corrupt (`AnnotationError` with a reason) when it is read back, so the caller holds
that one service and tells a human, instead of an exception stopping `restore()` for every service
or a tick evaluating millions of minutes later."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from daemon.core.commands import ANNOTATION_PREFIX as P
from daemon.core.outcome import annotations_for
from daemon.core.persist import AnnotationError, rollout_from_annotations, service_state_from_annotations
from daemon.core.rollout import Status
from policies import default_policy_path
from policies.loader import load_policy

POLICY = load_policy(default_policy_path())  # 4 phases: 5%, 25%, 50%, 100%
NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)


def annotations(**changes: str) -> dict[str, str]:
    base = {
        f"{P}rollout-id": "checkout/checkout-00042-vux", f"{P}status": "phase", f"{P}phase": "2",
        f"{P}rollout-started": "2026-11-28T09:30:00Z", f"{P}phase-started": "2026-11-28T09:45:00Z",
        f"{P}canary": "checkout-00042-vux", f"{P}baseline": "checkout-00041-mib",
        f"{P}canary-percent": "25", f"{P}hold-reason": "", f"{P}last-decision": "promote 5→25",
        f"{P}decisions": "2",
    }
    base.update({f"{P}{key.replace('_', '-')}": value for key, value in changes.items()})
    return base


def restore(values: dict[str, str], now: datetime = NOW) -> Any:
    return rollout_from_annotations("checkout", "shop-prod", "europe-west1", values, POLICY, now=now)


def refused(values: dict[str, str], fragment: str, now: datetime = NOW) -> str:
    with pytest.raises(AnnotationError) as caught:
        restore(values, now)
    message = str(caught.value)
    assert message.startswith("checkout: ") and fragment in message, message
    return message


def test_good_annotations_restore() -> None:
    rollout = restore(annotations())
    assert rollout.status is Status.PHASE and rollout.phase_index == 1 and rollout.canary_percent == 25
    assert rollout.started_at == datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc)


def test_what_rollbackd_writes_reads_back() -> None:
    rollout = restore(annotations())
    again = restore(annotations_for(rollout))
    assert (again.status, again.phase_index, again.started_at, again.phase_started_at) == (
        rollout.status, rollout.phase_index, rollout.started_at, rollout.phase_started_at)


def test_year_one_with_an_offset_is_refused_not_an_overflow() -> None:
    # 00:30+01:00 on 1 January of year 1 is 23:30 on 31 December of year 0 in UTC: OverflowError.
    refused(annotations(rollout_started="0001-01-01T00:30:00+01:00"), "rollout-started")
    refused(annotations(phase_started="0001-01-01T00:30:00+01:00"), "phase-started")
    refused(annotations(rollout_started="9999-12-31T23:30:00-01:00"), "rollout-started")


def test_a_start_in_1900_is_refused() -> None:
    message = refused(annotations(rollout_started="1900-01-01T00:00:00Z", phase_started="1900-01-01T00:00:00Z"),
                      "rollout-started")
    assert "outside the sane range" in message


def test_a_start_in_2099_is_refused() -> None:
    message = refused(annotations(rollout_started="2099-01-01T00:00:00Z", phase_started="2099-01-01T00:00:00Z"),
                      "rollout-started")
    assert "in the future" in message


def test_a_finished_rollout_in_2099_is_refused_too() -> None:
    # Every deploy would count as "from before the rollout started" and never supersede it.
    refused(annotations(status="completed", phase="4", canary_percent="100",
                        rollout_started="2099-01-01T00:00:00Z", phase_started="2099-01-01T00:00:00Z"),
            "in the future")


def test_clock_skew_within_the_limit_is_accepted() -> None:
    soon = (NOW + timedelta(minutes=9)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert restore(annotations(rollout_started=soon, phase_started=soon)).started_at > NOW


def test_a_running_rollout_older_than_the_limit_is_refused_a_finished_one_is_not() -> None:
    old = "2026-11-01T00:00:00Z"  # 27 days before NOW; the default limit is 14d
    message = refused(annotations(rollout_started=old, phase_started=old), "rollout-started")
    assert "old (limit 14d)" in message
    done = restore(annotations(status="completed", phase="4", canary_percent="100", rollout_started=old,
                               phase_started=old))
    assert done.status is Status.COMPLETED


def test_the_age_limit_comes_from_the_policy() -> None:
    old = "2026-11-01T00:00:00Z"
    relaxed = POLICY.model_copy(update={"limits": POLICY.limits.model_copy(update={"max_rollout_age": 60 * 86400.0})})
    rollout = rollout_from_annotations("checkout", "", "", annotations(rollout_started=old, phase_started=old),
                                       relaxed, now=NOW)
    assert rollout is not None


def test_phase_four_in_status_phase_is_refused_when_the_policy_has_four_phases() -> None:
    # The last phase is 100%: a rollout gathering evidence in it has no next phase to promote to
    # (promote raised IndexError inside the tick).
    for status in ("phase", "waiting", "held"):
        refused(annotations(status=status, phase="4", canary_percent="100"), "phase 4 is the policy's last")
    refused(annotations(phase="5"), "phase 5 does not exist")
    refused(annotations(phase="-1"), "phase -1 does not exist")
    assert restore(annotations(status="completed", phase="4", canary_percent="100")).phase_index == 3
    assert restore(annotations(status="held", phase="0", canary_percent="0")).phase_index == -1


def test_phase_started_before_the_rollout_is_refused() -> None:
    refused(annotations(phase_started="2026-11-28T09:00:00Z"), "phase-started 2026-11-28T09:00:00+00:00 is before")


@pytest.mark.parametrize("value", ["yesterday", "2026-11-28T09:30:00", "2026-11-28", "20261128T093000Z", "",
                                   "2026-02-30T00:00:00Z", "2026-11-28T24:00:00Z", "2026-11-28T09:30:00+99:00"])
def test_unreadable_times_are_refused(value: str) -> None:
    refused(annotations(rollout_started=value), "unreadable rollbackd annotations (rollout-started")


def test_names_and_text_are_bounded() -> None:
    refused(annotations(canary="c" * 10_000), "canary: 10000 characters")
    rollout = restore(annotations(last_decision="x" * 1_000_000, hold_reason="y" * 1_000_000))
    assert len(rollout.last_decision) <= POLICY.limits.max_text_chars and rollout.last_decision.endswith("more characters cut]")
    assert len(rollout.hold_reason) <= POLICY.limits.max_text_chars


def test_service_state_passes_now_through() -> None:
    with pytest.raises(AnnotationError):
        service_state_from_annotations("checkout", "", "", annotations(rollout_started="1900-01-01T00:00:00Z"),
                                       POLICY, now=NOW)
    state = service_state_from_annotations("checkout", "", "", annotations(), POLICY, now=NOW)
    assert state is not None and state.stable_revision == "checkout-00041-mib"
