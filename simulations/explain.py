"""`rollbackd explain REC --decision N | --at TIME`: one decision, in words.

Replays the recording (same engine and core as `replay`, with the journal kept for the per-minute
evaluations) and prints, for the chosen decision: the rollout's state before and after, the
evidence (every criterion's verdict at that minute, with the recent trail of the ones that
decided), and the policy rule that turned that evidence into the action. Called by
`daemon.cli_tools`; pure text out, no I/O besides reading the recording.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from daemon.core.service_id import ServiceId, service_id_of, several_locations
from daemon.core.timefmt import format_rfc3339, parse_rfc3339
from daemon.ports import EngineFactory
from policies.units import format_duration
from simulations.whatif import criterion_text, deciding_criteria

# Where each criterion's action comes from in the policy file.
POLICY_SETTING = {
    "error_rate": "key_metrics.error_rate", "latency_p99": "key_metrics.latency_p99",
    "memory_utilization": "key_metrics.memory_utilization", "cpu_utilization": "key_metrics.cpu_utilization",
    "instance_count": "key_metrics.instance_count", "error_ratio": "comparison.error_rate.on_fail",
    "latency_ratio": "comparison.latency.on_fail", "memory_drift": "comparison.memory.on_fail",
    "no_alerts": "alerts.on_open",
}
TRAIL_MINUTES = 5


class ExplainError(ValueError):
    """No such decision (or an unusable --at); one line for the user."""


def explain_file(path: str, policy: Any, *, build_engine: EngineFactory, at: str | None = None,
                 number: int | None = None, service: str | None = None) -> str:
    from simulations.replay import replay_file

    result = replay_file(path, policy, build_engine=build_engine, keep_journal=True)
    # `--service` is a name, or a resource name when the recording has it in several regions.
    wanted = ServiceId.parse(service) if service and "/" in service else None
    decisions = [d for d in result.decisions if service is None or
                 (service_id_of(d) == wanted if wanted is not None else d.service == service)]
    if not decisions:
        which = f" for service {service}" if service else ""
        raise ExplainError(f"{os.path.basename(path)}: no decisions{which}")
    index = _select(decisions, at, number)
    return explain_decision(decisions, index, result.journal, policy, recording=os.path.basename(path))


def _select(decisions: list[Any], at: str | None, number: int | None) -> int:
    if number is not None:
        if not 1 <= number <= len(decisions):
            raise ExplainError(f"--decision {number}: the recording has decisions 1 to {len(decisions)}")
        return number - 1
    when = _parse_at(at or "", decisions[0].time)
    earlier = [i for i, d in enumerate(decisions) if d.time <= when]
    if not earlier:
        raise ExplainError(f"--at {at}: no decision at or before that time "
                           f"(the first is at {format_rfc3339(decisions[0].time)})")
    return earlier[-1]


def _parse_at(text: str, first: datetime) -> datetime:
    try:
        return parse_rfc3339(text)
    except ValueError:
        pass
    try:
        hours, minutes = (int(part) for part in text.split(":")[:2])
        return first.replace(hour=hours, minute=minutes, second=59, microsecond=0)
    except ValueError:
        raise ExplainError(f"--at {text!r}: expected an RFC 3339 time (2025-03-03T14:10:00Z) "
                           "or HH:MM") from None


def explain_decision(decisions: list[Any], index: int, journal: list[dict[str, Any]], policy: Any, *,
                     recording: str = "") -> str:
    d = decisions[index]
    pol = policy.for_service(d.service) if hasattr(policy, "for_service") else policy
    traffic = (f"traffic {d.canary_percent_before}% → {d.canary_percent_after}%" if d.changes_traffic
               else f"traffic stays at {d.canary_percent_after}%")
    many = several_locations(service_id_of(x) for x in decisions if x.service != "*")
    lines = [f"Decision {index + 1} of {len(decisions)} in {recording}: "
             f"{service_id_of(d).label(with_location=many)} "
             f"at {format_rfc3339(d.time)}",
             f"  {d.action.upper()} ({traffic}), triggered by {d.trigger or 'an event'}"
             + ("" if d.acted else "; NOT acted on (dry run or kill switch)"),
             f"  Reason as logged: {d.reason}", "", "State"]
    lines.append(f"  canary {d.canary} against baseline {d.baseline}")
    lines.append(f"  before: {d.status_before}, canary at {d.canary_percent_before}%")
    name = d.phase_name or "not started"
    label = name if name == f"phase {d.phase}" else f"{name} (phase {d.phase})"
    lines.append(f"  after:  {d.status_after}, {label}, canary at {d.canary_percent_after}%")
    started = _rollout_start(decisions, index)
    if started is not None:
        lines.append(f"  rollout running for {format_duration((d.time - started).total_seconds())} "
                     f"(since {format_rfc3339(started)})")
    lines += ["", _evidence_heading(d)]
    deciding = {c.name for c in deciding_criteria(d)}
    if d.criteria:
        for c in d.criteria:
            marks = ("*" if c.name in deciding else " ") + ("G" if c.gating else " ")
            dry = " [dry run]" if c.dry_run else ""
            lines.append(f"  {marks} {criterion_text(c)}{dry}")
            lines.append(f"        {c.verdict.sentence}")
        lines.append("  (* decided this; G: must PASS for this phase to promote)")
        if d.action in ("rollback", "hold", "wait"):
            lines.extend(_trail(journal, d, deciding))
    else:
        lines.append("  none: this decision was not made on metrics (it came from a deploy, a command, "
                     "an alert, a traffic change or a failure)")
    lines += ["", "Rule"]
    lines.extend(f"  {text}" for text in _rule(d, pol))
    return "\n".join(lines) + "\n"


def _rollout_start(decisions: list[Any], index: int) -> datetime | None:
    d = decisions[index]
    same = [x for x in decisions[: index + 1] if service_id_of(x) == service_id_of(d) and x.canary == d.canary]
    return same[0].time if same else None


def _evidence_heading(d: Any) -> str:
    through = f" through the minute ending {format_rfc3339(d.evidence_through)}" if d.evidence_through else ""
    return f"Evidence{through}"


def _trail(journal: list[dict[str, Any]], d: Any, names: set[str]) -> list[str]:
    """The deciding criteria over the last few evaluated minutes, from the journal."""
    if not names:
        return []
    since = d.time - timedelta(minutes=TRAIL_MINUTES)
    rows = [r for r in journal if r.get("type") == "evaluation" and r.get("service") == d.service
            and since < parse_rfc3339(r["time"]) <= d.time]
    out = []
    for name in sorted(names):
        points = []
        for record in rows:
            for c in record.get("criteria", []):
                if c.get("name") == name:
                    stat = c.get("statistic")
                    shown = stat if not isinstance(stat, float) else format(stat, ".3g")
                    shown = "n/a" if stat is None else shown
                    points.append(f"{record['time'][11:16]} {c.get('outcome')} {shown}")
        if points:
            out.append(f"  trail of {name} (time outcome statistic): " + ", ".join(points))
    return out


def _setting(c: Any) -> str:
    """The policy key that maps this criterion's verdict to its action."""
    base = POLICY_SETTING.get(c.name, c.name)
    if base.startswith("key_metrics."):
        return base + (".on_critical" if c.verdict.outcome.value == "fail" else ".on_warning")
    return base


