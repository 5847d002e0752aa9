"""Typed events: the only inputs of the decision core.

Intake (`daemon.core.intake`) turns native JSON, audit-log entries, alert incidents and commands
into these values; the engine adds `Tick`s and the results of actions. Every event carries its own
time: the core never reads a clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Union

from detectors.histogram import Histogram

CommandAction = Literal["pause", "resume", "abort", "promote", "kill-switch-on", "kill-switch-off"]
COMMAND_ACTIONS: tuple[str, ...] = ("pause", "resume", "abort", "promote", "kill-switch-on", "kill-switch-off")


@dataclass(frozen=True, slots=True)
class Deploy:
    """A new revision of a service was deployed (native `deploy` or an audit-log entry)."""

    time: datetime
    service: str
    revision: str | None  # None: the audit entry did not name it; the live path resolves it
    baseline: str | None = None
    project: str = ""
    location: str = ""
    canary_percent: int | None = 0  # traffic the new revision had when deployed, if known
    principal: str = ""
    source: str = "native"  # native | audit-v1 | audit-v2
    labels: tuple[tuple[str, str], ...] = ()

    kind = "deploy"

    @property
    def needs_resolution(self) -> bool:
        return self.revision is None

    def key(self) -> tuple:
        return ("deploy", self.service, self.revision, self.time)


@dataclass(frozen=True, slots=True)
class Metrics:
    """One revision over the `interval_s` seconds that end at `time`."""

    time: datetime
    service: str
    revision: str
    interval_s: int
    requests_by_class: tuple[tuple[str, int], ...]  # (("2xx", 290), ("5xx", 1), ...)
    latency: Histogram | None = None
    memory_utilization: float | None = None
    cpu_utilization: float | None = None
    instance_count: int | None = None
    max_instances: int | None = None
    project: str = ""
    location: str = ""

    kind = "metrics"

    @property
    def requests(self) -> int:
        return sum(count for _, count in self.requests_by_class)

    @property
    def errors(self) -> int:
        return sum(count for cls, count in self.requests_by_class if cls == "5xx")

    def key(self) -> tuple:
        return ("metrics", self.service, self.revision, self.time, self.interval_s)


@dataclass(frozen=True, slots=True)
class Alert:
    """A Cloud Monitoring incident (schema 1.2) opened or closed."""

    time: datetime
    service: str | None
    revision: str | None
    incident_id: str
    state: Literal["open", "closed"]
    policy_name: str = ""
    summary: str = ""
    project: str = ""
    severity: str = ""  # the incident's severity (critical | error | warning), lower case; "" unknown
    location: str = ""  # the service's region: the incident resource's `location` label, else resolved
    policy_labels: tuple[tuple[str, str], ...] = ()  # the alert policy's user labels

    kind = "alert"

    def key(self) -> tuple:
        return ("alert", self.incident_id, self.state)


@dataclass(frozen=True, slots=True)
class Command:
    """An operator command: pause, resume, abort (roll back now), promote (skip to next phase)."""

    time: datetime
    service: str
    action: str
    by: str  # the verified principal of the audit entry that wrote the command annotation
    reason: str = ""
    command_id: str = ""  # the annotation's id: what makes a redelivery a duplicate
    project: str = ""  # where the service lives ("" when the source did not say: see core.service_id)
    location: str = ""

    kind = "command"

    def key(self) -> tuple:
        return ("command", self.service, self.action, self.by, self.time, self.reason, self.command_id)


@dataclass(frozen=True, slots=True)
class TrafficChanged:
    """Someone other than rollbackd changed the service's traffic (seen on the service or in an
    audit entry). The core stands down: it never fights a human."""

    time: datetime
    service: str
    canary_percent: int | None
    principal: str = ""
    detail: str = ""
    project: str = ""  # where the service lives ("" when the source did not say: see core.service_id)
    location: str = ""

    kind = "traffic-changed"

    def key(self) -> tuple:
        return ("traffic-changed", self.service, self.time, self.canary_percent, self.principal)


@dataclass(frozen=True, slots=True)
class ActionFailed:
    """An action the core asked for could not be carried out (the adapter's own retries are spent,
    or the rate limit refused it). The core decides what follows: a rollback is retried with backoff,
    a state save is retried, a promotion halts with traffic where it was."""

    time: datetime
    service: str
    action: str  # set-traffic | save-state
    error: str
    permanent: bool = True
    decision_id: str = ""
    canary_percent_before: int | None = None  # the share Cloud Run still has (the write did not land)
    project: str = ""  # where the service lives ("" when the source did not say: see core.service_id)
    location: str = ""

    kind = "action-failed"

    def key(self) -> tuple:
        return ("action-failed", self.service, self.action, self.time, self.error)


@dataclass(frozen=True, slots=True)
class ActionApplied:
    """Cloud Run confirmed an action: the traffic (and the annotations written with it) are as the
    core asked. What was asked is in the decision; what happened is this event."""

    time: datetime
    service: str
    action: str  # set-traffic | save-state
    decision_id: str = ""
    canary_percent: int | None = None
    changed: bool = True  # False: the service was already as wanted (another replica, a retry)
    # The durable record the write carried (sorted items), when known: what the service now holds.
    # Not journaled; a replayed result stands for the record of its own moment.
    record: tuple[tuple[str, str], ...] | None = None
    project: str = ""  # where the service lives ("" when the source did not say: see core.service_id)
    location: str = ""

    kind = "action-applied"

    def key(self) -> tuple:
        return ("action-applied", self.service, self.action, self.time, self.decision_id, self.canary_percent)


@dataclass(frozen=True, slots=True)
class Resync:
    """The durable record read back from the service's `rollbackd.dev/*` annotations: on start
    (restore), or when another replica wrote it (resync). `found` is a parsed
    `daemon.core.rollout.ServiceState` (None: the service carries no rollbackd state); the core
    decides what to adopt (`daemon.core.reconcile`)."""

    time: datetime
    service: str
    found: Any
    observed_canary_percent: int | None = None  # the canary's share in the service's traffic now
    origin: str = "resync"  # restore | resync
    project: str = ""  # where the service lives ("" when the source did not say: see core.service_id)
    location: str = ""

    kind = "resync"

    def key(self) -> tuple:
        return ("resync", self.service, self.time, self.origin)


@dataclass(frozen=True, slots=True)
class GlobalState:
    """The daemon-wide switches as they apply to one service, recorded in its durable state so a
    restart or another replica keeps them: the kill switch (authorised by the engine before), and the
    open incidents that block every promotion (the runbook's "No P0/P1 incidents currently active")."""

    time: datetime
    service: str
    kill_switch: bool
    blocking_incidents: frozenset[str] = frozenset()
    by: str = ""
    command_id: str = ""  # the kill-switch command written on this service: recorded as handled
    project: str = ""  # where the service lives ("" when the source did not say: see core.service_id)
    location: str = ""

    kind = "global-state"

    def key(self) -> tuple:
        return ("global-state", self.service, self.time, self.kill_switch, tuple(sorted(self.blocking_incidents)),
                self.command_id)


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed. The engine sends one whenever the core asked to wake up, and every minute."""

    time: datetime

    kind = "tick"

    def key(self) -> tuple:
        return ("tick", self.time)


Event = Union[Deploy, Metrics, Alert, Command, TrafficChanged, ActionFailed, ActionApplied, Resync, GlobalState,
              Tick]
EVENT_KINDS: tuple[str, ...] = (
    "deploy", "metrics", "alert", "command", "traffic-changed", "action-failed", "action-applied", "resync",
    "global-state", "tick",
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that could not become an event. Data, not an exception: counted, journaled, and it
    changes no state."""

    reason: str
    where: str = ""  # e.g. "line 17" or "message 4f1c..."
    raw: str = field(default="", repr=False)
    kind_hint: str = ""

    kind = "rejected"


@dataclass(frozen=True, slots=True)
class Ignored:
    """Valid input that rollbackd deliberately does not act on (e.g. its own audit entries, or a
    Cloud Deploy test notification). Counted, not an error."""

    reason: str
    where: str = ""

    kind = "ignored"
