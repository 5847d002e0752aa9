"""What-if: two replays of one recording under two policies, side by side, where they differ and why.

`rollbackd replay REC --policy NEW --compare-policy OLD` calls `compare_replays(new, old, ...)`
(daemon.cli.cmd_replay); `rollbackd backtest --compare-policy` uses `decision_key` for its summary.
Decisions of each service are aligned as sequences of (time, action, traffic after) with difflib;
equal runs are shown once, differing ones side by side with, for each decision, the criteria that
drove it: the verdict, the observed value, the statistic against its threshold, and the sentence.
"""
from __future__ import annotations

import difflib
import json
from typing import Any, Sequence

from daemon.core.service_id import ServiceId, service_id_of, several_locations
from daemon.core.timefmt import format_rfc3339

OUTCOME_OF_STATUS = {"completed": "promoted", "rolled-back": "rolled_back", "halted": "halted",
                     "idle": "none"}


def decision_key(decision: Any) -> tuple[str, str, int, int, int]:
    return (format_rfc3339(decision.time), decision.action, decision.phase, decision.canary_percent_before,
            decision.canary_percent_after)


def _outcome(result: Any, service: ServiceId) -> str:
    states = result.engine.states if getattr(result, "engine", None) is not None else {}
    state = states.get(service)
    if state is None or state.rollout is None:
        return "none"
    return OUTCOME_OF_STATUS.get(state.rollout.status.value, "in_progress")


def deciding_criteria(decision: Any) -> list[Any]:
    """The criteria that produced this decision (what the policy's rules acted on)."""
    criteria = list(decision.criteria)
    if decision.action == "rollback":
        chosen = [c for c in criteria
                  if c.action == "rollback" and c.verdict.outcome.value in ("fail", "warn")]
    elif decision.action == "hold":
        chosen = [c for c in criteria if c.action == "hold" and c.verdict.outcome.value in ("fail", "warn")]
    elif decision.action == "wait":
        chosen = [c for c in criteria if c.gating and not c.dry_run and c.verdict.outcome.value != "pass"]
    elif decision.action == "promote":
        chosen = [c for c in criteria if c.gating]
    else:
        chosen = []
    return [c for c in chosen if not c.dry_run]


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.4g}"
    return str(value)


def criterion_text(c: Any) -> str:
    v = c.verdict
    limit = (v.details or {}).get("r0")
    extra = f", allowed ratio {limit:g}x" if isinstance(limit, (int, float)) else ""
    return (f"{c.name}: {v.outcome.value.upper()} (observed {_number(v.observed)}, statistic "
            f"{_number(v.statistic)} vs threshold {_number(v.threshold)}{extra}) → {c.action}")


def _criterion_json(c: Any) -> dict[str, Any]:
    data = c.to_json()
    data.pop("details", None)
    return data


def _cell(decision: Any | None) -> str:
    if decision is None:
        return "-"
    traffic = (f"{decision.canary_percent_before}%→{decision.canary_percent_after}%"
               if decision.changes_traffic else f"at {decision.canary_percent_after}%")
    return f"{format_rfc3339(decision.time)[11:16]} {decision.action} {traffic} (phase {decision.phase})"


def _pairs(new: Sequence[Any], old: Sequence[Any]) -> list[tuple[str, Any | None, Any | None]]:
    """Aligned rows: ("same" | "differs", new decision, old decision)."""
    matcher = difflib.SequenceMatcher(a=[decision_key(d) for d in new], b=[decision_key(d) for d in old],
                                      autojunk=False)
    rows: list[tuple[str, Any | None, Any | None]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows.extend(("same", new[i], old[j]) for i, j in zip(range(i1, i2), range(j1, j2)))
            continue
        left, right = list(new[i1:i2]), list(old[j1:j2])
        for k in range(max(len(left), len(right))):
            rows.append(("differs", left[k] if k < len(left) else None, right[k] if k < len(right) else None))
    rows.sort(key=lambda row: min(d.time for d in row[1:] if d is not None))
    return rows


def _why(decision: Any | None, label: str) -> list[str]:
    if decision is None:
        return [f"    {label}: no decision here"]
    lines = [f"    {label} {_cell(decision)}: {decision.reason}"]
    lines.extend(f"      - {criterion_text(c)}" for c in deciding_criteria(decision))
    return lines


def compare_replays(new_result: Any, old_result: Any, *, new_name: str, old_name: str,
                    as_json: bool = False) -> str:
    """Side-by-side comparison of two replays of the same recording (text, or JSON lines with one
    object per service)."""
    # Services by project, location and name: the region is named when the recording has several.
    services = sorted({service_id_of(d) for d in new_result.decisions}
                      | {service_id_of(d) for d in old_result.decisions})
    many = several_locations(services)
    out: list[str] = []
    if not as_json:
        out.append(f"== {new_result.recording}: NEW {new_name}  vs  OLD {old_name} ==")
    for key in services:
        service = key.label(with_location=many)
        new = [d for d in new_result.decisions if service_id_of(d) == key]
        old = [d for d in old_result.decisions if service_id_of(d) == key]
        rows = _pairs(new, old)
        differing = [(a, b) for tag, a, b in rows if tag == "differs"]
        new_outcome, old_outcome = _outcome(new_result, key), _outcome(old_result, key)
        if as_json:
            out.append(json.dumps({
                "recording": new_result.recording, "service": service, "new_policy": new_name,
                "old_policy": old_name, "same": not differing,
                "new": {"outcome": new_outcome, "decisions": [_brief(d) for d in new]},
                "old": {"outcome": old_outcome, "decisions": [_brief(d) for d in old]},
                "differences": [{"new": _detail(a), "old": _detail(b)} for a, b in differing],
            }, sort_keys=True, separators=(",", ":")))
            continue
        out.append(f"-- {service}: NEW {new_outcome}, OLD {old_outcome}"
                   + ("; same decisions" if not differing else f"; {len(differing)} decision(s) differ"))
        out.append(f"   {'':<2} {'NEW':<40} OLD")
        for tag, a, b in rows:
            mark = "*" if tag == "differs" else " "
            out.append(f"   {mark:<2} {_cell(a):<40} {_cell(b)}")
        if differing:
            out.append("   why they differ:")
            for a, b in differing:
                out.extend(_why(a, "NEW"))
                out.extend(_why(b, "OLD"))
    if as_json:
        return "".join(line + "\n" for line in out)
    if not services:
        out.append("(no decisions under either policy)")
    return "\n".join(out) + "\n"


def _brief(d: Any) -> dict[str, Any]:
    return {"time": format_rfc3339(d.time), "action": d.action, "phase": d.phase,
            "canary_percent": d.canary_percent_after}


def _detail(d: Any | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {**_brief(d), "reason": d.reason, "criteria": [_criterion_json(c) for c in deciding_criteria(d)]}
