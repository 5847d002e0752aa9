"""Explain in words what changed between two policies (`rollbackd policy diff OLD NEW`).

Called by `policies.cli.diff`, and usable by `replay --compare-policy` to head its report. Works on
validated `Policy` objects, compares their JSON dumps (so every value is already written the way
an SRE writes it: '10m', '500ms', '0.5%') and turns each difference into one sentence, e.g.
"phase 1 duration 10m → 5m" or "added freeze window Fri 17:00–Mon 08:00" or "added managed selector service payments-*".
"""
from __future__ import annotations

from typing import Any

from policies.model import Policy

ARROW = "→"

# Human names for fields, by path (the rest fall back to their key with spaces).
_LABELS: dict[tuple[str, ...], str] = {
    ("key_metrics", "error_rate"): "error rate",
    ("key_metrics", "latency_p99"): "p99 latency",
    ("key_metrics", "memory_utilization"): "memory utilisation",
    ("key_metrics", "cpu_utilization"): "CPU utilisation",
    ("key_metrics", "instance_count"): "instance count",
    ("comparison", "alpha"): "alpha",
    ("comparison", "error_rate"): "error-rate comparison",
    ("comparison", "latency"): "latency comparison",
    ("comparison", "memory"): "memory drift comparison",
    ("evidence", "min_requests"): "minimum requests per phase",
    ("evidence", "late_data_grace"): "late-data grace",
    ("evidence", "max_data_gap"): "maximum data gap",
    ("evidence", "on_missing_data"): "on missing data",
    ("evidence", "on_extension_exhausted"): "when a phase's extension runs out",
    ("alerts",): "alerts",
    ("rollback", "capture_error_logs"): "error-log lines captured on rollback",
    ("rollback", "delete_revision"): "delete the canary revision on rollback",
    ("rate_limits", "max_actions_per_service_per_hour"): "actions per service per hour",
    ("rate_limits", "max_actions_per_project_per_hour"): "actions per project per hour",
    ("freeze", "timezone"): "freeze time zone",
    ("limits", "max_future_skew"): "input limit: clock skew into the future",
    ("limits", "max_rollout_age"): "input limit: rollout age",
    ("limits", "max_metrics_interval"): "input limit: metrics interval",
    ("limits", "max_text_chars"): "input limit: free-text characters",
}
_FIELD_WORDS = {
    "normal": "normal threshold", "warning": "warning threshold", "critical": "critical threshold",
    "max_ratio": "ratio limit", "slow_above": "slow-request threshold", "on_fail": "on failure",
    "allowed_increase": "allowed increase", "decision_threshold": "decision threshold",
    "dry_run": "dry-run", "on_open": "on open alert", "scope": "scope",
}
_KEY_METRIC_CRITERION = {"error_rate": "error_rate", "latency_p99": "latency_p99",
                         "memory_utilization": "memory_utilization", "cpu_utilization": "cpu_utilization",
                         "instance_count": "instance_count"}


def describe_changes(old: Policy, new: Policy) -> list[str]:
    """One sentence per difference, in policy order; empty when the policies are the same."""
    a = old.model_dump(mode="json")
    b = new.model_dump(mode="json")
    lines: list[str] = []
    if a["name"] != b["name"]:
        lines.append(f"name '{a['name']}' {ARROW} '{b['name']}'")
    lines += _phases(a["phases"], b["phases"])
    for key in ("key_metrics", "comparison", "evidence", "alerts"):
        lines += _fields((key,), a[key], b[key], new)
    lines += _freeze(a["freeze"], b["freeze"])
    lines += _list_change("authorized principal", a["commands"]["authorized_principals"],
                          b["commands"]["authorized_principals"])
    for key in ("rollback", "rate_limits", "limits"):
        lines += _fields((key,), a[key], b[key], new)
    lines += _list_change("managed selector", [_selector(m) for m in a["managed"]],
                          [_selector(m) for m in b["managed"]])
    lines += _overrides(a["overrides"], b["overrides"])
    return lines


def schedule(phases: list[dict[str, Any]]) -> str:
    return ARROW.join(str(p["traffic"]) for p in phases)


