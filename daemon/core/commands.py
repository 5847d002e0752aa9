"""Commands: what the decision core asks the outside world to do.

`step()` returns these as values; the engine hands them to the adapters chosen in
`daemon.bootstrap` (Cloud Run, the sandbox cloud, or a dry-run recorder). The core never performs
them itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union

ANNOTATION_PREFIX = "rollbackd.dev/"
# Annotations that describe a decision rather than where the rollout is. Two replicas that make the
# same decision from the same data can word it differently, and one may reach it a minute later
# (each sees the data arrive at its own pace, and a replica that resynced just before the other's
# write still thinks the phase is open). So "is the service already as wanted?" ignores them: the
# first write wins, its phase start included, and a change lands once however many replicas decide it.
DESCRIPTIVE_ANNOTATIONS = frozenset({f"{ANNOTATION_PREFIX}last-decision", f"{ANNOTATION_PREFIX}decisions",
                                     f"{ANNOTATION_PREFIX}phase-started"})


@dataclass(frozen=True, slots=True)
class SetTraffic:
    """Route `canary_percent` to the canary and the rest to the baseline, and write the rollout's
    durable state as `rollbackd.dev/*` annotations in the same etag-guarded update.

    `expected_canary_percent` is what the core believes the traffic is now: if the service shows
    something else, a human changed it, and the adapter must not overwrite it."""

    service: str
    project: str
    location: str
    canary: str
    baseline: str
    canary_percent: int
    expected_canary_percent: int | None
    annotations: Mapping[str, str]
    reason: str
    decision_id: str
    # Revisions whose traffic rollbackd may take away: a superseded rollout's canary. Their share is
    # expected, not a human's change (`daemon.core.ownership.classify_split`).
    released: tuple[str, ...] = ()
    # The durable record the core believes the service carries now (non-descriptive keys). If the
    # service shows another, someone else (a replica, a human) changed the rollout: re-read, re-decide.
    expected_annotations: Mapping[str, str] | None = None

    kind = "set-traffic"


@dataclass(frozen=True, slots=True)
class SaveState:
    """Write the rollout's durable state (`rollbackd.dev/*` annotations) on the service, leaving its
    traffic exactly as it is: for every decision that changes state without moving traffic (pause,
    hold, halt, an alert, the kill switch). Etag-guarded like SetTraffic."""

    service: str
    project: str
    location: str
    annotations: Mapping[str, str]
    reason: str
    decision_id: str = ""
    expected_annotations: Mapping[str, str] | None = None
    # The save records a daemon-wide switch (the kill switch, the blocking incidents). With the kill
    # switch on, only these are written: the switch must survive a restart, and nothing else is sent.
    switches: bool = False

    kind = "save-state"


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell humans: publish the decision record to the notification topic."""

    service: str
    severity: str  # INFO | WARNING | ERROR
    subject: str
    decision: Mapping[str, Any] = field(default_factory=dict)

    kind = "notify"


@dataclass(frozen=True, slots=True)
class CaptureErrorLogs:
    """Capture the bad revision's recent ERROR logs, grouped into top patterns, for the record."""

    service: str
    project: str
    location: str
    revision: str
    since_s: float
    limit: int
    decision_id: str

    kind = "capture-error-logs"


@dataclass(frozen=True, slots=True)
class DeleteRevision:
    """Delete the rolled-back revision (only when the policy asks)."""

    service: str
    project: str
    location: str
    revision: str

    kind = "delete-revision"


Command = Union[SetTraffic, SaveState, Notify, CaptureErrorLogs, DeleteRevision]
