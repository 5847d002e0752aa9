"""The value `step()` returns, and helpers to build decisions and traffic commands from a rollout.

Kept apart from `step` and `progress` so both build records the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.core.commands import ANNOTATION_PREFIX, Command, SetTraffic
from daemon.core.decision import Decision
from daemon.core.events import Rejected
from daemon.core.rollout import Rollout, ServiceState
from daemon.core.timefmt import format_rfc3339
from policies.model import Policy


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluated minute of one rollout: the evidence behind the next decision. Journaled so
    reports can plot each detector over time; not a decision."""

    service: str
    rollout_id: str
    time: datetime
    phase: int
    canary_percent: int
    canary_requests: int
    baseline_requests: int
    results: tuple[Any, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "evaluation",
            "time": format_rfc3339(self.time),
            "service": self.service,
            "rollout_id": self.rollout_id,
            "phase": self.phase,
            "canary_percent": self.canary_percent,
            "canary_requests": self.canary_requests,
            "baseline_requests": self.baseline_requests,
            "criteria": [r.to_json() for r in self.results],
        }


@dataclass(frozen=True, slots=True)
class Step:
    """What one event did: the new state, commands to carry out, decisions, evidence, and when the
    core next wants to be woken. `rejected` is set when the event was refused (state unchanged);
    `note` says why an accepted event changed nothing (duplicate, late data, other revision)."""

    state: ServiceState
    commands: tuple[Command, ...] = ()
    decisions: tuple[Decision, ...] = ()
    evaluations: tuple[Evaluation, ...] = ()
    next_wakeup: datetime | None = None
    rejected: Rejected | None = None
    note: str = ""


@dataclass
class Builder:
    """Accumulates the effects of one step. Mutable, but lives only inside one call of step()."""

    commands: list[Command] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)

    def decide(self, before: Rollout, after: Rollout, *, policy: Policy, time: datetime, action: str,
               reason: str, trigger: str, criteria: tuple[Any, ...] = (),
               evidence_through: datetime | None = None, acted: bool = True,
               details: dict[str, Any] | None = None) -> Rollout:
        """Record a decision and return `after` with its decision counter and summary updated."""
        sequence = before.decisions_made + 1
        phase_number = after.phase_index + 1
        decision = Decision(
            decision_id=f"{after.rollout_id}#{sequence}",
            time=time, service=after.service, canary=after.canary, baseline=after.baseline,
            phase=phase_number,
            phase_name=policy.phase_name(after.phase_index) if after.phase_index >= 0 else "not started",
            action=action, status_before=before.status.value, status_after=after.status.value,
            canary_percent_before=before.canary_percent, canary_percent_after=after.canary_percent,
            reason=reason, criteria=criteria, evidence_through=evidence_through, trigger=trigger,
            acted=acted, details=details or {}, project=after.project, location=after.location,
        )
        self.decisions.append(decision)
        return after.with_(decisions_made=sequence, last_decision=f"{action}: {reason}")

    def set_traffic(self, before: Rollout, after: Rollout, reason: str) -> None:
        self.commands.append(SetTraffic(
            service=after.service, project=after.project, location=after.location,
            canary=after.canary, baseline=after.baseline, canary_percent=after.canary_percent,
            expected_canary_percent=before.canary_percent, annotations=annotations_for(after),
            reason=reason, decision_id=f"{after.rollout_id}#{after.decisions_made}",
        ))

    def build(self, state: ServiceState, *, next_wakeup: datetime | None = None, note: str = "") -> Step:
        return Step(state=state, commands=tuple(self.commands), decisions=tuple(self.decisions),
                    evaluations=tuple(self.evaluations), next_wakeup=next_wakeup, note=note)


def annotations_for(rollout: Rollout) -> dict[str, str]:
    """The rollout's durable state, written on the service in the same update as the traffic."""
    p = ANNOTATION_PREFIX
    return {
        f"{p}rollout-id": rollout.rollout_id,
        f"{p}status": rollout.status.value,
        f"{p}phase": str(rollout.phase_index + 1),
        f"{p}phase-started": format_rfc3339(rollout.phase_started_at),
        f"{p}rollout-started": format_rfc3339(rollout.started_at),
        f"{p}canary": rollout.canary,
        f"{p}baseline": rollout.baseline,
        f"{p}canary-percent": str(rollout.canary_percent),
        f"{p}hold-reason": rollout.hold_reason,
        f"{p}last-decision": rollout.last_decision[:500],
        f"{p}decisions": str(rollout.decisions_made),
    }
