"""Every rollout state and every transition, in one place, as a table.

Rule: nothing outside this module changes a rollout's status. `daemon.core.step` decides *which*
of the allowed targets a given event leads to; `transition()` below checks it against TRANSITIONS
and raises `IllegalTransition` (changing nothing) for anything the table does not allow. The README's
state diagram is generated from TRANSITIONS (`python -m daemon.core.diagram`), so it cannot drift.

Statuses:
  idle        no rollout for this service (never deployed, or only at non-zero traffic)
  phase       in phase N: canary at the phase's traffic, collecting evidence for its minimum time
  waiting     the phase's minimum time is over; waiting for evidence, within the phase's extension
  held        not promoting: freeze window, warning level, manual pause, missing data or an alert
  rolling-back a rollback was decided; the baseline must get 100% again. Retried with backoff until
              Cloud Run confirms it (then rolled-back) or a human takes over. Never rate-limited.
  completed   the canary has 100% of traffic                                   (terminal)
  rolled-back the baseline has 100% again; the canary is kept tagged at 0%     (terminal)
  halted      stood down; a human must look (manual change, permanent error)   (terminal)
  superseded  a newer deploy of the service replaced this rollout              (terminal)
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping


class Status(str, enum.Enum):
    IDLE = "idle"
    PHASE = "phase"
    WAITING = "waiting"
    HELD = "held"
    ROLLING_BACK = "rolling-back"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled-back"
    HALTED = "halted"
    SUPERSEDED = "superseded"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """Collecting evidence and deciding on it."""
        return self in ACTIVE

    @property
    def pending(self) -> bool:
        """Not finished: evidence (active) or a rollback still to be confirmed. Ticked by the engine."""
        return self in ACTIVE or self is Status.ROLLING_BACK


ACTIVE = frozenset({Status.PHASE, Status.WAITING, Status.HELD})
TERMINAL = frozenset({Status.COMPLETED, Status.ROLLED_BACK, Status.HALTED, Status.SUPERSEDED})

# Event kinds as the table sees them. Commands are split by action: they are different events.
EVENT_KINDS = (
    "deploy", "metrics", "tick", "alert-open", "alert-close",
    "command:pause", "command:resume", "command:abort", "command:promote",
    "traffic-changed", "action-failed", "action-applied", "resync", "global-state",
)
# Events that may change the durable record without a rollout decision: the durable record read back
# from Cloud Run (restore on start, or another replica's write), an action's result, the kill switch.

S = Status
_AFTER_EVIDENCE = frozenset({S.PHASE, S.WAITING, S.HELD, S.COMPLETED, S.ROLLING_BACK, S.HALTED})
_NEW_ROLLOUT = frozenset({S.PHASE, S.HELD, S.IDLE})  # a deploy at non-zero traffic leaves it idle
_ACTIVE_DEPLOY = _NEW_ROLLOUT | {S.SUPERSEDED, S.HALTED}  # old rollout superseded (or halted: deployed with traffic)

# (status, event kind) -> the statuses that event may lead to. A pair that is absent is illegal:
# the event is rejected with a reason and the state is unchanged.
TRANSITIONS: dict[tuple[Status, str], frozenset[Status]] = {
    # No rollout yet: only a deploy starts one; evidence and alerts for it are ignored.
    (S.IDLE, "deploy"): _NEW_ROLLOUT,
    (S.IDLE, "metrics"): frozenset({S.IDLE}),
    (S.IDLE, "tick"): frozenset({S.IDLE}),
    (S.IDLE, "alert-open"): frozenset({S.IDLE}),
    (S.IDLE, "alert-close"): frozenset({S.IDLE}),
    (S.IDLE, "traffic-changed"): frozenset({S.IDLE}),
    (S.IDLE, "action-applied"): frozenset({S.IDLE}),
    (S.IDLE, "action-failed"): frozenset({S.IDLE}),
    (S.IDLE, "global-state"): frozenset({S.IDLE}),
}
# The durable record on the service (restore, resync) is the truth whatever this replica thought:
# another replica, or this one before a restart, wrote it after deciding through this same table.
for _any in Status:
    TRANSITIONS[(_any, "resync")] = frozenset(Status)
for _active in (S.PHASE, S.WAITING, S.HELD):
    TRANSITIONS.update({
        (_active, "deploy"): _ACTIVE_DEPLOY,
        (_active, "metrics"): _AFTER_EVIDENCE,
        (_active, "tick"): _AFTER_EVIDENCE,
        (_active, "alert-open"): frozenset({_active, S.HELD, S.ROLLING_BACK}),
        (_active, "alert-close"): _AFTER_EVIDENCE,
        (_active, "command:pause"): frozenset({S.HELD}),
        (_active, "command:abort"): frozenset({S.ROLLING_BACK}),
        (_active, "command:promote"): frozenset({S.PHASE, S.COMPLETED}),
        (_active, "traffic-changed"): frozenset({_active, S.HALTED}),
        # A failed promotion halts (traffic stays where it was); a failed state save is retried.
        (_active, "action-failed"): frozenset({_active, S.HALTED}),
        (_active, "action-applied"): frozenset({_active}),
        (_active, "global-state"): frozenset({_active}),
    })
# Rolling back: the goal stands until Cloud Run confirms it or a human takes traffic over.
TRANSITIONS.update({
    (S.ROLLING_BACK, "deploy"): _ACTIVE_DEPLOY,
    (S.ROLLING_BACK, "metrics"): frozenset({S.ROLLING_BACK}),
    (S.ROLLING_BACK, "tick"): frozenset({S.ROLLING_BACK}),  # retry when the backoff is over
    (S.ROLLING_BACK, "alert-open"): frozenset({S.ROLLING_BACK}),
    (S.ROLLING_BACK, "alert-close"): frozenset({S.ROLLING_BACK}),
    (S.ROLLING_BACK, "command:abort"): frozenset({S.ROLLING_BACK}),  # retry now
    (S.ROLLING_BACK, "traffic-changed"): frozenset({S.ROLLING_BACK, S.ROLLED_BACK, S.HALTED}),
    (S.ROLLING_BACK, "action-failed"): frozenset({S.ROLLING_BACK}),
    (S.ROLLING_BACK, "action-applied"): frozenset({S.ROLLING_BACK, S.ROLLED_BACK}),
    (S.ROLLING_BACK, "global-state"): frozenset({S.ROLLING_BACK}),  # a rollback is never stopped
})
# Only a held rollout can be resumed.
TRANSITIONS[(S.HELD, "command:resume")] = frozenset({S.PHASE, S.WAITING, S.HELD})
for _done in TERMINAL:
    TRANSITIONS.update({
        (_done, "deploy"): _NEW_ROLLOUT | {_done},  # a duplicate of the finished deploy changes nothing
        (_done, "metrics"): frozenset({_done}),  # the canary stays tagged at 0% after a rollback
        (_done, "tick"): frozenset({_done}),
        (_done, "alert-open"): frozenset({_done}),
        (_done, "alert-close"): frozenset({_done}),
        (_done, "traffic-changed"): frozenset({_done}),
        # A completed rollout whose last write failed never reached 100%: halted. Otherwise only a
        # state save can fail here, and it is retried.
        (_done, "action-failed"): frozenset({_done, S.HALTED}),
        (_done, "action-applied"): frozenset({_done}),
        (_done, "global-state"): frozenset({_done}),
    })


class IllegalTransition(Exception):
    """An event the table does not allow in the current status. The state is unchanged."""


def check(status: Status, event_kind: str, target: Status) -> None:
    allowed = TRANSITIONS.get((status, event_kind))
    if allowed is None:
        raise IllegalTransition(f"'{event_kind}' is not accepted while the rollout is {status.value}")
    if target not in allowed:
        raise IllegalTransition(f"'{event_kind}' cannot take a {status.value} rollout to {target.value}")


def accepts(status: Status, event_kind: str) -> bool:
    return (status, event_kind) in TRANSITIONS


@dataclass(frozen=True, slots=True)
class Slot:
    """One minute of evidence waiting to be evaluated: the canary's and the baseline's metrics."""

    end: datetime
    canary: Any = None  # events.Metrics | None
    baseline: Any = None


@dataclass(frozen=True, slots=True)
class Rollout:
    """One canary rollout of one service. Immutable: transitions return new values."""

    rollout_id: str
    service: str
    project: str
    location: str
    canary: str
    baseline: str
    status: Status
    started_at: datetime
    phase_index: int  # index into policy.phases; -1 before the first traffic change
    phase_started_at: datetime
    canary_percent: int
    evaluated_through: datetime  # end of the last evaluated minute
    evidence: Any  # evaluation.Evidence
    hold_reason: str = ""  # freeze | warning | paused | missing-data | alert | inconclusive
    paused: bool = False
    open_alerts: frozenset[str] = frozenset()
    # The subset already open when this canary started: not its fault, so they hold its phases
    # (the runbook's "no alerts") but never roll it back.
    alerts_before_start: frozenset[str] = frozenset()
    slots: tuple[Slot, ...] = ()  # minutes received but not yet evaluated, in time order
    missing_minutes: int = 0  # consecutive evaluated minutes with an arm missing
    decisions_made: int = 0
    last_decision: str = ""
    last_assessment: Any = None  # evaluation.Assessment of the last evaluated minute
    labels: Mapping[str, str] = field(default_factory=dict)
    # After a restart the evidence is rebuilt from metrics since the rollout began: minutes up to
    # here (before the current phase started) only feed the detectors; they decide nothing.
    quiet_until: datetime | None = None
    # Revisions whose traffic this rollout may take away without it being a human's change: the
    # canary of the rollout it superseded (still serving its share until our first write).
    released: tuple[str, ...] = ()
    # Rolling back: the canary's share before the rollback (what Cloud Run may still show), how many
    # attempts failed, and when the next one is due.
    rollback_from_percent: int = 0
    rollback_attempts: int = 0
    retry_at: datetime | None = None

    def moved(self, target: Status, event_kind: str, **changes: Any) -> "Rollout":
        """The only way to change status: checked against the table."""
        check(self.status, event_kind, target)
        return replace(self, status=target, **changes)

    def with_(self, **changes: Any) -> "Rollout":
        """Change anything but the status."""
        if "status" in changes:
            raise ValueError("use moved() to change status")
        return replace(self, **changes)


# At most this many keys per service, whatever their times: a cap for services that never start a
# rollout (deploys with traffic, traffic changes while idle) and for a rollout flooded with commands.
DEDUP_LIMIT = 256
# Command ids remembered on the service (36 characters each; annotations hold 256 KiB in all).
HANDLED_COMMANDS_KEPT = 16


@dataclass(frozen=True, slots=True)
class ServiceState:
    """Everything the core remembers about one service."""

    service: str
    rollout: Rollout | None = None
    stable_revision: str = ""  # the revision that holds traffic when no rollout runs
    project: str = ""  # where the service lives, once known (a deploy, a restore)
    location: str = ""
    kill_switch: bool = False  # the global kill switch, as recorded on this service
    # Open incidents that block every promotion (policy `alerts.blocking`), wherever they are.
    blocking_incidents: frozenset[str] = frozenset()
    # Incidents open on the service, whether or not a rollout runs: one opened before a canary
    # started still means "not healthy" for it (the runbook's "no alerts" gate).
    open_alerts: frozenset[str] = frozenset()
    # The durable record differs from what the service carries (a save failed): retried on ticks.
    unsaved: bool = False
    # When the next attempt to save the durable record is due (backoff after a failed save).
    save_retry_at: datetime | None = None
    # The durable record as Cloud Run last confirmed it (sorted items; None: never confirmed, the
    # state itself is what the service carries). An etag-guarded write expects exactly this.
    confirmed: tuple[tuple[str, str], ...] | None = None
    # (event time, key) of recent non-metric events, for de-duplication of redeliveries.
    recent_keys: tuple[tuple[datetime, tuple], ...] = ()
    # Ids of the last commands handled (the `rollbackd.dev/command` annotation's id), saved on the
    # service: a redelivered audit entry, or the same entry at a second replica, is not run twice.
    handled_commands: tuple[str, ...] = ()

    def with_handled(self, command_id: str) -> "ServiceState":
        kept = tuple(c for c in self.handled_commands if c != command_id)
        return replace(self, handled_commands=(kept + (command_id,))[-HANDLED_COMMANDS_KEPT:])

    @property
    def status(self) -> Status:
        return self.rollout.status if self.rollout else Status.IDLE

    def seen(self, key: tuple) -> bool:
        return any(known == key for _, known in self.recent_keys)

    def remember(self, key: tuple, at: datetime, limit: int = DEDUP_LIMIT) -> "ServiceState":
        """Note an event's key. Keys of events from before the current rollout began are dropped:
        `step()` ignores any such event (deploy, alert, command, traffic change) whether or not it is
        a duplicate, so their keys protect nothing, and keeping them made this tuple grow by one
        deploy key per rollout up to `limit` (about 64 KiB per service after 256 rollouts)."""
        since = self.rollout.started_at if self.rollout is not None else None
        # Incident keys are kept whatever their time: an incident opened before the rollout still
        # counts for it, so a redelivery of its "open" after its "close" must stay a duplicate.
        kept = tuple(entry for entry in self.recent_keys
                     if since is None or entry[0] >= since or entry[1][:1] == ("alert",))
        return replace(self, recent_keys=(kept + ((at, key),))[-limit:])
