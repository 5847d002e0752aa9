"""The value `step()` returns, and helpers to build decisions and traffic commands from a rollout.

Kept apart from `step` and `progress` so both build records the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from daemon.core.commands import ANNOTATION_PREFIX, Command, SaveState, SetTraffic
from daemon.core.decision import Decision
from daemon.core.redact import redact
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
    force_save: bool = False  # save the durable record even if it looks unchanged (a retry)
    switches: bool = False  # this step records a daemon-wide switch (see SaveState.switches)

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

    def set_traffic(self, before: Rollout, after: Rollout, reason: str, *,
                    expected_canary_percent: int | None = None) -> None:
        """Ask for the rollout's traffic. The annotations are filled in by `build` (the record as it
        stands at the end of the step, written in the same etag-guarded update)."""
        self.commands.append(SetTraffic(
            service=after.service, project=after.project, location=after.location,
            canary=after.canary, baseline=after.baseline, canary_percent=after.canary_percent,
            expected_canary_percent=(before.canary_percent if expected_canary_percent is None
                                     else expected_canary_percent),
            annotations={}, reason=reason, decision_id=f"{after.rollout_id}#{after.decisions_made}",
            released=after.released,
        ))

    def build(self, state: ServiceState, *, before: ServiceState | None = None,
              next_wakeup: datetime | None = None, note: str = "") -> Step:
        """The step's result. Every change of the durable record is saved on the service: with the
        traffic change when there is one (the same etag-guarded update), else on its own (SaveState).
        `before` is the state the step started from: what the service is believed to carry."""
        commands = list(self.commands)
        if before is not None:
            # What the service carries: as last confirmed (an applied write or a read-back in this very
            # step counts), else the state the step started from.
            known = state.confirmed if state.confirmed is not None else before.confirmed
            believed = dict(known) if known is not None else durable_part(record_of(before))
            wanted = record_of(state)
            has_traffic = any(isinstance(c, SetTraffic) for c in commands)
            commands = [replace(c, annotations=wanted, expected_annotations=believed)
                        if isinstance(c, SetTraffic) else c for c in commands]
            # Saved when this step changed the record (a failed save is retried on ticks, not on
            # every event: each attempt may spend the controller's whole retry budget).
            changed = durable_part(wanted) != durable_part(record_of(before))
            if not has_traffic and (self.force_save or changed):
                where = state.rollout or before.rollout
                commands.insert(0, SaveState(
                    service=state.service, project=state.project or (where.project if where else ""),
                    location=state.location or (where.location if where else ""), annotations=wanted,
                    reason=state.rollout.last_decision if state.rollout else "service state",
                    decision_id=self.decisions[-1].decision_id if self.decisions else "",
                    expected_annotations=believed, switches=self.switches))
                state = replace(state, unsaved=True)
            elif has_traffic:
                state = replace(state, unsaved=True)
        return Step(state=state, commands=tuple(commands), decisions=tuple(self.decisions),
                    evaluations=tuple(self.evaluations), next_wakeup=next_wakeup, note=note)


def durable_part(record: dict[str, str]) -> dict[str, str]:
    """The keys of a record that are state, not wording (those are ignored when comparing)."""
    from daemon.core.commands import DESCRIPTIVE_ANNOTATIONS
    return {k: v for k, v in record.items() if k not in DESCRIPTIVE_ANNOTATIONS and v}


def confirmed_record(state: ServiceState) -> tuple[tuple[str, str], ...]:
    """The state's durable record, in the form `ServiceState.confirmed` keeps."""
    return tuple(sorted(durable_part(record_of(state)).items()))


def record_of(state: ServiceState) -> dict[str, str]:
    """Everything the core remembers about a service that must survive a restart, as the
    `rollbackd.dev/*` annotations written on it. Keys with an empty value remove the annotation."""
    p = ANNOTATION_PREFIX
    record = {key: "" for key in ALL_KEYS}
    if state.rollout is not None:
        record.update(annotations_for(state.rollout))
    record[f"{p}open-alerts"] = ",".join(sorted(state.open_alerts))[:1000]
    record[f"{p}kill-switch"] = "on" if state.kill_switch else ""
    record[f"{p}blocking-incidents"] = ",".join(sorted(state.blocking_incidents))[:1000]
    record[f"{p}commands-handled"] = ",".join(state.handled_commands)
    return record


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
        # Free text quotes commands and errors: redacted here, in the one function that writes the
        # record, so the live controller and the sandbox write (and compare) the same values.
        f"{p}hold-reason": redact(rollout.hold_reason)[:200],
        f"{p}last-decision": redact(rollout.last_decision)[:500],
        f"{p}decisions": str(rollout.decisions_made),
        f"{p}paused": "true" if rollout.paused else "",
        f"{p}alerts-before-start": ",".join(sorted(rollout.alerts_before_start))[:1000],
        f"{p}rollback-from-percent": (str(rollout.rollback_from_percent)
                                      if rollout.status.value == "rolling-back" else ""),
        f"{p}released": ",".join(rollout.released) if rollout.status.active else "",
    }


ALL_KEYS = tuple(f"{ANNOTATION_PREFIX}{name}" for name in (
    "rollout-id", "status", "phase", "phase-started", "rollout-started", "canary", "baseline",
    "canary-percent", "hold-reason", "last-decision", "decisions", "paused", "rollback-from-percent",
    "released", "open-alerts", "kill-switch", "blocking-incidents", "alerts-before-start",
    "commands-handled"))
