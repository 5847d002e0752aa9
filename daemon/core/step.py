"""`step(state, event, policy) -> Step`: the pure decision core.

One call handles one event for one service. No I/O, no clock reads: time comes inside events, and the
returned `Step` says when the core next wants a `Tick`. The live daemon, the sandbox, replay and
backtests all call this same function; they differ only in the adapters around it.

Status changes go through `Rollout.moved`, which checks daemon.core.rollout.TRANSITIONS. An event
the table does not accept is rejected with a reason and the state is returned unchanged.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from daemon.core import evaluation as ev
from daemon.core import progress, reconcile, results
from daemon.core.commands import Notify
from daemon.core.decision import HOLD, PROMOTE, REFUSE, RESUME, SUPERSEDE
from daemon.core.events import (ActionApplied, ActionFailed, Alert, Command, Deploy, Event, GlobalState, Metrics,
                                Rejected, Resync, Tick, TrafficChanged)
from daemon.core.outcome import Builder, Step
from daemon.core.rollout import IllegalTransition, Rollout, ServiceState, Status, accepts
from policies.model import Policy
from policies.principals import may_command_service


def table_kind(event: Event) -> str:
    """The event kind as the transition table names it."""
    if isinstance(event, Command):
        return f"command:{event.action}"
    if isinstance(event, Alert):
        return "alert-open" if event.state == "open" else "alert-close"
    return event.kind


def step(state: ServiceState, event: Event, policy: Policy, *, now: datetime | None = None,
         actions_enabled: bool = True) -> Step:
    """Apply one event to one service's state.

    `now` is the engine's notion of the present (the latest Tick); it only decides when a minute
    whose data never arrived is treated as missing. `actions_enabled=False` is the global kill
    switch: decisions are still made and logged, but none changes traffic.
    """
    kind = table_kind(event)
    if not accepts(state.status, kind):
        return _reject(state, event, f"'{kind}' is not accepted while the service is {state.status.value}"
                       + ("" if state.rollout else " (no rollout)"))
    if not isinstance(event, (Metrics, Tick, ActionApplied, ActionFailed, Resync)):
        # Results and read-backs are not deliveries: two identical ones are two facts.
        key = event.key()
        if state.seen(key):
            return Step(state=state, note="duplicate event")
        state = state.remember(key, event.time)
    present = now or getattr(event, "time", None)
    rollout = state.rollout
    if (rollout is not None and isinstance(event, (Command, TrafficChanged, Deploy))
            and event.time < rollout.started_at):
        # From before this rollout began (a late redelivery): it cannot be about this canary. A deploy
        # older than the rollout is the one before it (or its baseline's): it must not supersede.
        return Step(state=state, note=f"{event.kind} from before the rollout started; ignored")
    try:
        if isinstance(event, Deploy):
            return _on_deploy(state, event, policy, actions_enabled, present)
        if isinstance(event, Resync):
            return _from(state, reconcile.on_resync(state, event, policy), policy)
        if isinstance(event, ActionApplied):
            return _from(state, results.on_applied(state, event, policy), policy)
        if isinstance(event, GlobalState):
            after = replace(state, kill_switch=event.kill_switch, blocking_incidents=event.blocking_incidents)
            if event.command_id:
                after = after.with_handled(event.command_id)
            return _finish_step(state, after, Builder(switches=True), policy)
        if isinstance(event, Metrics):
            return _on_metrics(state, event, policy, present, actions_enabled)
        if isinstance(event, Tick):
            return _on_tick(state, event, policy, actions_enabled)
        if isinstance(event, Alert):
            return _on_alert(state, event, policy, actions_enabled)
        if isinstance(event, Command):
            return _on_command(state, event, policy, actions_enabled)
        if isinstance(event, TrafficChanged):
            return _on_traffic_changed(state, event, policy)
        if isinstance(event, ActionFailed):
            return _from(state, results.on_failed(state, event, policy), policy)
    except IllegalTransition as error:  # a bug in a handler must not corrupt state
        return _reject(state, event, f"illegal transition: {error}")
    return _reject(state, event, f"unknown event kind {kind}")


def _reject(state: ServiceState, event: Event, reason: str) -> Step:
    return Step(state=state, rejected=Rejected(reason=reason, where=f"{event.kind} at {event.time.isoformat()}",
                                               kind_hint=event.kind))


def _finish(state: ServiceState, rollout: Rollout | None, out: Builder, policy: Policy, note: str = "",
            *, before: ServiceState | None = None) -> Step:
    """The step's result, with `state`'s rollout replaced; every change of the durable record is
    saved on the service (`Builder.build`). `before`: the state the step started from (default `state`)."""
    return _finish_step(before or state, replace(state, rollout=rollout), out, policy, note)


def _from(before: ServiceState, result: tuple[ServiceState, Builder, str], policy: Policy) -> Step:
    after, out, note = result
    return _finish_step(before, after, out, policy, note)


def _finish_step(before: ServiceState, after: ServiceState, out: Builder, policy: Policy, note: str = "") -> Step:
    wake = results.next_wakeup(after, policy)
    return out.build(after, before=before, next_wakeup=wake, note=note)


# --- deploy ---------------------------------------------------------------------------------------

def _on_deploy(state: ServiceState, event: Deploy, policy: Policy, actions_enabled: bool,
               present: datetime | None) -> Step:
    out = Builder()
    current = state.rollout
    if event.revision is None:
        return _reject(state, event, "the deploy does not name its revision; it must be resolved from Cloud Run first")
    if current is not None and current.canary == event.revision:
        if (current.status.active and event.canary_percent is not None and event.time > current.started_at
                and event.canary_percent != current.canary_percent):
            # A full update of the service (v2 UpdateService re-sends the template) by someone else
            # that moved the canary's share: a traffic change by a human, whatever its method name.
            return _on_traffic_changed(state, TrafficChanged(
                time=event.time, service=event.service, canary_percent=event.canary_percent,
                principal=event.principal, detail=f"{event.source} update of {event.revision}"), policy)
        return Step(state=state, note=f"{event.revision} is already this service's canary")
    if event.canary_percent not in (0, None):
        # Not a canary deploy: the revision got traffic directly. Remember it as stable when it has all.
        note = f"{event.revision} deployed with {event.canary_percent}% traffic: not a canary rollout"
        stable = event.revision if event.canary_percent == 100 else state.stable_revision
        if current is not None and current.status.active:
            halted = progress.halt(current, policy, event.time,
                                   f"{event.revision} was deployed with {event.canary_percent}% traffic by "
                                   f"{event.principal or 'someone'} during the rollout", "deploy", out)
            return _finish(replace(state, stable_revision=stable), halted, out, policy, note, before=state)
        return Step(state=replace(state, stable_revision=stable), note=note)
    baseline = event.baseline or _stable_of(state)
    if not baseline:
        return _reject(state, event, f"no baseline known for {event.service}: the first deploy must name it")
    if baseline == event.revision:
        return _reject(state, event, "the canary and the baseline are the same revision")

    released: tuple[str, ...] = ()
    if current is not None and current.status.pending:
        superseded = current.moved(Status.SUPERSEDED, "deploy")
        out.decide(current, superseded, policy=policy, time=event.time, action=SUPERSEDE,
                   reason=f"superseded by a new deploy of {event.revision}; "
                          f"{current.canary} leaves traffic to the new rollout", trigger="deploy")
        # The old rollout's baseline is still the stable revision (the dispatcher's guess from the
        # traffic could name the old canary at 50%), and the old canary's share is ours to take.
        baseline = current.baseline
        released = tuple(dict.fromkeys((current.canary, *current.released)))
        if baseline == event.revision:
            return _reject(state, event, "the canary and the baseline are the same revision")

    # The phase timer starts when traffic does. A deploy handled late (a backlog after an outage)
    # must still get its phases' full minimum time at real traffic, so past the late-data grace it
    # starts now. Within the grace (delivery delay, clock skew) it keeps the deploy's own time, so
    # redeliveries and skewed clocks give exactly the same decisions.
    lag_s = (present - event.time).total_seconds() if present is not None else 0.0
    at = present if present is not None and lag_s > policy.evidence.late_data_grace else event.time
    start = Rollout(
        rollout_id=f"{event.service}/{event.revision}@{event.time.strftime('%Y%m%dT%H%M%SZ')}", service=event.service, project=event.project,
        location=event.location, canary=event.revision, baseline=baseline,
        status=Status.IDLE, started_at=event.time, phase_index=-1, phase_started_at=at,
        canary_percent=0,  # a canary deploy arrives with no traffic
        evaluated_through=progress.minute_of(at), evidence=ev.new_evidence(policy),
        labels=dict(event.labels), released=released,
        # Incidents already open on the service are open for the canary too: no phase passes
        # while one is (the runbook's "no alerts"), but they are not the canary's fault.
        open_alerts=state.open_alerts if policy.alerts.scope != "canary" else frozenset(),
        alerts_before_start=state.open_alerts if policy.alerts.scope != "canary" else frozenset(),
    )
    new_state = replace(state, stable_revision=baseline, project=event.project or state.project,
                        location=event.location or state.location)
    if state.blocking_incidents:
        held = start.moved(Status.HELD, "deploy", hold_reason="incident")
        held = out.decide(start, held, policy=policy, time=at, action=HOLD, trigger="deploy",
                          reason=f"new canary {event.revision}, but blocking incident(s) are open "
                                 f"({', '.join(sorted(state.blocking_incidents)[:5])}): waiting at the first step")
        return _finish(new_state, held, out, policy, before=state)
    window = policy.freeze.active_window(at)
    if window is not None:
        held = replace(start, status=Status.IDLE).moved(Status.HELD, "deploy", hold_reason="freeze")
        held = out.decide(start, held, policy=policy, time=at, action=HOLD,
                          reason=f"new canary {event.revision}, but promotions are frozen "
                                 f"({window.start}–{window.end} {policy.freeze.timezone})",
                          trigger="deploy")
        return _finish(new_state, held, out, policy, before=state)
    first = _start_traffic(start, policy, at, "deploy", out, actions_enabled,
                           f"new canary {event.revision} against baseline {baseline}")
    return _finish(new_state, first, out, policy, before=state)


def _start_traffic(rollout: Rollout, policy: Policy, at: datetime, trigger: str, out: Builder,
                   actions_enabled: bool, reason: str) -> Rollout:
    phase = policy.phases[0]
    if not actions_enabled:
        text = f"kill switch on, not acted: would promote to {phase.percent}% ({reason})"
        if rollout.last_decision == f"{HOLD}: {text}":
            return rollout
        if rollout.status is Status.IDLE:
            rollout = rollout.moved(Status.HELD, trigger, hold_reason="kill-switch")
        return out.decide(rollout, rollout, policy=policy, time=at, action=HOLD, reason=text,
                          trigger=trigger, acted=False)
    after = rollout.moved(Status.COMPLETED if phase.percent == 100 else Status.PHASE, trigger,
                          phase_index=0, phase_started_at=at, canary_percent=phase.percent,
                          hold_reason="", evaluated_through=progress.minute_of(at),
                          evidence=ev.start_phase(rollout.evidence, 0))
    text = f"{reason}; {rollout.canary_percent}% → {phase.percent}%"
    after = out.decide(rollout, after, policy=policy, time=at, action=PROMOTE, reason=text, trigger=trigger)
    out.set_traffic(rollout, after, text)
    return after


def _stable_of(state: ServiceState) -> str:
    rollout = state.rollout
    if rollout is not None and rollout.status is Status.COMPLETED:
        return rollout.canary
    if rollout is not None:
        return rollout.baseline
    return state.stable_revision


# --- metrics and time -----------------------------------------------------------------------------

def _on_metrics(state: ServiceState, event: Metrics, policy: Policy, now: datetime, actions_enabled: bool) -> Step:
    rollout = state.rollout
    if rollout is None or not rollout.status.active:
        return Step(state=state, note="no active rollout")
    if rollout.phase_index < 0:
        return Step(state=state, note="rollout not started yet")
    rollout, note = progress.add_metrics(rollout, event)
    out = Builder()
    if not note:
        rollout = progress.advance(rollout, policy, now, "metrics", out, actions_enabled=actions_enabled,
                                       gate=state.blocking_incidents)
    return _finish(state, rollout, out, policy, note)


def _on_tick(state: ServiceState, event: Tick, policy: Policy, actions_enabled: bool) -> Step:
    rollout = state.rollout
    if rollout is not None and rollout.status is Status.ROLLING_BACK:
        return _from(state, results.retry_rollback(state, event.time, policy), policy)
    if rollout is None or not rollout.status.active:
        if state.unsaved:
            return _from(state, results.retry_save(state, event.time), policy)
        return Step(state=state)
    out = Builder()
    due = results.save_due(state, event.time)
    if due is not None:
        # A record that did not reach the service (a failed save, or a restart that cut it off) is
        # saved again with this tick's, unless this tick writes one anyway.
        out.force_save = True
        state = due
    if rollout.phase_index < 0:  # held before the first traffic change (freeze, kill switch, incident)
        if policy.freeze.active_window(event.time) is None and not state.blocking_incidents:
            rollout = _start_traffic(rollout, policy, event.time, "tick", out, actions_enabled,
                                     f"promotions allowed again for canary {rollout.canary}")
        return _finish(state, rollout, out, policy)
    rollout = progress.advance(rollout, policy, event.time, "tick", out, actions_enabled=actions_enabled,
                               gate=state.blocking_incidents)
    return _finish(state, rollout, out, policy)


# --- alerts ---------------------------------------------------------------------------------------

def _on_alert(state: ServiceState, event: Alert, policy: Policy, actions_enabled: bool) -> Step:
    # The service's open incidents are recorded whatever the rollout does: one open before a canary
    # starts still blocks its phases (the runbook's "no alerts"), and a restart must not forget it.
    opened = event.state == "open"
    before = state
    state = replace(state, open_alerts=(state.open_alerts | {event.incident_id} if opened
                                        else state.open_alerts - {event.incident_id}))
    rollout = state.rollout
    out = Builder()
    if rollout is None or not rollout.status.active:
        return _finish(state, rollout, out, policy, note="no active rollout; incident recorded", before=before)
    if policy.alerts.scope == "canary" and event.revision != rollout.canary:
        return _finish(state, rollout, out, policy, before=before,
                       note=f"alert on {event.revision or 'the service'}, policy scope is the canary")
    kind = table_kind(event)
    label = f"alert '{event.policy_name or event.incident_id}'"
    if not opened:
        rollout = rollout.with_(open_alerts=rollout.open_alerts - {event.incident_id},
                                alerts_before_start=rollout.alerts_before_start - {event.incident_id})
        if rollout.status is Status.HELD and rollout.hold_reason == "alert" and not rollout.open_alerts:
            after = rollout.moved(Status.PHASE, kind, hold_reason="")
            rollout = out.decide(rollout, after, policy=policy, time=event.time, action=RESUME,
                                 reason=f"{label} closed", trigger=kind)
        return _finish(state, rollout, out, policy, before=before)
    rollout = rollout.with_(open_alerts=rollout.open_alerts | {event.incident_id})
    action = policy.alerts.on_open
    if policy.alerts.dry_run or action == "pass":
        return _finish(state, rollout, out, policy, note=f"{label} open; policy does not act on it", before=before)
    if action == "rollback" and event.time >= rollout.started_at:
        reason = f"{label} opened on {event.revision or event.service}: {event.summary}".rstrip(": ")
        rollout = progress.roll_back(rollout, policy, event.time, reason, kind, out,
                                     actions_enabled=actions_enabled)
        return _finish(state, rollout, out, policy, before=before)
    if event.time < rollout.started_at:
        # Opened before this canary started (a late delivery): not its fault, but while it stays
        # open no phase passes; the next evaluated minute holds on it (`progress.decide_on_evidence`).
        rollout = rollout.with_(alerts_before_start=rollout.alerts_before_start | {event.incident_id})
        return _finish(state, rollout, out, policy, before=before, note=f"{label} open since before the rollout")
    if rollout.status is not Status.HELD:
        after = rollout.moved(Status.HELD, kind, hold_reason="alert")
        rollout = out.decide(rollout, after, policy=policy, time=event.time, action=HOLD,
                             reason=f"{label} open; holding until it closes", trigger=kind)
    return _finish(state, rollout, out, policy, before=before)


# --- commands -------------------------------------------------------------------------------------

def authorised(principal: str, policy: Policy) -> bool:
    """May this verified principal command a service? IAM (`run.services.update` on the service)
    already let it write the command; a non-empty `authorized_principals` narrows it to whole
    emails or `*@domain` (`policies.principals`: no patterns, strict email parsing)."""
    return may_command_service(principal, policy.commands.authorized_principals)


def _on_command(state: ServiceState, event: Command, policy: Policy, actions_enabled: bool) -> Step:
    rollout = state.rollout
    assert rollout is not None  # the table only accepts commands for active rollouts
    if event.command_id and event.command_id in state.handled_commands:
        return Step(state=state, note=f"duplicate command {event.command_id} (already handled)")
    before = state
    if event.command_id:  # saved on the service with the decision: a redelivery is not run twice
        state = state.with_handled(event.command_id)
    out = Builder()
    kind = table_kind(event)
    why = f" ({event.reason})" if event.reason else ""
    if not authorised(event.by, policy):
        rollout = out.decide(rollout, rollout, policy=policy, time=event.time, action=REFUSE, trigger=kind,
                             reason=f"refused '{event.action}' from {event.by or 'an unknown principal'}: "
                                    "not an authorised principal", acted=False)
        out.commands.append(Notify(service=rollout.service, severity="WARNING",
                                   subject=f"{rollout.service}: refused command {event.action}",
                                   decision=out.decisions[-1].to_json()))
        return _finish(state, rollout, out, policy, before=before)
    if rollout.status is Status.ROLLING_BACK:  # only abort is accepted: retry the rollback now
        return _from(before, results.retry_rollback(state, event.time, policy, force=True), policy)
    if event.action == "pause":
        after = rollout.moved(Status.HELD, kind, hold_reason="paused", paused=True)
        rollout = out.decide(rollout, after, policy=policy, time=event.time, action=HOLD,
                             reason=f"paused by {event.by}{why}", trigger=kind)
    elif event.action == "resume":
        elapsed = (event.time - rollout.phase_started_at).total_seconds()
        duration = policy.phases[rollout.phase_index].duration or 0.0 if rollout.phase_index >= 0 else 0.0
        target = Status.WAITING if rollout.phase_index >= 0 and elapsed >= duration else Status.PHASE
        if rollout.phase_index < 0:
            target = Status.HELD
        after = rollout.moved(target, kind, hold_reason="" if target is not Status.HELD else rollout.hold_reason,
                              paused=False)
        rollout = out.decide(rollout, after, policy=policy, time=event.time, action=RESUME,
                             reason=f"resumed by {event.by}{why}", trigger=kind)
    elif event.action == "abort":
        rollout = progress.roll_back(rollout, policy, event.time, f"aborted by {event.by}{why}", kind, out,
                                     actions_enabled=actions_enabled)
    elif event.action == "promote":
        if rollout.phase_index < 0:
            rollout = _start_traffic(rollout, policy, event.time, kind, out, actions_enabled,
                                     f"promoted by {event.by}{why}")
        else:
            rollout = progress.promote(rollout, policy, event.time, f"promoted by {event.by}{why}", kind, out,
                                       actions_enabled=actions_enabled)
    return _finish(state, rollout, out, policy, before=before)


# --- other writers and failures -------------------------------------------------------------------

def _on_traffic_changed(state: ServiceState, event: TrafficChanged, policy: Policy) -> Step:
    rollout = state.rollout
    if rollout is not None and rollout.status is Status.ROLLING_BACK:
        return _from(state, results.taken_over(state, event, policy), policy)
    if rollout is None or not rollout.status.active:
        return Step(state=state, note="no active rollout")
    if event.canary_percent is not None and event.canary_percent == rollout.canary_percent:
        return Step(state=state, note="traffic is as rollbackd set it")
    out = Builder()
    seen = "unknown" if event.canary_percent is None else f"{event.canary_percent}%"
    reason = (f"traffic changed by {event.principal or 'someone else'} (canary now {seen}, "
              f"rollbackd had set {rollout.canary_percent}%){': ' + event.detail if event.detail else ''}; "
              "standing down, never fighting a human")
    rollout = progress.halt(rollout, policy, event.time, reason, "traffic-changed", out)
    return _finish(state, rollout, out, policy)


__all__ = ["step", "table_kind", "authorised", "Step"]
