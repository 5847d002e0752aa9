"""How evidence moves a rollout: minutes of metrics in, promotions, holds and rollbacks out.

Metrics are buffered per minute ("slots"). A minute is evaluated once both the canary's and the
baseline's data for it are in, or once `evidence.late_data_grace` has passed since it ended (then
with whatever arrived). Minutes are evaluated strictly in order and every decision they cause is
stamped with the end of that minute, so duplicates, redeliveries and reordering within the grace
period give exactly the same decisions.

Which decision a minute leads to is the rule table in `daemon.core.rules`; `decide_on_evidence`
carries out the row that wins. Called by `daemon.core.step`; changes status only through
`Rollout.moved` (the table).
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from daemon.core import evaluation as ev
from daemon.core import rules
from daemon.core.commands import CaptureErrorLogs, DeleteRevision, Notify
from daemon.core.decision import HALT, HOLD, PROMOTE, RESUME, ROLLBACK, WAIT
from daemon.core.events import Metrics
from daemon.core.outcome import Builder, Evaluation
from daemon.core.rollout import Rollout, Slot, Status
from policies.model import Policy

MINUTE = timedelta(seconds=60)
# At most this many minutes are evaluated in one step (a restored rollout's backlog, a corrupt start
# date that slipped through): the rest follow on the next ticks, and the other services are not held up.
MAX_MINUTES_PER_STEP = 240


def minute_of(when: datetime) -> datetime:
    """The slot a metrics interval ending at `when` belongs to (its end, floored to the minute)."""
    return when.replace(second=0, microsecond=0)


def add_metrics(rollout: Rollout, metrics: Metrics) -> tuple[Rollout, str]:
    """Buffer one revision's minute. Returns the rollout and a note when nothing changed."""
    if metrics.revision == rollout.canary:
        arm = "canary"
    elif metrics.revision == rollout.baseline:
        arm = "baseline"
    else:
        return rollout, f"metrics for {metrics.revision}, which is neither canary nor baseline"
    end = minute_of(metrics.time)
    if end <= rollout.evaluated_through:
        return rollout, f"late {arm} metrics for {end.isoformat()}: that minute was already evaluated"
    slots = list(rollout.slots)
    for index, slot in enumerate(slots):
        if slot.end == end:
            if getattr(slot, arm) is not None:
                return rollout, f"duplicate {arm} metrics for {end.isoformat()}"
            slots[index] = replace(slot, **{arm: metrics})
            break
    else:
        slots.append(Slot(end=end, **{arm: metrics}))
        slots.sort(key=lambda s: s.end)
    return rollout.with_(slots=tuple(slots)), ""


def next_wakeup(rollout: Rollout, policy: Policy) -> datetime | None:
    """When the next minute becomes due even if its data never arrives."""
    if not rollout.status.active or rollout.phase_index < 0:
        return None
    return rollout.evaluated_through + MINUTE + timedelta(seconds=policy.evidence.late_data_grace)


def advance(rollout: Rollout, policy: Policy, now: datetime, trigger: str, out: Builder,
            *, actions_enabled: bool, gate: frozenset[str] = frozenset()) -> Rollout:
    """Evaluate every minute that is complete or overdue, in order, and act on each."""
    grace = timedelta(seconds=policy.evidence.late_data_grace)
    evaluated = 0
    while rollout.status.active and rollout.phase_index >= 0:
        due_end = rollout.evaluated_through + MINUTE
        slot = rollout.slots[0] if rollout.slots and rollout.slots[0].end <= due_end else None
        if slot is not None and slot.end < due_end:  # cannot happen: slots are after evaluated_through
            rollout = rollout.with_(slots=rollout.slots[1:])
            continue
        complete = slot is not None and slot.canary is not None and slot.baseline is not None
        if not complete and now < due_end + grace:
            break
        if slot is None:
            slot = Slot(end=due_end)
        else:
            rollout = rollout.with_(slots=rollout.slots[1:])
        rollout = _evaluate_minute(rollout, slot, policy, trigger, out, actions_enabled=actions_enabled, gate=gate)
        evaluated += 1
        if evaluated >= MAX_MINUTES_PER_STEP:
            break  # the rest on the next tick: one step never holds the engine for long
    return rollout


