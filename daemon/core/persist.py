"""Rebuild a rollout from the `rollbackd.dev/*` annotations on its Cloud Run service.

The annotations are written in the same etag-guarded update as every traffic change (see
`outcome.annotations_for`), so they always describe the traffic the service really has. A restarted
daemon, or a second replica, calls `rollout_from_annotations` and then backfills the evidence from
Cloud Monitoring since the rollout started: the phase timers continue where they were.
"""
from __future__ import annotations

from typing import Mapping

from daemon.core import evaluation as ev
from daemon.core.commands import ANNOTATION_PREFIX
from daemon.core.rollout import Rollout, ServiceState, Status
from daemon.core.timefmt import parse_rfc3339
from policies.model import Policy


class AnnotationError(ValueError):
    """The annotations are missing or inconsistent; the service is left alone and a human told."""


def rollout_from_annotations(service: str, project: str, location: str, annotations: Mapping[str, str],
                             policy: Policy) -> Rollout | None:
    """None when the service carries no rollbackd state. Raises AnnotationError when it is corrupt."""
    p = ANNOTATION_PREFIX
    if f"{p}status" not in annotations:
        return None
    try:
        status = Status(annotations[f"{p}status"])
        phase_index = int(annotations.get(f"{p}phase", "0")) - 1
        started = parse_rfc3339(annotations[f"{p}rollout-started"])
        phase_started = parse_rfc3339(annotations[f"{p}phase-started"])
        canary = annotations[f"{p}canary"]
        baseline = annotations[f"{p}baseline"]
        percent = int(annotations[f"{p}canary-percent"])
    except (KeyError, ValueError) as error:
        raise AnnotationError(f"{service}: unreadable rollbackd annotations ({error})") from None
    if not -1 <= phase_index < len(policy.phases):
        raise AnnotationError(f"{service}: phase {phase_index + 1} does not exist in the current policy")
    if not 0 <= percent <= 100 or not canary or not baseline:
        raise AnnotationError(f"{service}: inconsistent rollbackd annotations")
    try:
        decisions_made = int(annotations.get(f"{p}decisions", "0"))
    except ValueError:
        decisions_made = 0
    evidence = ev.new_evidence(policy)
    hold_reason = annotations.get(f"{p}hold-reason", "")
    return Rollout(
        rollout_id=annotations.get(f"{p}rollout-id") or f"{service}/{canary}",
        service=service, project=project, location=location, canary=canary, baseline=baseline,
        status=status, started_at=started, phase_index=phase_index, phase_started_at=phase_started,
        canary_percent=percent,
        # Evidence is re-derived: the caller backfills metrics from the rollout's start.
        evaluated_through=started.replace(second=0, microsecond=0), evidence=evidence,
        hold_reason=hold_reason, paused=hold_reason == "paused",
        last_decision=annotations.get(f"{p}last-decision", ""), decisions_made=decisions_made,
        quiet_until=phase_started if phase_index >= 0 else None,
    )


def service_state_from_annotations(service: str, project: str, location: str,
                                   annotations: Mapping[str, str], policy: Policy) -> ServiceState | None:
    rollout = rollout_from_annotations(service, project, location, annotations, policy)
    if rollout is None:
        return None
    stable = rollout.canary if rollout.status is Status.COMPLETED else rollout.baseline
    return ServiceState(service=service, rollout=rollout, stable_revision=stable)
