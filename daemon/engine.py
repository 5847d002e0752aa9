"""The engine: feeds events to the pure core, journals, and carries out the core's commands.

The live daemon, the sandbox, replay and backtests all build this same Engine; `daemon.bootstrap`
chooses the adapters (traffic controller, notifier, error-log source, journal, telemetry).

Order of work for each event, so that nothing is lost and nothing is done twice:
  1. journal the input;  2. `step()` (pure);  3. journal the decisions and evidence;
  4. carry out the commands (traffic, logs, notifications); failures come back as events.
A Pub/Sub message is acknowledged only after `submit()` returns.
"""
from __future__ import annotations

import threading
import time as _perf  # perf_counter only: evaluation time for telemetry, never a timestamp
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from daemon.core.commands import CaptureErrorLogs, DeleteRevision, Notify, SaveState, SetTraffic
from daemon.ports import (ActionError, ConflictError, Journal, ManualChangeError, NullJournal, PermanentError,
                          RecordChangedError, TransientError)
from daemon.core.decision import Decision, KILL_SWITCH, REFUSE
from daemon.core.events import (ActionApplied, ActionFailed, Alert, Command, Deploy, Event, Ignored, GlobalState, Rejected,
                                Resync, Tick, TrafficChanged)
from daemon.core.outcome import durable_part, record_of
from daemon.core.persist import AnnotationError, service_state_from_annotations
from daemon.core.outcome import Step
from daemon.core.rollout import ServiceState, Status
from daemon.core.service_id import ServiceId, resolve, service_id_of
from daemon.core.step import step
from policies.principals import may_flip_kill_switch
from daemon.telemetry import NullTelemetry
from policies.model import Policy


# How many times one event is decided again after finding another writer's record on the service.
MAX_REDECIDE = 3


@dataclass
class RateLimiter:
    """At most N traffic changes per service and per project in a sliding hour (virtual time)."""

    per_service: int
    per_project: int
    _service: dict[str, deque[datetime]] = field(default_factory=dict)
    _project: dict[str, deque[datetime]] = field(default_factory=dict)

    def allow(self, service: str, project: str, at: datetime) -> bool:
        horizon = at - timedelta(hours=1)
        s = self._service.setdefault(service, deque())
        p = self._project.setdefault(project, deque())
        for queue in (s, p):
            while queue and queue[0] <= horizon:
                queue.popleft()
        if len(s) >= self.per_service or len(p) >= self.per_project:
            return False
        s.append(at)
        p.append(at)
        return True

    def refund(self, service: str, project: str, at: datetime) -> None:
        """Give back the slot `allow` just took: the service was already as wanted (another replica,
        or a restart re-applying its journal, got there first), so no traffic moved."""
        for queue in (self._service.get(service), self._project.get(project)):
            if queue and queue[-1] == at:
                queue.pop()