def _evaluate_minute(rollout: Rollout, slot: Slot, policy: Policy, trigger: str, out: Builder,
                     *, actions_enabled: bool, gate: frozenset[str] = frozenset()) -> Rollout:
    sample = ev.MinuteSample(end=slot.end, canary=slot.canary, baseline=slot.baseline,
                             canary_percent=rollout.canary_percent)
    evidence = ev.observe(rollout.evidence, policy, sample)
    if rollout.quiet_until is not None:
        if slot.end <= rollout.quiet_until:  # restored rollout: an earlier phase's minute
            return rollout.with_(evidence=evidence, evaluated_through=slot.end)
        evidence = ev.start_phase(rollout.evidence, rollout.phase_index)
        evidence = ev.observe(evidence, policy, sample)
        rollout = rollout.with_(quiet_until=None)
    assessment = ev.assess(evidence, policy, rollout.phase_index,
                           open_alerts=len(rollout.open_alerts - rollout.alerts_before_start))
    missing = 0 if (slot.canary is not None and slot.baseline is not None) else rollout.missing_minutes + 1
    rollout = rollout.with_(evidence=evidence, evaluated_through=slot.end, missing_minutes=missing,
                            last_assessment=assessment)
    out.evaluations.append(Evaluation(
        service=rollout.service, rollout_id=rollout.rollout_id, time=slot.end,
        phase=rollout.phase_index + 1, canary_percent=rollout.canary_percent,
        canary_requests=slot.canary.requests if slot.canary else 0,
        baseline_requests=slot.baseline.requests if slot.baseline else 0,
        results=assessment.results))
    return decide_on_evidence(rollout, policy, assessment, slot.end, trigger, out,
                              actions_enabled=actions_enabled, gate=gate)


def decide_on_evidence(rollout: Rollout, policy: Policy, assessment: "ev.Assessment", at: datetime,
                       trigger: str, out: Builder, *, actions_enabled: bool,
                       gate: frozenset[str] = frozenset()) -> Rollout:
    """The policy's rules, in order of severity (`daemon.core.rules`): roll back, hold, promote, wait."""
    context = rules.Context.of(rollout, policy, assessment, at, gate)
    rule = rules.first_match(context)
    return _carry_out(rule.action, rule.reason(context), context, rollout, policy, at, trigger, out,
                      criteria=assessment.results, actions_enabled=actions_enabled)


def _carry_out(action: rules.Action, reason: str, context: rules.Context, rollout: Rollout, policy: Policy,
               at: datetime, trigger: str, out: Builder, *, criteria: tuple,
               actions_enabled: bool) -> Rollout:
    """Do what the winning rule says. Holds and waits already in force are not decided again."""
    if action.kind == ROLLBACK:
        return roll_back(rollout, policy, at, reason, trigger, out, criteria=criteria,
                         actions_enabled=actions_enabled)
    if action.kind == HALT:
        return halt(rollout, policy, at, reason, trigger, out, criteria=criteria)
    if action.kind == PROMOTE:
        return promote(rollout, policy, at, reason, trigger, out, criteria=criteria,
                       actions_enabled=actions_enabled)
    if action.kind == HOLD:
        if rollout.status is Status.HELD and rollout.hold_reason == action.hold_reason:
            return rollout
        after = rollout.moved(Status.HELD, trigger, hold_reason=action.hold_reason)
        after = out.decide(rollout, after, policy=policy, time=at, action=HOLD, reason=reason,
                           trigger=trigger, criteria=criteria, evidence_through=at)
        if action.notify:
            out.commands.append(Notify(service=after.service, severity="WARNING",
                                       subject=f"{after.service}: {action.notify}",
                                       decision=out.decisions[-1].to_json()))
        return after
    if action.kind == WAIT:
        if rollout.status is Status.WAITING:
            return rollout
        after = rollout.moved(Status.WAITING, trigger, hold_reason="")
        return out.decide(rollout, after, policy=policy, time=at, action=WAIT, reason=reason,
                          trigger=trigger, criteria=criteria, evidence_through=at)
    if action.kind == RESUME:
        after = rollout.moved(Status.PHASE, trigger, hold_reason="")
        return out.decide(rollout, after, policy=policy, time=at, action=RESUME, reason=reason,
                          trigger=trigger, criteria=criteria, evidence_through=at)
    if action.kind == rules.FAIL and context.error is not None:
        raise context.error  # where the chain of ifs raised it: see the FAIL rows in `rules`
    return rollout  # rules.UNCHANGED