def _phases(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    lines = []
    if schedule(old) != schedule(new):
        lines.append(f"traffic schedule {schedule(old)} {ARROW} {schedule(new)}")
    for index, (a, b) in enumerate(zip(old, new)):
        label = f"phase {index + 1}"
        for key in ("name", "traffic", "duration", "max_extension", "min_requests"):
            if a.get(key) != b.get(key):
                field = key.replace("_", " ")
                lines.append(f"{label} {field} {_value(a.get(key))} {ARROW} {_value(b.get(key))}")
        added = [c for c in b["criteria"] if c not in a["criteria"]]
        removed = [c for c in a["criteria"] if c not in b["criteria"]]
        if added:
            lines.append(f"{label} now requires {', '.join(added)}")
        if removed:
            lines.append(f"{label} no longer requires {', '.join(removed)}")
    for index in range(len(old), len(new)):
        phase = new[index]
        lines.append(f"added phase {index + 1}: {phase['traffic']}" +
                     (f" for {phase['duration']}" if phase.get("duration") else ""))
    for index in range(len(new), len(old)):
        lines.append(f"removed phase {index + 1} ({old[index]['traffic']})")
    return lines


def _fields(path: tuple[str, ...], old: Any, new: Any, policy: Policy) -> list[str]:
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in list(old) + [k for k in new if k not in old]:
            lines += _fields(path + (key,), old.get(key), new.get(key), policy)
        return lines
    if isinstance(new, dict) and old is None:
        return [f"added {_label(path)}: {_summary(new)}"]
    if isinstance(old, dict) and new is None:
        return [f"removed {_label(path)}"]
    sentence = f"{_label(path)} {_value(old, path)} {ARROW} {_value(new, path)}"
    if len(path) == 3 and path[0] == "key_metrics" and path[2] in ("normal", "warning", "critical"):
        users = [str(i + 1) for i, p in enumerate(policy.phases)
                 if _KEY_METRIC_CRITERION.get(path[1]) in p.criteria]
        if users:
            sentence += f" (criterion {path[1]} of phase{'s' if len(users) > 1 else ''} {', '.join(users)})"
    return [sentence]


def _label(path: tuple[str, ...]) -> str:
    if path in _LABELS:
        return _LABELS[path]
    if len(path) > 1 and path[:-1] in _LABELS:
        return f"{_LABELS[path[:-1]]} {_FIELD_WORDS.get(path[-1], path[-1].replace('_', ' '))}"
    return " ".join(part.replace("_", " ") for part in path)


def _value(value: Any, path: tuple[str, ...] = ()) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return ("on" if value else "off") if path[-1:] in (("dry_run",), ("enabled",)) else str(value).lower()
    if isinstance(value, float) and path[-1:] == ("max_ratio",):
        return f"{value:g}×"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def _summary(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {_value(v, (k,))}" for k, v in mapping.items())


def _window(window: dict[str, Any]) -> str:
    return f"{window['start']}–{window['end']}"


def _freeze(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    if old["timezone"] != new["timezone"]:
        lines.append(f"freeze time zone {old['timezone']} {ARROW} {new['timezone']}")
    old_windows = {_window(w): w for w in old["windows"]}
    new_windows = {_window(w): w for w in new["windows"]}
    for key, window in new_windows.items():
        if key not in old_windows:
            reason = f" ({window['reason']})" if window["reason"] else ""
            lines.append(f"added freeze window {key}{reason}")
        elif old_windows[key]["reason"] != window["reason"]:
            before = old_windows[key]["reason"]
            lines.append(f"freeze window {key} reason '{before}' {ARROW} '{window['reason']}'")
    for key in old_windows:
        if key not in new_windows:
            lines.append(f"removed freeze window {key}")
    return lines


def _list_change(noun: str, old: list[Any], new: list[Any]) -> list[str]:
    return ([f"added {noun} {item}" for item in new if item not in old] +
            [f"removed {noun} {item}" for item in old if item not in new])


def _selector(match: dict[str, Any]) -> str:
    parts = []
    if match.get("service") is not None:
        parts.append(f"service {match['service']}")
    if match.get("labels"):
        parts.append("labels " + ", ".join(f"{k}={v}" for k, v in sorted(match["labels"].items())))
    return " and ".join(parts)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _overrides(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    old_by = {_selector(o["match"]): o for o in old}
    new_by = {_selector(o["match"]): o for o in new}
    lines = []
    for key, override in new_by.items():
        if key not in old_by:
            lines.append(f"added override for {key}: " + ", ".join(
                f"{path} {_value(v)}" for path, v in _flatten(override["policy"]).items()))
            continue
        before, after = _flatten(old_by[key]["policy"]), _flatten(override["policy"])
        for path in list(before) + [p for p in after if p not in before]:
            if path not in after:
                lines.append(f"override for {key} no longer sets {path}")
            elif path not in before:
                lines.append(f"override for {key} now sets {path} {_value(after[path])}")
            elif before[path] != after[path]:
                change = f"{_value(before[path])} {ARROW} {_value(after[path])}"
                lines.append(f"override for {key}: {path} {change}")
    for key in old_by:
        if key not in new_by:
            lines.append(f"removed override for {key}")
    return lines
