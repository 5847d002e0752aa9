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

from daemon.ports import (ActionError, ConflictError, Journal, ManualChangeError, NullJournal, PermanentError,
                          TransientError)
from daemon.core.commands import CaptureErrorLogs, DeleteRevision, Notify, SetTraffic
from daemon.core.decision import Decision, KILL_SWITCH, REFUSE
from daemon.core.events import (ActionFailed, Command, Deploy, Event, Ignored, Rejected, Tick,
                                TrafficChanged)
from daemon.core.outcome import Step
from daemon.core.rollout import ServiceState, Status
from daemon.core.step import authorised, step
from daemon.telemetry import NullTelemetry
from policies.model import Policy


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
                 journal_evaluations: bool = True) -> None:
        self._policy = policy
        self.traffic = traffic
        self.notifier = notifier
        self.error_logs = error_logs
        self.journal: Journal = journal or NullJournal()
        self.telemetry = telemetry or NullTelemetry()
        self.clock = clock
        self.dry_run = dry_run
        self.actions_enabled = actions_enabled
        self.on_decision = on_decision
        self.labels_of = labels_of
        self.journal_evaluations = journal_evaluations
        self.states: dict[str, ServiceState] = {}
        self.labels: dict[str, dict[str, str]] = {}
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
        self.recovered_traffic: dict[str, SetTraffic] = {}
        base = policy()
        self.rate_limiter = RateLimiter(base.rate_limits.max_actions_per_service_per_hour,
                                        base.rate_limits.max_actions_per_project_per_hour)

    # --- policy ---------------------------------------------------------------------------------
    def policy_for(self, service: str) -> Policy:
        labels = self.labels.get(service)
        if labels is None and self.labels_of is not None:
            labels = self.labels_of(service)
            self.labels[service] = labels
        return self._policy().for_service(service, labels or {})

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
            active = [name for name, s in self.states.items() if s.rollout and s.rollout.status.active]
            if active and not self.recovering:
                self.journal.write({"type": "tick", "time": _iso(now)})
            for name in active:
                pending: deque[Event] = deque([Tick(time=now)])
                while pending:
                    self._handle(pending.popleft(), out, pending, service=name, journal_input=False)
            self.last_evaluation_at = now
            self._report_rollouts()
        return out

    def _handle(self, event: Event, out: Outputs, pending: deque[Event], *, service: str | None = None,
                received_at: datetime | None = None, journal_input: bool = True) -> None:
        name = service or getattr(event, "service", None)
        if journal_input and not self.recovering and not isinstance(self.journal, NullJournal):
            record = _event_record(event)
            if received_at is not None:
                record["received_at"] = _iso(received_at)
            self.journal.write(record)
        if isinstance(event, Command) and event.action.startswith("kill-switch"):
            self._kill_switch(event, out)
            return
        if not name:
            self.telemetry.event(event.kind, "ignored")
            return
        if isinstance(event, Deploy) and event.labels:
            self.labels[name] = dict(event.labels)
        state = self.states.get(name) or ServiceState(service=name)
        policy = self.policy_for(name)
        now = self.clock.now() if self.clock is not None else getattr(event, "time", None)
        if self.last_tick is not None and (now is None or now < self.last_tick):
            now = self.last_tick
        started = _perf.perf_counter()
        result: Step = step(state, event, policy, now=now, actions_enabled=self.actions_enabled)
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
        if result.state.rollout is not None or name in self.states:
            self.states[name] = result.state
        if self.journal_evaluations and not self.recovering:
            for evaluation in result.evaluations:
                self.journal.write(evaluation.to_json())
        if result.evaluations:
            self._report_evidence(name, result.evaluations[-1])
        decisions = [replace(d, acted=False) if self.dry_run and d.changes_traffic else d
                     for d in result.decisions]
        if self.recovering:
            fresh = [d for d in decisions if d.decision_id not in self.known_decisions]
            if not fresh and decisions:
                # Journaled before the restart; its traffic change may not have landed.
                for command in result.commands:
                    if isinstance(command, SetTraffic):
                        self.recovered_traffic[command.service] = command
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
        self._carry_out(result.commands, decisions, pending)

    def reapply_recovered(self) -> Outputs:
        """After recovery from the journal: make sure each service's last journaled traffic change
        landed. A crash between journaling a decision and acting on it would otherwise leave Cloud Run
        one step behind the rollout (and the next change would look like a human's). The controller
        makes no call when the traffic is already as wanted; a real human change still stands us down."""
        out = Outputs()
        with self._lock:
            pending: deque[Event] = deque()
            for _, command in sorted(self.recovered_traffic.items()):
                failure = self._set_traffic(command)
                if failure is not None:
                    pending.append(failure)
            self.recovered_traffic.clear()
            while pending:
                self._handle(pending.popleft(), out, pending)
        return out

    # --- commands -------------------------------------------------------------------------------
    def _carry_out(self, commands: Iterable[Any], decisions: list[Decision], pending: deque[Event]) -> None:
        captured: dict[str, Any] = {}
        for command in commands:
            if isinstance(command, SetTraffic):
                failure = self._set_traffic(command)
                if failure is not None:
                    pending.append(failure)
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

    def _set_traffic(self, command: SetTraffic) -> Event | None:
        at = self._now(command)
        if not self.rate_limiter.allow(command.service, command.project, at):
            return ActionFailed(time=at, service=command.service, action="set-traffic",
                                error="rate limit on traffic changes reached (policy rate_limits)")
        try:
            result = self.traffic.apply(command)
            if result is not None and not result.changed and not self.dry_run:  # dry run: count as if acted
                self.rate_limiter.refund(command.service, command.project, at)
            return None
        except ManualChangeError as error:
            return TrafficChanged(time=at, service=command.service, canary_percent=error.observed_canary_percent,
                                  principal="", detail=str(error))
        except (ConflictError, TransientError, PermanentError, ActionError) as error:
            self.telemetry.api_error(error.api or "run", error.code or type(error).__name__)
            return ActionFailed(time=at, service=command.service, action="set-traffic",
                                error=f"{type(error).__name__}: {error}")

    def _capture(self, command: CaptureErrorLogs) -> Any:
        if self.error_logs is None:
            return None
        try:
            logs = self.error_logs.capture(command)
        except ActionError as error:  # a rollback never waits on log capture
            self.telemetry.api_error(error.api or "logging", error.code or type(error).__name__)
            return None
        record = {"type": "decision-logs", "decision_id": command.decision_id, "service": command.service,
                  "logs": logs.to_json()}
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
        policy = self._policy()
        on = event.action == "kill-switch-on"
        allowed = authorised(event.by, policy)
        if allowed:
            self.actions_enabled = not on
        reason = (f"kill switch {'on: all actions stopped' if on else 'off: actions resumed'} by {event.by}"
                  if allowed else f"refused '{event.action}' from {event.by}: not an authorised principal")
        decision = Decision(decision_id=f"kill-switch@{_iso(event.time)}", time=event.time, service="*",
                            canary="", baseline="", phase=0, phase_name="", action=KILL_SWITCH if allowed else REFUSE,
                            status_before="", status_after="", canary_percent_before=0, canary_percent_after=0,
                            reason=reason + (f" ({event.reason})" if event.reason else ""),
                            trigger=f"command:{event.action}", acted=allowed)
        self.journal.write(decision.to_json(), durable=True)
        self.telemetry.decision(decision.action)
        out.decisions.append(decision)
        if self.on_decision is not None:
            self.on_decision(decision)

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

    # --- queries --------------------------------------------------------------------------------
    def active_rollouts(self) -> list[Any]:
        with self._lock:
            return [s.rollout for s in self.states.values() if s.rollout and s.rollout.status.active]


def _iso(when: datetime) -> str:
    from daemon.core.timefmt import format_rfc3339
    return format_rfc3339(when)


def _event_record(event: Event) -> dict[str, Any]:
    from daemon.core.codec import event_to_json
    if isinstance(event, Tick):
        return {"type": "tick", "time": _iso(event.time)}
    if isinstance(event, ActionFailed):
        return {"type": "action-failed", "time": _iso(event.time), "service": event.service,
                "action": event.action, "error": event.error, "permanent": event.permanent}
    return event_to_json(event)


__all__ = ["Engine", "Outputs", "RateLimiter", "Status"]