def promote(rollout: Rollout, policy: Policy, at: datetime, reason: str, trigger: str, out: Builder,
            *, criteria: tuple = (), actions_enabled: bool) -> Rollout:
    """Move to the next phase, or to 100% and completed."""
    next_index = rollout.phase_index + 1
    next_phase = policy.phases[next_index]
    target = Status.COMPLETED if next_phase.percent == 100 else Status.PHASE
    if not actions_enabled:
        return _suppressed(rollout, policy, at, PROMOTE, next_phase.percent, reason, trigger, out, criteria)
    after = rollout.moved(target, trigger, phase_index=next_index, phase_started_at=at,
                          canary_percent=next_phase.percent, hold_reason="", paused=False,
                          evidence=ev.start_phase(rollout.evidence, next_index),
                          missing_minutes=0)
    text = f"{reason}; {rollout.canary_percent}% → {next_phase.percent}%"
    after = out.decide(rollout, after, policy=policy, time=at, action=PROMOTE, reason=text,
                       trigger=trigger, criteria=criteria, evidence_through=rollout.evaluated_through)
    out.set_traffic(rollout, after, text)
    if target is Status.COMPLETED:
        out.commands.append(Notify(service=after.service, severity="INFO",
                                   subject=f"{after.service}: {after.canary} promoted to 100%",
                                   decision=out.decisions[-1].to_json()))
    return after


def roll_back(rollout: Rollout, policy: Policy, at: datetime, reason: str, trigger: str, out: Builder,
              *, criteria: tuple = (), actions_enabled: bool) -> Rollout:
    """Route 100% back to the baseline, keeping the canary tagged at 0% for investigation."""
    if not actions_enabled:
        return _suppressed(rollout, policy, at, ROLLBACK, 0, reason, trigger, out, criteria)
    # Rolling back until Cloud Run confirms it: a failed write is retried, never abandoned.
    after = rollout.moved(Status.ROLLING_BACK, trigger, canary_percent=0, hold_reason="", paused=False,
                          rollback_from_percent=rollout.canary_percent, rollback_attempts=0, retry_at=None)
    after = out.decide(rollout, after, policy=policy, time=at, action=ROLLBACK, reason=reason,
                       trigger=trigger, criteria=criteria, evidence_through=rollout.evaluated_through)
    out.set_traffic(rollout, after, reason)
    record = out.decisions[-1]
    if policy.rollback.capture_error_logs:
        since = max((at - rollout.started_at).total_seconds(), 600.0)
        out.commands.append(CaptureErrorLogs(
            service=after.service, project=after.project, location=after.location,
            revision=after.canary, since_s=since, limit=policy.rollback.capture_error_logs,
            decision_id=record.decision_id))
    out.commands.append(Notify(service=after.service, severity="ERROR",
                               subject=f"{after.service}: {after.canary} rolled back",
                               decision=record.to_json()))
    if policy.rollback.delete_revision:
        out.commands.append(DeleteRevision(service=after.service, project=after.project,
                                           location=after.location, revision=after.canary))
    return after


def halt(rollout: Rollout, policy: Policy, at: datetime, reason: str, trigger: str, out: Builder,
         *, criteria: tuple = ()) -> Rollout:
    """Stand down, leave traffic as it is, and tell a human."""
    after = rollout.moved(Status.HALTED, trigger, hold_reason="")
    after = out.decide(rollout, after, policy=policy, time=at, action=HALT,
                       reason=f"{reason}; traffic left as it is, a human must decide",
                       trigger=trigger, criteria=criteria, evidence_through=rollout.evaluated_through)
    out.commands.append(Notify(service=after.service, severity="ERROR",
                               subject=f"{after.service}: rollout halted, needs a human",
                               decision=out.decisions[-1].to_json()))
    return after


def _suppressed(rollout: Rollout, policy: Policy, at: datetime, action: str, percent: int, reason: str,
                trigger: str, out: Builder, criteria: tuple) -> Rollout:
    """The kill switch is on: log what would have happened, change nothing."""
    text = f"kill switch on, not acted: would {action} to {percent}% ({reason})"
    if rollout.last_decision == f"{HOLD}: {text}":
        return rollout
    return out.decide(rollout, rollout, policy=policy, time=at, action=HOLD, reason=text,
                      trigger=trigger, criteria=criteria, evidence_through=rollout.evaluated_through,
                      acted=False)
