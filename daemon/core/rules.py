"""What one evaluated minute of evidence decides: an ordered rule table, read top to bottom.

`progress.decide_on_evidence` builds a `Context` (the facts about the rollout, its phase, the policy
and the minute's assessment, computed once), takes the first row of `RULES` whose condition holds,
and carries out its `Action` with its reason. The order is the policy's order of severity, as in
Argo Rollouts' `assessRunStatus`: roll back, stop on missing data, hold, promote, run out the
extension, wait, resume. Moving a row changes which decision wins when several apply;
tests/unit/test_rules.py walks the table so that a reordering fails a test.

Pure: no I/O and no effects. Conditions and reasons read only the `Context`, so a row can be tested
on its own; the effects (traffic, decisions, notifications) stay in `daemon.core.progress`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from daemon.core.decision import HALT, HOLD, PROMOTE, RESUME, ROLLBACK, WAIT
from daemon.core.evaluation import Assessment
from daemon.core.rollout import Rollout, Status
from policies.model import Policy
from policies.units import format_duration

UNCHANGED = "unchanged"  # nothing new to decide: the rollout stays as it is, and no record is written
FAIL = "fail"  # raise `Context.error`: see the rows "unknown-phase" and "date-out-of-range"


@dataclass(frozen=True, slots=True)
class Action:
    """What a row does. `kind` is a decision action (daemon.core.decision), UNCHANGED or FAIL."""

    kind: str
    hold_reason: str = ""  # HOLD: the rollout's hold reason; a hold already in force is not re-decided
    notify: str = ""  # HOLD: the WARNING's subject after "<service>: ", or "" to send none


@dataclass(frozen=True, slots=True)
class Context:
    """The facts the rules read, computed once per evaluated minute by `Context.of`."""

    # The criteria (sentences of the non-dry-run verdicts whose policy action is rollback / hold).
    failing: tuple[str, ...]
    warnings: tuple[str, ...]
    # Missing data.
    data_missing: bool  # no complete minute for at least evidence.max_data_gap
    gap_s: int
    max_data_gap_s: float
    on_missing_data: str
    # Holds from outside the evidence.
    gate: frozenset[str]  # blocking (P0/P1) incidents open
    paused: bool
    alerts_open: int
    alerts_hold: bool  # the alert policy acts on open alerts (not "pass", not dry-run)
    alerts_predate_canary: bool  # every open alert was already open when the canary started
    held_for: str | None  # the hold reason while held, else None
    # The phase. `error` is set when the phase or the freeze calendar cannot be read (see `of`); the
    # facts that depend on it then keep their defaults, and a FAIL row raises it before any reads them.
    error: Exception | None
    phase_name: str
    elapsed_s: float
    duration_s: float
    max_extension_s: float
    min_time_reached: bool  # elapsed >= the phase's duration
    extension_spent: bool  # ... and >= duration + max_extension
    ready: bool  # minimum time reached, no minute missing, every gating criterion passes
    frozen: str | None  # the freeze window in force, as "start–end timezone"
    on_extension_exhausted: str
    # For the reasons only.
    gating: tuple[str, ...]  # names of the phase's gating criteria
    phase_requests: int
    waiting_for: str  # what evidence the phase still lacks

    @classmethod
    def of(cls, rollout: Rollout, policy: Policy, assessment: Assessment, at: datetime,
           gate: frozenset[str] = frozenset()) -> Context:
        gap_s = rollout.missing_minutes * 60
        evidence = policy.evidence
        error: Exception | None = None
        phase_name, duration_s, max_extension_s = "", 0.0, 0.0
        min_requests = evidence.min_requests
        elapsed_s = (at - rollout.phase_started_at).total_seconds()
        ready, frozen = False, None
        # A phase the (reloaded) policy lacks, or a date whose local time the calendar cannot hold,
        # makes the lookup raise. The rules raise it at the row where the chain of ifs they replaced
        # did, so that rows above it (a rollback, a hold already in force) still win as before.
        try:
            phase = policy.phases[rollout.phase_index]
        except IndexError as exc:
            error = exc
        else:
            phase_name = policy.phase_name(rollout.phase_index)
            duration_s, max_extension_s = phase.duration or 0.0, phase.max_extension
            if phase.min_requests is not None:
                min_requests = phase.min_requests
            ready = (elapsed_s >= duration_s and rollout.missing_minutes == 0
                     and assessment.ready_to_promote(min_requests))
            try:
                window = policy.freeze.active_window(at)
            except OverflowError as exc:
                error = exc
            else:
                if window is not None:
                    frozen = f"{window.start}–{window.end} {policy.freeze.timezone}"
        return cls(
            failing=tuple(r.verdict.sentence for r in assessment.rollback_reasons()),
            warnings=tuple(r.verdict.sentence for r in assessment.hold_reasons()),
            data_missing=gap_s >= evidence.max_data_gap, gap_s=gap_s, max_data_gap_s=evidence.max_data_gap,
            on_missing_data=evidence.on_missing_data,
            gate=gate, paused=rollout.paused, alerts_open=len(rollout.open_alerts),
            alerts_hold=policy.alerts.on_open != "pass" and not policy.alerts.dry_run,
            alerts_predate_canary=rollout.open_alerts <= rollout.alerts_before_start,
            held_for=rollout.hold_reason if rollout.status is Status.HELD else None,
            error=error, phase_name=phase_name, elapsed_s=elapsed_s, duration_s=duration_s,
            max_extension_s=max_extension_s, min_time_reached=elapsed_s >= duration_s,
            extension_spent=elapsed_s >= duration_s and elapsed_s >= duration_s + max_extension_s,
            ready=ready, frozen=frozen, on_extension_exhausted=evidence.on_extension_exhausted,
            gating=tuple(r.name for r in assessment.results if r.gating),
            phase_requests=assessment.phase_requests, waiting_for=_waiting_for(assessment, min_requests),
        )


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    applies: Callable[[Context], bool]
    action: Action
    reason: Callable[[Context], str]  # the decision's reason, as recorded (unused by UNCHANGED/FAIL)


def _waiting_for(assessment: Assessment, min_requests: int) -> str:
    parts = [f"{r.name} {r.verdict.outcome.value}" for r in assessment.results
             if r.gating and not r.dry_run and r.verdict.outcome.value != "pass"]
    if assessment.phase_requests < min_requests:
        parts.append(f"{assessment.phase_requests}/{min_requests} canary requests")
    return ", ".join(parts) or "the last minute of data is incomplete"


def _no_reason(c: Context) -> str:
    return ""


def _missing_data(c: Context) -> str:
    return f"metrics missing for {format_duration(c.gap_s)} (limit {format_duration(c.max_data_gap_s)})"


def _incident(c: Context) -> str:
    return (f"blocking incident(s) open ({', '.join(sorted(c.gate)[:5])}): no promotion while a "
            "P0/P1 incident is active")


def _alert(c: Context) -> str:
    return (f"{c.alerts_open} alert(s) open"
            + (" (open since before this canary started)" if c.alerts_predate_canary else ""))


def _passed(c: Context) -> str:
    return (f"{c.phase_name} passed after {format_duration(c.elapsed_s)} "
            f"({', '.join(c.gating) or 'no gating criteria'}; {c.phase_requests} canary requests)")


def _exhausted(c: Context) -> str:
    return (f"{c.phase_name} still lacks evidence after {format_duration(c.elapsed_s)} (duration "
            f"{format_duration(c.duration_s)} + extension {format_duration(c.max_extension_s)})")


# Order matters: the first row whose condition holds decides. Rows that only make sense below another
# (the missing-data hold below the missing-data rollback and halt) say so in their place in the table.
RULES: tuple[Rule, ...] = (
    # A failing criterion beats everything, a pause and a freeze included: a bad canary never waits.
    Rule("failing-criteria", lambda c: bool(c.failing), Action(ROLLBACK), lambda c: "; ".join(c.failing)),
    Rule("missing-data-rollback", lambda c: c.data_missing and c.on_missing_data == "rollback",
         Action(ROLLBACK), _missing_data),
    Rule("missing-data-halt", lambda c: c.data_missing and c.on_missing_data != "hold",
         Action(HALT), _missing_data),
    # Today's behaviour, kept: the phase lookup raises here (below the rollbacks, above the holds).
    # Checking phases where annotations and policies enter is issue 11's work, not this table's.
    Rule("unknown-phase", lambda c: isinstance(c.error, IndexError), Action(FAIL), _no_reason),
    # Holds, most external first: an incident, an operator, an alert, no data, a warning.
    Rule("incident", lambda c: bool(c.gate), Action(HOLD, "incident"), _incident),
    Rule("paused", lambda c: c.paused, Action(HOLD, "paused"), lambda c: "paused by an operator"),
    # The alert policy's "rollback" holds here too: it is for alerts already open when the canary
    # started (alerts opened since then fail the "no alerts" criterion, a row above).
    Rule("alert", lambda c: c.alerts_open > 0 and c.alerts_hold, Action(HOLD, "alert"), _alert),
    Rule("missing-data-hold", lambda c: c.data_missing,  # on_missing_data is "hold": rows above
         Action(HOLD, "missing-data", notify="rollout held (missing-data)"),
         lambda c: f"metrics missing for {format_duration(c.gap_s)}; never promoting without evidence"),
    Rule("warning", lambda c: bool(c.warnings), Action(HOLD, "warning", notify="rollout held (warning)"),
         lambda c: "; ".join(c.warnings)),
    # Today's behaviour, kept: the freeze lookup raises here for a date the calendar cannot hold.
    Rule("date-out-of-range", lambda c: c.error is not None, Action(FAIL), _no_reason),
    # Still frozen, or no longer ready: a freeze never runs out a phase's extension.
    Rule("still-frozen", lambda c: c.held_for == "freeze" and not c.ready and c.frozen is not None,
         Action(UNCHANGED), _no_reason),
    Rule("frozen", lambda c: c.ready and c.frozen is not None, Action(HOLD, "freeze"),
         lambda c: f"ready for the next phase, but promotions are frozen ({c.frozen})"),
    Rule("promote", lambda c: c.ready, Action(PROMOTE), _passed),
    Rule("extension-exhausted-rollback",
         lambda c: c.extension_spent and c.on_extension_exhausted == "rollback",
         Action(ROLLBACK), _exhausted),
    Rule("extension-exhausted-halt", lambda c: c.extension_spent and c.on_extension_exhausted == "halt",
         Action(HALT), _exhausted),
    Rule("extension-exhausted-hold", lambda c: c.extension_spent,
         Action(HOLD, "inconclusive", notify="rollout inconclusive"), _exhausted),
    Rule("wait", lambda c: c.min_time_reached, Action(WAIT),
         lambda c: f"minimum time reached; waiting for evidence: {c.waiting_for}"),
    Rule("resume", lambda c: c.held_for is not None, Action(RESUME),  # every hold reason has cleared
         lambda c: f"hold ({c.held_for}) cleared"),
    Rule("in-phase", lambda c: True, Action(UNCHANGED), _no_reason),
)


def first_match(context: Context) -> Rule:
    """The row that decides: the first whose condition holds (the last row always does)."""
    return next(rule for rule in RULES if rule.applies(context))
