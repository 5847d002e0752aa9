"""Rebuild a rollout from the `rollbackd.dev/*` annotations on its Cloud Run service.

The annotations are written in the same etag-guarded update as every traffic change (see
`outcome.annotations_for`), so they always describe the traffic the service really has. A restarted
daemon, or a second replica, calls `rollout_from_annotations` and then backfills the evidence from
Cloud Monitoring since the rollout started: the phase timers continue where they were.

The annotations are input from outside (anyone who can update the service can write them), so
they are checked against the sane ranges of `daemon.core.sanity` before anything is built from
them: times within the policy's `limits` of `now`, a phase the policy has. Corrupt annotations
raise `AnnotationError` with the reason; the caller holds that one service and tells a human.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Mapping

from daemon.core import evaluation as ev
from daemon.core import sanity
from daemon.core.commands import ANNOTATION_PREFIX
from daemon.core.rollout import Rollout, ServiceState, Status
from policies.model import Policy


class AnnotationError(ValueError):
    """The annotations are missing or inconsistent; the service is left alone and a human told."""


def rollout_from_annotations(service: str, project: str, location: str, annotations: Mapping[str, str],
                             policy: Policy, *, now: datetime) -> Rollout | None:
    """None when the service carries no rollbackd state. Raises AnnotationError when it is corrupt.
    `now` is the present, for the time ranges (the core reads no clock)."""
    p = ANNOTATION_PREFIX
    if f"{p}status" not in annotations:
        return None
    try:
        status = Status(annotations[f"{p}status"])
        phase_index = int(annotations.get(f"{p}phase", "0")) - 1
        started = _time(annotations, "rollout-started")
        phase_started = _time(annotations, "phase-started")
        canary = annotations[f"{p}canary"]
        baseline = annotations[f"{p}baseline"]
        percent = int(annotations[f"{p}canary-percent"])
    except (KeyError, ValueError) as error:
        raise AnnotationError(f"{service}: unreadable rollbackd annotations ({error})") from None
    problem = _range_problem(status, phase_index, started, phase_started, policy, now)
    if problem is not None:
        raise AnnotationError(f"{service}: corrupt rollbackd annotations: {problem}")
    if not 0 <= percent <= 100 or not canary or not baseline:
        raise AnnotationError(f"{service}: inconsistent rollbackd annotations")
    for key in ("canary", "baseline", "rollout-id"):
        problem = sanity.name_problem(annotations.get(f"{p}{key}", ""))
        if problem is not None:
            raise AnnotationError(f"{service}: corrupt rollbackd annotations: {key}: {problem}")
    cap = policy.limits.max_text_chars
    try:
        decisions_made = int(annotations.get(f"{p}decisions", "0"))
    except ValueError:
        decisions_made = 0
    evidence = ev.new_evidence(policy)
    hold_reason = sanity.cap_text(annotations.get(f"{p}hold-reason", ""), cap)
    try:
        rollback_from = int(annotations.get(f"{p}rollback-from-percent") or percent)
    except ValueError:
        rollback_from = 100  # unknown: any share the canary still has is ours to take back
    if not 0 <= rollback_from <= 100:
        rollback_from = 100
    released = tuple(r for r in annotations.get(f"{p}released", "").split(",") if r)[:8]
    return Rollout(
        rollout_id=annotations.get(f"{p}rollout-id") or f"{service}/{canary}",
        service=service, project=project, location=location, canary=canary, baseline=baseline,
        status=status, started_at=started, phase_index=phase_index, phase_started_at=phase_started,
        canary_percent=percent,
        # Evidence is re-derived: the caller backfills metrics from the rollout's start.
        evaluated_through=started.replace(second=0, microsecond=0), evidence=evidence,
        hold_reason=hold_reason,
        paused=annotations.get(f"{p}paused") == "true" or hold_reason == "paused",
        open_alerts=_alerts(annotations), released=released,
        alerts_before_start=_alerts(annotations, "alerts-before-start"), rollback_from_percent=rollback_from,
        last_decision=sanity.cap_text(annotations.get(f"{p}last-decision", ""), cap),
        decisions_made=decisions_made,
        quiet_until=phase_started if phase_index >= 0 else None,
    )


def _alerts(annotations: Mapping[str, str], key: str = "open-alerts") -> frozenset[str]:
    # Comma-separated incident ids, as `outcome.record_of` writes them (capped at 1,000 characters).
    return frozenset(a for a in annotations.get(f"{ANNOTATION_PREFIX}{key}", "")[:1000].split(",") if a)


def _time(annotations: Mapping[str, str], key: str) -> datetime:
    try:
        return sanity.parse_rfc3339(annotations[f"{ANNOTATION_PREFIX}{key}"])
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None


def _range_problem(status: Status, phase_index: int, started: datetime, phase_started: datetime,
                   policy: Policy, now: datetime) -> str | None:
    """Why these values cannot be a real rollout under `policy` at `now`, or None. Only a rollout
    still running has an age limit: a finished one stays on the service for as long as it runs."""
    ranges = sanity.ranges_from(policy.limits)
    if not status.active:
        ranges = replace(ranges, max_age_s=None)
    problem = sanity.phase_problem(phase_index, len(policy.phases), gathers_evidence=status.active)
    if problem is not None:
        return f"phase: {problem}"
    for key, when in (("rollout-started", started), ("phase-started", phase_started)):
        problem = sanity.time_problem(when, now, ranges)
        if problem is not None:
            return f"{key}: {problem}"
    if phase_started < started:
        return f"phase-started {phase_started.isoformat()} is before rollout-started {started.isoformat()}"
    return None


def service_state_from_annotations(service: str, project: str, location: str,
                                   annotations: Mapping[str, str], policy: Policy, *,
                                   now: datetime) -> ServiceState | None:
    """None when the service carries no rollbackd record at all (no rollout, no open incident, no
    kill switch, no blocking incident)."""
    rollout = rollout_from_annotations(service, project, location, annotations, policy, now=now)
    alerts = _alerts(annotations)
    kill_switch = annotations.get(f"{ANNOTATION_PREFIX}kill-switch") == "on"
    blocking = _alerts(annotations, "blocking-incidents")
    handled = _handled_commands(annotations)
    if rollout is None and not alerts and not kill_switch and not blocking and not handled:
        return None
    stable = "" if rollout is None else rollout.canary if rollout.status is Status.COMPLETED else rollout.baseline
    return ServiceState(service=service, rollout=rollout, stable_revision=stable, project=project,
                        location=location, open_alerts=alerts, kill_switch=kill_switch,
                        blocking_incidents=blocking, handled_commands=handled)


def _handled_commands(annotations: Mapping[str, str]) -> tuple[str, ...]:
    """The handled command ids; anything that is not a command id is dropped (it protects nothing)."""
    from daemon.core.command_annotation import COMMAND_ID
    from daemon.core.rollout import HANDLED_COMMANDS_KEPT

    raw = annotations.get(f"{ANNOTATION_PREFIX}commands-handled", "")
    ids = [part for part in raw.split(",")[-HANDLED_COMMANDS_KEPT:] if COMMAND_ID.fullmatch(part)] \
        if isinstance(raw, str) and len(raw) <= 4096 else []
    return tuple(ids)