def _rule(d: Any, policy: Any) -> list[str]:
    action = d.action
    if action == "rollback":
        failing = [c for c in deciding_criteria(d)]
        if failing:
            return [f"A criterion that maps to 'rollback' failed, and rollback outranks every other rule: "
                    + "; ".join(f"{c.name} {c.verdict.outcome.value} → {_setting(c)} = {c.action}"
                               for c in failing) + "."]
        return [f"Rolled back without a failing criterion: {d.reason} (an operator's abort, an alert with "
                f"alerts.on_open = {policy.alerts.on_open}, or evidence.on_missing_data / "
                f"evidence.on_extension_exhausted = {policy.evidence.on_extension_exhausted})."]
    if action == "promote":
        if d.trigger == "deploy" or d.canary_percent_before == 0:
            first = policy.phases[0]
            return [f"A deploy at 0% traffic starts a rollout at phase 1 ({first.percent}%) unless a freeze "
                    "window is active."]
        phase = policy.phases[max(d.phase - 2, 0)]
        minimum = phase.min_requests if phase.min_requests is not None else policy.evidence.min_requests
        return [f"Every criterion the phase lists ({', '.join(phase.criteria) or 'none'}) PASSED, "
                f"the phase's minimum time ({format_duration(phase.duration or 0)}) had passed with no "
                f"minute missing, and it had at least {minimum} canary requests (evidence.min_requests): "
                "promote to the next phase."]
    if action == "wait":
        return ["The phase's minimum time is over but not every gating criterion PASSES yet (or too few "
                f"requests): keep the traffic and wait, up to the phase's max_extension; then "
                f"evidence.on_extension_exhausted = {policy.evidence.on_extension_exhausted} applies."]
    if action == "hold":
        text = d.reason.lower()
        if "frozen" in text:
            return [f"Promotions are frozen during the policy's freeze windows ({policy.freeze.timezone}); a "
                    "freeze holds at the current phase and never blocks a rollback."]
        if "missing" in text:
            return [f"No data for evidence.max_data_gap ({format_duration(policy.evidence.max_data_gap)}): "
                    f"evidence.on_missing_data = {policy.evidence.on_missing_data}; "
                    "missing data is never healthy."]
        if "paused" in text:
            return ["An authorised operator paused the rollout; it holds until resumed."]
        if "alert" in text:
            return [f"An alert is open and alerts.on_open = {policy.alerts.on_open}."]
        if "lacks evidence" in text:
            return ["The phase ran past its duration plus max_extension without enough evidence: "
                    f"evidence.on_extension_exhausted = {policy.evidence.on_extension_exhausted}."]
        warned = deciding_criteria(d)
        if warned:
            return ["A criterion that maps to 'hold' is past its warning level: "
                    + "; ".join(f"{c.name} {c.verdict.outcome.value} → {_setting(c)} = {c.action}"
                                for c in warned)
                    + ". No promotion until it is normal again."]
        return [f"Hold: {d.reason}."]
    explanations = {
        "resume": "Every hold reason cleared (or an operator resumed): the rollout goes on.",
        "halt": "rollbackd stood down and left traffic as it is: someone else changed traffic, or an action "
                "failed permanently. It never fights a human; a person must decide.",
        "supersede": "A newer deploy of the same service replaced this rollout.",
        "refuse": "The command's principal (from Google's audit entry) is not in commands.authorized_principals "
                  "(kill_switch_principals for the kill switch); nothing was done.",
        "kill-switch": "The global kill switch changed: while on, decisions are logged but none "
                       "changes traffic.",
    }
    return [explanations.get(action, d.reason)]
