"""Decision records: what the core decided, why, and on what evidence.

Every decision is one value with the time, service, canary and baseline, phase, action, traffic
before and after, every criterion evaluated (observed value, threshold, statistic, verdict), and one
sentence a human can read. The journal, Cloud Logging lines, notifications, replay output, reports
and `explain` are all renderings of these values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from daemon.core.timefmt import format_rfc3339

# Actions. Every traffic change is "promote" (including the final step to 100%) or "rollback".
PROMOTE = "promote"
ROLLBACK = "rollback"
HOLD = "hold"  # stay at the current traffic: freeze, warning level, missing data, alert, pause
RESUME = "resume"  # a hold ended; the rollout goes on
WAIT = "wait"  # the phase's minimum time is over but the evidence is not yet sufficient
HALT = "halt"  # stood down: a human must look (manual change, permanent cloud error)
SUPERSEDE = "supersede"  # a newer deploy of the same service replaced this rollout
REFUSE = "refuse"  # a command that was not obeyed (unauthorised principal, nothing to act on)
KILL_SWITCH = "kill-switch"  # all actions stopped or restarted globally
ACTIONS = (PROMOTE, ROLLBACK, HOLD, RESUME, WAIT, HALT, SUPERSEDE, REFUSE, KILL_SWITCH)


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    time: datetime
    service: str
    canary: str
    baseline: str
    phase: int  # 1-based phase number the rollout is in after the decision (0: not started)
    phase_name: str
    action: str
    status_before: str
    status_after: str
    canary_percent_before: int
    canary_percent_after: int
    reason: str  # one sentence a human can read
    criteria: tuple[Any, ...] = ()  # evaluation.CriterionResult values
    evidence_through: datetime | None = None  # end of the last minute of data this used
    trigger: str = ""  # the event kind that caused it
    acted: bool = True  # False when dry-run or the kill switch suppressed the action
    details: Mapping[str, Any] = field(default_factory=dict)
    project: str = ""
    location: str = ""

    @property
    def changes_traffic(self) -> bool:
        return self.canary_percent_before != self.canary_percent_after

    def to_json(self) -> dict[str, Any]:
        """The replay/journal form (`type: decision`). Keys are stable: tools depend on them."""
        return {
            "type": "decision",
            "decision_id": self.decision_id,
            "time": format_rfc3339(self.time),
            "service": self.service,
            "revision": self.canary,
            "canary": self.canary,
            "baseline": self.baseline,
            "phase": self.phase,
            "phase_name": self.phase_name,
            "action": self.action,
            "status_before": self.status_before,
            "status": self.status_after,
            "canary_percent_before": self.canary_percent_before,
            "canary_percent": self.canary_percent_after,
            "reason": self.reason,
            "trigger": self.trigger,
            "acted": self.acted,
            "evidence_through": format_rfc3339(self.evidence_through) if self.evidence_through else None,
            "criteria": [c.to_json() for c in self.criteria],
            **({"details": dict(self.details)} if self.details else {}),
            # Where the service lives, when known (a recording without it keeps its bytes): `service`
            # stays the short name people read; the three together identify it (core.service_id).
            **({"project": self.project} if self.project else {}),
            **({"location": self.location} if self.location else {}),
        }


def severity_of(action: str) -> str:
    """Cloud Logging severity for a decision."""
    if action in (ROLLBACK, HALT):
        return "ERROR"
    if action in (HOLD, REFUSE, SUPERSEDE, KILL_SWITCH, WAIT):
        return "WARNING"
    return "NOTICE"