@dataclass
class Outputs:
    """What one submit() produced (for the caller: logs, stdout, tests)."""

    decisions: list[Decision] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class Engine:
    def __init__(self, *, policy: Callable[[], Policy], traffic: Any, notifier: Any = None,
                 error_logs: Any = None, journal: Journal | None = None, telemetry: Any = None,
                 clock: Any, dry_run: bool = False, actions_enabled: bool = True,
                 on_decision: Callable[[Decision], None] | None = None,
                 labels_of: Callable[[str], dict[str, str]] | None = None,
                 journal_evaluations: bool = True,
                 on_action: Callable[[dict[str, Any]], None] | None = None,
                 default_project: str = "", default_location: str = "") -> None:
        self._policy = policy
        self.traffic = traffic
        self.notifier = notifier
        self.error_logs = error_logs
        self.journal: Journal = journal or NullJournal()
        self.telemetry = telemetry or NullTelemetry()
        self.clock = clock
        self.dry_run = dry_run
        self.actions_enabled = actions_enabled
        self.kill_switch_setting = not actions_enabled  # the configured switch: no command turns it off
        self.on_decision = on_decision
        # What happened to each write (applied, already as wanted, failed, a human's or another
        # replica's change found): told apart from the decision that asked for it.
        self.on_action = on_action
        self.labels_of = labels_of
        self.journal_evaluations = journal_evaluations
        # Services are identified by project, location and name (`daemon.core.service_id`): two
        # services called `checkout` in two regions are two rollouts. An event that does not say
        # where its service is gets the defaults (the daemon's project, its only location) or, when
        # its name is managed in several locations, is rejected.
        self.default_project = default_project
        self.default_location = default_location
        self.states: dict[ServiceId, ServiceState] = {}
        # Services whose state could not be read or evaluated: held (no action, no evaluation) and a
        # human told, once. Rebuilt on restart from the same source, so not lost.
        self.quarantined: dict[ServiceId, str] = {}
        self._redecide: dict[int, int] = {}  # id(event) -> times decided again after a record conflict
        # Open incidents that block every promotion (policy `alerts.blocking`): id -> name.
        self.blocking: dict[str, str] = {}
        self.labels: dict[ServiceId, dict[str, str]] = {}
        self.last_tick: datetime | None = None
        self.last_evaluation_at: datetime | None = None
        self._lock = threading.RLock()
        # Recovery (sandbox restart from the journal): decisions already journaled are not written,
        # printed or acted on again; inputs, ticks and evidence are not re-journaled.
        self.recovering = False
        self.known_decisions: set[str] = set()
        # The last traffic change of each service whose decision was already journaled: a crash
        # between the journal's fsync and the update would lose it, so recovery re-applies it
        # (idempotent: no call when the traffic is already as wanted). See reapply_recovered().
        self.recovered_traffic: dict[ServiceId, SetTraffic] = {}
        base = policy()
        self.rate_limiter = RateLimiter(base.rate_limits.max_actions_per_service_per_hour,
                                        base.rate_limits.max_actions_per_project_per_hour)

    # --- policy ---------------------------------------------------------------------------------
    def policy_for(self, service: ServiceId | str) -> Policy:
        key = service if isinstance(service, ServiceId) else ServiceId("", "", service)
        labels = self.labels.get(key)
        if labels is None and self.labels_of is not None:
            labels = self.labels_of(key.name)
            self.labels[key] = labels
        return self._policy().for_service(key.name, labels or {})

    # --- which service --------------------------------------------------------------------------
    def identify(self, event: Any, where: str = "") -> ServiceId | Rejected | None:
        """The service an event is about (None: about no service). The one rule of
        `daemon.core.service_id.resolve`, over the services this engine knows."""
        name = getattr(event, "service", None)
        if not name:
            return None
        return resolve(name, getattr(event, "project", "") or "", getattr(event, "location", "") or "",
                       self.states, default_project=self.default_project,
                       default_location=self.default_location, where=where)

    def state_of(self, service: ServiceId | str) -> ServiceState | None:
        """A service's state, by id, resource name, or a bare name managed in one location only."""
        with self._lock:
            if isinstance(service, ServiceId):
                return self.states.get(service)
            if "/" in service:
                return self.states.get(ServiceId.parse(service))
            found = [state for key, state in self.states.items() if key.name == service]
            return found[0] if len(found) == 1 else None

    # --- input ----------------------------------------------------------------------------------
    def reject(self, rejected: Rejected | Ignored, *, received_at: datetime | None = None) -> None:
        """Journal and count input that did not become an event. Changes no state."""
        record = {"type": rejected.kind, "reason": rejected.reason, "where": rejected.where}
        if isinstance(rejected, Rejected) and rejected.raw:
            record["raw"] = rejected.raw[:2000]
        if received_at is not None:
            record["received_at"] = received_at.isoformat()
        with self._lock:
            self.journal.write(record)
        self.telemetry.event(rejected.kind_hint if isinstance(rejected, Rejected) and rejected.kind_hint
                             else "unknown", rejected.kind)

    def submit(self, event: Event, *, received_at: datetime | None = None,
               journal_input: bool = True) -> Outputs:
        """Handle one event end to end. Returns after the decisions are journaled and acted on."""
        out = Outputs()
        with self._lock:
            pending: deque[Event] = deque([event])
            first = True
            while pending:
                current = pending.popleft()
                self._handle(current, out, pending, received_at=received_at,
                             journal_input=journal_input or not first)
                first = False
        return out

    def tick(self, now: datetime) -> Outputs:
        """Time passed: wake every active rollout. Ticks are journaled so a journal replays exactly."""
        out = Outputs()
        with self._lock:
            self.last_tick = now
            active = [key for key, s in self.states.items()
                      if (s.rollout and s.rollout.status.pending) or s.unsaved]
            if active and not self.recovering:
                self.journal.write({"type": "tick", "time": _iso(now)})
            for key in active:
                if key in self.quarantined:
                    continue
                pending: deque[Event] = deque([Tick(time=now)])
                try:
                    first = True
                    while pending:
                        # The tick itself is journaled once above; what follows from it (results of
                        # actions) is journaled like any input, so recovery replays it.
                        self._handle(pending.popleft(), out, pending, service=key, journal_input=not first)
                        first = False
                except Exception as error:  # noqa: BLE001 - one service's bad state never stops the others
                    self.quarantine(key, f"evaluation failed: {type(error).__name__}: {error}")
            self.last_evaluation_at = now
            self._report_rollouts()
        return out

    def _handle(self, event: Event, out: Outputs, pending: deque[Event], *, service: ServiceId | None = None,
                received_at: datetime | None = None, journal_input: bool = True) -> None:
        if journal_input and not self.recovering and not isinstance(self.journal, NullJournal):
            record = _event_record(event)
            if received_at is not None:
                record["received_at"] = _iso(received_at)
            self.journal.write(record)
        if isinstance(event, Command) and event.action.startswith("kill-switch"):
            self._kill_switch(event, out)
            return
        if isinstance(event, Alert) and (self._policy().alerts.blocks(event.severity, dict(event.policy_labels))
                                         or (event.state == "closed" and event.incident_id in self.blocking)):
            self._blocking_alert(event, out)
        key = service or self.identify(event)
        if key is None:
            self.telemetry.event(event.kind, "ignored")
            return
        if isinstance(key, Rejected):
            self.telemetry.event(event.kind, "rejected")
            self.journal.write({"type": "rejected", "reason": key.reason, "where": key.where})
            out.rejected.append(key)
            return
        name = key
        if not isinstance(event, Tick) and (event.project, event.location) != (key.project, key.location):
            # The core sees where the service is, as resolved: its rollout, commands and decisions
            # name the same project and location as the key (the input was journaled as received).
            event = replace(event, project=key.project, location=key.location)  # type: ignore[arg-type]
        if isinstance(event, Deploy) and event.labels:
            self.labels[name] = dict(event.labels)
        # A service seen for the first time carries the daemon-wide switches from now on; the
        # service itself is believed to carry no record yet (confirmed empty).
        state = self.states.get(name) or ServiceState(
            service=name.name, project=name.project, location=name.location,
            kill_switch=not self.actions_enabled, blocking_incidents=frozenset(self.blocking), confirmed=())
        policy = self.policy_for(name)
        now = self.clock.now() if self.clock is not None else getattr(event, "time", None)
        if self.last_tick is not None and (now is None or now < self.last_tick):
            now = self.last_tick
        if name in self.quarantined and not isinstance(event, Resync):
            self.reject(Ignored(f"{event.kind} for {name}, held: {self.quarantined[name]}", str(name)))
            return
        started = _perf.perf_counter()
        try:
            result: Step = step(state, event, policy, now=now, actions_enabled=self.actions_enabled)
        except Exception as error:  # noqa: BLE001 - a core bug on one service must not stop the others
            self.quarantine(name, f"{event.kind} could not be evaluated: {type(error).__name__}: {error}")
            return
        if isinstance(event, Resync) and result.rejected is None:
            self.quarantined.pop(name, None)  # a readable record again
        self.telemetry.evaluation_seconds(_perf.perf_counter() - started)
        if received_at is not None and hasattr(event, "time"):
            self.telemetry.lag((received_at - event.time).total_seconds())
        if result.rejected is not None:
            self.telemetry.event(event.kind, "rejected")
            self.journal.write({"type": "rejected", "reason": result.rejected.reason,
                                "where": result.rejected.where})
            out.rejected.append(result.rejected)
            return
        self.telemetry.event(event.kind, "duplicate" if result.note.startswith("duplicate") else "accepted")
        if self.journal_evaluations and not self.recovering:
            for evaluation in result.evaluations:
                self.journal.write(evaluation.to_json())
        if result.evaluations:
            self._report_evidence(name.name, result.evaluations[-1])
        decisions = [replace(d, acted=False) if self.dry_run and d.changes_traffic else d
                     for d in result.decisions]
        if self.recovering:
            fresh = [d for d in decisions if d.decision_id not in self.known_decisions]
            if not fresh:
                # Journaled before the restart (its results are in the journal too), or no decision
                # at all (a state save: retried on ticks once running). Its traffic change may not
                # have landed: re-applied once recovery is over.
                for command in result.commands:
                    if isinstance(command, SetTraffic):
                        self.recovered_traffic[name] = command
                self._commit(name, result.state)
                return
            if any(isinstance(command, SetTraffic) for command in result.commands):
                self.recovered_traffic.pop(name, None)  # a newer change is carried out now
            decisions = fresh
        for decision in decisions:
            self.journal.write(decision.to_json(), durable=True)
            self.telemetry.decision(decision.action)
            out.decisions.append(decision)
            if self.on_decision is not None:
                self.on_decision(decision)
        # The new state is committed only after its decisions are journaled and its actions carried
        # out: if anything raises in between, the event is not acknowledged, and its redelivery is
        # decided again from the old state instead of being dropped as a duplicate.
        waiting = len(pending)
        self._carry_out(result.commands, decisions, pending)
        conflict = next((e for e in list(pending)[waiting:] if isinstance(e, Resync) and e.origin == "conflict"), None)
        if conflict is not None and not isinstance(event, Resync):
            # Another writer changed the service's record since we read it: our decision was made on
            # an old state. Nothing of it is kept; the record is adopted, then the same event is
            # decided again on it (a bounded number of times).
            tries = self._redecide.get(id(event), 0)
            if tries < MAX_REDECIDE:
                self._redecide[id(event)] = tries + 1
                pending.insert(pending.index(conflict) + 1, event)
                return
        self._redecide.pop(id(event), None)
        self._commit(name, result.state)

    def _commit(self, name: ServiceId, state: ServiceState) -> None:
        if state.rollout is not None or name in self.states or state.open_alerts or state.kill_switch:
            self.states[name] = state

    def reapply_recovered(self) -> Outputs:
        """After recovery from the journal: make sure each service's last journaled traffic change
        landed. A crash between journaling a decision and acting on it would otherwise leave Cloud Run
        one step behind the rollout (and the next change would look like a human's). The controller
        makes no call when the traffic is already as wanted; a real human change still stands us down."""
        out = Outputs()
        with self._lock:
            pending: deque[Event] = deque()
            for _, command in sorted(self.recovered_traffic.items(), key=lambda item: item[0]):
                result = self._write(command)
                if result is not None:
                    pending.append(result)
            self.recovered_traffic.clear()
            while pending:
                self._handle(pending.popleft(), out, pending)
        return out

    # --- commands -------------------------------------------------------------------------------
    def _carry_out(self, commands: Iterable[Any], decisions: list[Decision], pending: deque[Event]) -> None:
        captured: dict[str, Any] = {}
        for command in commands:
            if isinstance(command, (SetTraffic, SaveState)):
                result = self._write(command)
                if result is None:
                    continue
                pending.append(result)
                if isinstance(command, SetTraffic) and not isinstance(result, ActionApplied):
                    return  # traffic did not move: do not notify or delete as if it had
            elif isinstance(command, CaptureErrorLogs):
                captured[command.decision_id] = self._capture(command)
            elif isinstance(command, Notify):
                self._notify(command, captured)
            elif isinstance(command, DeleteRevision):
                if not self.dry_run and self.actions_enabled:
                    try:
                        self.traffic.delete_revision(command)
                    except ActionError as error:
                        self.telemetry.api_error(error.api or "run", error.code or type(error).__name__)

    def _write(self, command: SetTraffic | SaveState) -> Event | None:
        """Carry out one write on Cloud Run and say what happened, as an event for the core. What was
        asked is in the decision; what happened is journaled here, separately."""
        at = self._now(command)
        if not self.actions_enabled and isinstance(command, SaveState) and not command.switches:
            # Kill switch on: hands off Cloud Run. Only the switch itself is recorded on the services;
            # the rest of the record is saved when the switch is turned off (it stays unsaved).
            return None
        kind = command.kind
        expected = command.expected_canary_percent if isinstance(command, SetTraffic) else None
        # Taking traffic away from a canary (a rollback, an abort) is never rate-limited; the limit
        # guards against promotion loops. State saves move no traffic.
        limited = (isinstance(command, SetTraffic) and not self.dry_run
                   and command.canary_percent > (expected if expected is not None else 0))
        if limited and not self.rate_limiter.allow(str(service_id_of(command)), command.project, at):
            return self._result(ActionFailed(
                time=at, service=command.service, project=command.project, location=command.location, action=kind,
                decision_id=command.decision_id,
                error="rate limit on traffic changes reached (policy rate_limits)", canary_percent_before=expected))
        try:
            applied = (self.traffic.apply(command) if isinstance(command, SetTraffic)
                       else self.traffic.save_state(command))
            changed = bool(applied is None or applied.changed)
            if limited and not changed:  # already as wanted: another replica or a retry got there first
                self.rate_limiter.refund(str(service_id_of(command)), command.project, at)
            return self._result(ActionApplied(
                time=at, service=command.service, project=command.project, location=command.location, action=kind,
                decision_id=command.decision_id,
                canary_percent=command.canary_percent if isinstance(command, SetTraffic) else None,
                changed=changed, record=tuple(sorted(durable_part(dict(command.annotations)).items()))))
        except ManualChangeError as error:
            self._action_record(command, "manual-change", str(error))
            return TrafficChanged(time=at, service=command.service, project=command.project,
                                  location=command.location, canary_percent=error.observed_canary_percent,
                                  principal="", detail=str(error))
        except RecordChangedError as error:
            self._action_record(command, "record-changed", str(error))
            return self._reread(command, at, str(error))
        except (ConflictError, TransientError, PermanentError, ActionError) as error:
            self.telemetry.api_error(error.api or "run", error.code or type(error).__name__)
            return self._result(ActionFailed(
                time=at, service=command.service, project=command.project, location=command.location, action=kind,
                decision_id=command.decision_id,
                error=f"{type(error).__name__}: {error}", canary_percent_before=expected))

    def _result(self, event: ActionApplied | ActionFailed) -> Event:
        outcome = ("applied" if isinstance(event, ActionApplied) and event.changed else
                   "already-as-wanted" if isinstance(event, ActionApplied) else "failed")
        self.telemetry.event(event.kind, outcome)
        if not self.recovering:
            record: dict[str, Any] = {"type": "action", "time": _iso(event.time), "service": event.service,
                                      **_where(event), "command": event.action,
                                      "decision_id": event.decision_id, "outcome": outcome}
            if isinstance(event, ActionApplied) and event.canary_percent is not None:
                record["canary_percent"] = event.canary_percent
            if isinstance(event, ActionFailed):
                record["detail"] = event.error[:2000]
            if self.on_action is not None:
                self.on_action(record)
        return event

    def _action_record(self, command: Any, outcome: str, detail: str) -> None:
        record = {"type": "action", "time": _iso(self._now(command)), "service": command.service,
                  **_where(command), "command": command.kind, "decision_id": command.decision_id,
                  "outcome": outcome, "detail": detail[:2000]}
        self.journal.write(record)
        if self.on_action is not None:
            self.on_action(record)

    def _reread(self, command: Any, at: datetime, why: str) -> Event:
        """Someone else wrote the service's record: read it back and let the core re-decide."""
        try:
            view = self.traffic.get_service(command.project, command.location, command.service)
            found = service_state_from_annotations(view.name, view.project, view.location, view.annotations,
                                                   self.policy_for(service_id_of(command)), now=at)
        except (ActionError, AnnotationError) as error:
            return ActionFailed(time=at, service=command.service, project=command.project,
                                location=command.location, action=command.kind,
                                decision_id=command.decision_id, error=f"{why}; re-read failed: {error}")
        observed = view.percent_of(found.rollout.canary) if found is not None and found.rollout else None
        return Resync(time=at, service=command.service, project=command.project, location=command.location,
                      found=found, observed_canary_percent=observed,
                      origin="conflict")

    def quarantine(self, service: ServiceId, reason: str) -> None:
        """Hold one service whose state is corrupt or whose evaluation fails; the others go on."""
        first = service not in self.quarantined
        self.quarantined[service] = reason
        if not first:
            return
        where = {k: v for k, v in (("project", service.project), ("location", service.location)) if v}
        self.journal.write({"type": "quarantined", "service": service.name, **where, "reason": reason[:2000]},
                           durable=True)
        self.telemetry.event("service", "quarantined")
        if self.notifier is not None:
            try:
                self.notifier.notify(Notify(service=service.name, severity="ERROR",
                                            subject=f"{service}: rollbackd holds this service, a human must look",
                                            decision={"service": service.name, **where, "reason": reason[:2000]}))
            except ActionError as error:
                self.telemetry.api_error(error.api or "pubsub", error.code or type(error).__name__)

    def _capture(self, command: CaptureErrorLogs) -> Any:
        if self.error_logs is None:
            return None
        try:
            logs = self.error_logs.capture(command)
        except ActionError as error:  # a rollback never waits on log capture
            self.telemetry.api_error(error.api or "logging", error.code or type(error).__name__)
            return None
        record = {"type": "decision-logs", "decision_id": command.decision_id, "service": command.service,
                  **_where(command), "logs": logs.to_json()}
        self.journal.write(record, durable=True)
        return logs

    def _notify(self, command: Notify, captured: dict[str, Any]) -> None:
        if self.notifier is None:
            return
        decision = dict(command.decision)
        logs = captured.get(str(decision.get("decision_id")))
        if logs is not None:
            decision["error_logs"] = logs.to_json()
        try:
            self.notifier.notify(replace(command, decision=decision))
        except ActionError as error:
            self.telemetry.api_error(error.api or "pubsub", error.code or type(error).__name__)

    def _kill_switch(self, event: Command, out: Outputs) -> None:
        key = self.identify(event)
        written_on_key = key if isinstance(key, ServiceId) and key in self.states else None
        written_on = self.states.get(written_on_key) if written_on_key is not None else None
        if event.command_id and written_on is not None and event.command_id in written_on.handled_commands:
            # Already decided (a redelivery, or another replica's). A replica killed amid the fan-out
            # leaves some services without the switch, and the message comes back: finish the fan-out
            # with what the service the command was written on records now (the latest decision,
            # whatever order redeliveries arrive in). Services already carrying it write nothing.
            self.actions_enabled = not (self.kill_switch_setting or written_on.kill_switch)
            self._fan_out_globals(event.time, out, by=event.by)
            return
        policy = self._policy()
        on = event.action == "kill-switch-on"
        # IAM on one service cannot authorise a stop of every service: the principal must be listed.
        allowed = may_flip_kill_switch(event.by, policy.commands.kill_switch_allowed)
        if allowed:
            self.actions_enabled = not on and not self.kill_switch_setting
        reason = (f"kill switch {'on: all actions stopped' if on else 'off: actions resumed'} by {event.by}"
                  if allowed else f"refused '{event.action}' from {event.by}: not an authorised principal")
        decision = Decision(decision_id=f"kill-switch@{_iso(event.time)}", time=event.time, service="*",
                            canary="", baseline="", phase=0, phase_name="", action=KILL_SWITCH if allowed else REFUSE,
                            status_before="", status_after="", canary_percent_before=0, canary_percent_after=0,
                            reason=reason + (f" ({event.reason})" if event.reason else ""),
                            trigger=f"command:{event.action}", acted=allowed)
        if not allowed and self.notifier is not None:
            try:
                self.notifier.notify(Notify(service=event.service or "*", severity="WARNING",
                                            subject=f"refused command {event.action} from {event.by or 'unknown'}",
                                            decision=decision.to_json()))
            except ActionError as error:
                self.telemetry.api_error(error.api or "pubsub", error.code or type(error).__name__)
        self.journal.write(decision.to_json(), durable=True)
        self.telemetry.decision(decision.action)
        out.decisions.append(decision)
        if self.on_decision is not None:
            self.on_decision(decision)
        if allowed:
            self._fan_out_globals(event.time, out, by=event.by, command=(written_on_key, event.command_id))
        elif event.command_id and written_on_key is not None:  # refused: recorded as handled all the same
            self._fan_out_globals(event.time, out, by=event.by, command=(written_on_key, event.command_id),
                                  only=written_on_key)

    def _fan_out_globals(self, at: datetime, out: Outputs, *, by: str = "",
                         command: tuple[ServiceId | None, str] = (None, ""), only: ServiceId | None = None) -> None:
        """Record the daemon-wide switches on every service rollbackd knows (or `only` one), so a
        restart or another replica keeps them (each service's record is saved by the core, like any
        state change). `command`: (service, id) of the kill-switch command written on that service."""
        for key in sorted(self.states) if only is None else [only]:
            switches = GlobalState(time=at, service=key.name, project=key.project, location=key.location,
                                   kill_switch=not self.actions_enabled,
                                   blocking_incidents=frozenset(self.blocking), by=by,
                                   command_id=command[1] if key == command[0] else "")
            pending: deque[Event] = deque([switches])
            while pending:
                self._handle(pending.popleft(), out, pending)

    def _blocking_alert(self, event: Alert, out: Outputs) -> None:
        """An incident the policy calls blocking (P0/P1: by severity or the alert policy's labels),
        on any resource: while one is open no managed service promotes, and new rollouts wait at
        their first step. Rollbacks are never blocked."""
        before = dict(self.blocking)
        if event.state == "open":
            self.blocking[event.incident_id] = event.policy_name or event.incident_id
        else:
            self.blocking.pop(event.incident_id, None)
        if self.blocking.keys() != before.keys():
            self.journal.write({"type": "blocking-incidents", "time": _iso(event.time),
                                "open": sorted(self.blocking)}, durable=True)
            self._fan_out_globals(event.time, out)

    def _now(self, command: Any) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.min

    # --- telemetry ------------------------------------------------------------------------------
    def _report_evidence(self, service: str, evaluation: Any) -> None:
        for result in evaluation.results:
            value = result.verdict.statistic
            if isinstance(value, (int, float)) and value == value:
                self.telemetry.evidence(service, result.name, float(value))

    def _report_rollouts(self) -> None:
        by_phase: dict[str, int] = {}
        for state in self.states.values():
            rollout = state.rollout
            if rollout is not None and rollout.status.active:
                key = str(rollout.phase_index + 1)
                by_phase[key] = by_phase.get(key, 0) + 1
        self.telemetry.rollouts(by_phase)

    # --- the durable record read back ------------------------------------------------------------
    def read_back(self, views: Iterable[Any], origin: str) -> list[Any]:
        """Feed each service's `rollbackd.dev/*` record to the core as a `Resync` event: on start
        (origin "restore") and periodically (origin "resync", another replica's writes). The core
        decides what to adopt (`daemon.core.reconcile`). A record that cannot be read holds that one
        service and tells a human; the others go on. Returns the rollouts whose evidence must be
        re-derived from Cloud Monitoring (a new rollout or phase was adopted)."""
        rebuilt: list[Any] = []
        for view in views:
            name = ServiceId(view.project, view.location, view.name)
            with self._lock:
                self.labels[name] = dict(view.labels)
                try:
                    found = service_state_from_annotations(view.name, view.project, view.location,
                                                           view.annotations, self.policy_for(name),
                                                           now=self.clock.now())
                except AnnotationError as error:
                    self.quarantine(name, str(error))
                    continue
                except Exception as error:  # noqa: BLE001 - one unreadable record never stops the others
                    self.quarantine(name, f"unreadable rollbackd annotations: {type(error).__name__}: {error}")
                    continue
                before = self.states.get(name)
                if found is None and before is None:
                    self.quarantined.pop(name, None)
                    continue
                observed = (view.percent_of(found.rollout.canary)
                            if found is not None and found.rollout is not None else None)
                self.submit(Resync(time=self.clock.now(), service=view.name, project=view.project,
                                   location=view.location, found=found,
                                   observed_canary_percent=observed, origin=origin))
                after = self.states.get(name)
                rollout = after.rollout if after is not None else None
                if rollout is not None and rollout.status.active and (
                        before is None or before.rollout is None or rollout.evidence is not before.rollout.evidence):
                    rebuilt.append(rollout)
        with self._lock:
            # The daemon-wide switches are what the records say (plus the configured kill switch):
            # another replica may have turned them on, or off.
            self.actions_enabled = not (self.kill_switch_setting
                                        or any(state.kill_switch for state in self.states.values()))
            recorded = {incident for state in self.states.values() for incident in state.blocking_incidents}
            self.blocking = {incident: self.blocking.get(incident, incident) for incident in sorted(recorded)}
        return rebuilt

    # --- queries --------------------------------------------------------------------------------
    def active_rollouts(self) -> list[Any]:
        with self._lock:
            return [s.rollout for s in self.states.values() if s.rollout and s.rollout.status.active]


def _iso(when: datetime) -> str:
    from daemon.core.timefmt import format_rfc3339
    return format_rfc3339(when)


def _where(event: Any) -> dict[str, str]:
    """The service's project and location in a journal line, when known."""
    return {k: v for k, v in (("project", event.project), ("location", event.location)) if v}


def _event_record(event: Event) -> dict[str, Any]:
    from daemon.core.codec import event_to_json
    if isinstance(event, Tick):
        return {"type": "tick", "time": _iso(event.time)}
    if isinstance(event, (ActionFailed, ActionApplied)):
        return event_to_json(event)
    if isinstance(event, Resync):
        found = event.found
        return {"type": "resync", "time": _iso(event.time), "service": event.service, **_where(event),
                "origin": event.origin,
                "observed_canary_percent": event.observed_canary_percent,
                "record": record_of(found) if found is not None else None}
    if isinstance(event, GlobalState):
        return {"type": "global-state", "time": _iso(event.time), "service": event.service, **_where(event),
                "kill_switch": event.kill_switch, "blocking_incidents": sorted(event.blocking_incidents),
                "by": event.by}
    return event_to_json(event)


__all__ = ["Engine", "Outputs", "RateLimiter", "Status"]
