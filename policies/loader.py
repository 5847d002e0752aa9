"""Load a policy YAML file into a validated `Policy`, or fail with every problem and its line.

Called by the daemon (start-up and reload), `replay`/`backtest` (`--policy`), and
`policies.cli` (`rollbackd policy validate|diff`). Every error is a `PolicyIssue` with the file,
the 1-based line and column of the YAML node it is about, the dotted field path and a message;
all of them are collected and raised together as one `PolicyError`. Nothing else escapes.

Overrides are checked the way they are used: each override's `policy` fragment is merged over
the base and the result validated, so an error inside a fragment points at the fragment's line.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from policies import model
from policies.model import OverrideMatch, Policy, PolicyBody, ambiguity_message
from policies.units import format_percent, parse_duration, parse_percent
from policies.yamldoc import Document, Path, Position, YamlSyntaxError, parse

# Errors the Policy model raises that the loader reports itself, more completely and precisely.
_LOADER_CHECKED = frozenset({"ambiguous_overrides", "override_invalid"})
_NOT_IN_FRAGMENT = ("name", "version", "managed", "limits", "overrides")


@dataclass(frozen=True, order=True)
class PolicyIssue:
    file: str
    line: int
    col: int
    path: str  # 'phases.1.traffic'; empty for problems with the file itself
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}:"
        return f"{where} {self.path}: {self.message}" if self.path else f"{where} {self.message}"


class PolicyError(Exception):
    """A policy could not be loaded. `issues` lists every problem found, in file order."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = sorted(set(issues))
        super().__init__("\n".join(str(issue) for issue in self.issues))


def load_policy(path: str | FsPath) -> Policy:
    name = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([PolicyIssue(name, 1, 1, "", f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:  # missing, a directory, no permission, ...
        reason = exc.strerror or exc.__class__.__name__
        raise PolicyError([PolicyIssue(name, 1, 1, "", f"cannot read the file: {reason}")]) from None
    return load_policy_text(text, name)


def load_policy_text(text: str, filename: str = "<policy>") -> Policy:
    try:
        doc = parse(text)
    except YamlSyntaxError as exc:
        problem = exc.problem
        raise PolicyError([PolicyIssue(filename, problem.position.line, problem.position.col,
                                       "", problem.message)]) from None
    issues = [_issue(filename, p.position, p.path, p.message) for p in doc.problems]
    if not isinstance(doc.data, dict):
        found = "an empty file" if doc.data is None else _kind(doc.data)
        issues.append(PolicyIssue(filename, 1, 1, "", f"a policy must be a mapping of keys "
                                  f"(phases:, key_metrics:, ...), found {found}"))
        raise PolicyError(issues)
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(doc.data)
    except ValidationError as exc:
        model_issues = [e for e in exc.errors() if e["type"] not in _LOADER_CHECKED]
        issues += [_from_error(filename, doc, error, ()) for error in model_issues]
        base_errors = {(_full_loc(e), e["msg"]) for e in exc.errors()}
        field_errors = [tuple(e["loc"]) for e in exc.errors() if "at" not in (e.get("ctx") or {})]
        issues += _partial_checks(filename, doc, field_errors)
        override_issues = _check_overrides(filename, doc, base_errors)
        if not override_issues:  # keep the model's own override complaint if ours found nothing
            issues += [_from_error(filename, doc, e, ()) for e in exc.errors()
                       if e["type"] in _LOADER_CHECKED]
        issues += override_issues
    if issues or policy is None:
        raise PolicyError(issues)
    return policy


def _check_overrides(filename: str, doc: Document, base_errors: set[tuple[Path, str]]) -> list[PolicyIssue]:
    """Ambiguous selectors, and each fragment merged over the base and validated."""
    overrides = doc.data.get("overrides")
    if not isinstance(overrides, list):
        return []
    issues: list[PolicyIssue] = []
    matches: list[tuple[int, OverrideMatch]] = []
    for index, item in enumerate(overrides):
        if not isinstance(item, dict):
            continue
        try:
            matches.append((index, OverrideMatch.model_validate(item.get("match"))))
        except ValidationError:
            pass  # already reported by the main validation
    for j, (second_index, second) in enumerate(matches):
        for first_index, first in matches[:j]:
            if first.may_overlap(second):
                path = ("overrides", second_index, "match")
                issues.append(_issue(filename, doc.locate(path)[1], path,
                                     ambiguity_message(first_index, second_index)))
    base = {k: v for k, v in doc.data.items() if k not in _NOT_IN_FRAGMENT}
    for index, item in enumerate(overrides):
        fragment = item.get("policy") if isinstance(item, dict) else None
        if not isinstance(fragment, dict):
            continue
        try:
            PolicyBody.model_validate(model._deep_merge(base, fragment))
        except ValidationError as exc:
            prefix: Path = ("overrides", index, "policy")
            for error in exc.errors():
                loc = _full_loc(error)
                if (loc, error["msg"]) in base_errors:
                    continue  # a problem of the base policy, reported there
                issues.append(_from_error(filename, doc, error, prefix))
    return issues


def _partial_checks(filename: str, doc: Document, failed: list[Path]) -> list[PolicyIssue]:
    """Order checks the models skip when a sibling field is already invalid (pydantic runs a
    validator over a list or model only once all its parts are valid), so that a file with a
    bad duration *and* phases out of order gets both errors at once."""
    issues: list[PolicyIssue] = []
    phases = doc.data.get("phases")
    if isinstance(phases, list) and any(loc[:1] == ("phases",) and len(loc) > 2 for loc in failed):
        previous: tuple[int, float] | None = None
        for index, phase in enumerate(phases):
            traffic = _parsed(parse_percent, phase.get("traffic") if isinstance(phase, dict) else None)
            if traffic is None or not 0.01 <= traffic <= 1.0:
                previous = None
                continue
            if previous is not None and traffic <= previous[1]:
                path = ("phases", index, "traffic")
                issues.append(_issue(filename, doc.locate(path)[1], path,
                                     f"phases must ascend: {format_percent(traffic)} follows "
                                     f"{format_percent(previous[1])}"))
            previous = (index, traffic)
    metrics = doc.data.get("key_metrics")
    for name, parser in _LEVEL_PARSERS.items():
        levels = metrics.get(name) if isinstance(metrics, dict) else None
        prefix = ("key_metrics", name)
        if not isinstance(levels, dict) or not any(loc[:2] == prefix and len(loc) > 2 for loc in failed):
            continue
        warning, critical = (_parsed(parser, levels.get(k)) for k in ("warning", "critical"))
        if warning is not None and critical is not None and warning > critical:
            path = prefix + ("warning",)
            issues.append(_issue(filename, doc.locate(path)[1], path,
                                 f"warning level {levels['warning']} is above the critical level "
                                 f"{levels['critical']}"))
    return issues


_LEVEL_PARSERS = {"error_rate": parse_percent, "latency_p99": parse_duration,
                  "memory_utilization": parse_percent, "cpu_utilization": parse_percent}


def _parsed(parser: Any, value: Any) -> float | None:
    try:
        return float(parser(value))
    except ValueError:
        return None


def _full_loc(error: Any) -> Path:
    """The pydantic location plus the precise field a model validator named (`at`)."""
    at = (error.get("ctx") or {}).get("at", ())
    return tuple(error["loc"]) + tuple(at)


def _from_error(filename: str, doc: Document, error: Any, prefix: Path) -> PolicyIssue:
    loc = _data_path(doc, prefix, _full_loc(error))
    kind = error["type"]
    _, position = doc.locate(loc, key=kind == "extra_forbidden")
    return _issue(filename, position, loc, _message(error, loc))


def _data_path(doc: Document, prefix: Path, loc: Path) -> Path:
    """Map a pydantic loc onto the document: drop union/function tags pydantic inserts, and
    attribute errors from an override merge to the fragment when it sets that key."""
    out: Path = prefix
    node: Any = doc.data
    for part in prefix:
        node = node[part] if _has(node, part) else None
    for part in loc:
        if _has(node, part):
            node = node[part]
            out += (part,)
        elif isinstance(part, str) and (part[:1].isupper() or "[" in part):
            continue  # e.g. 'UtilizationLevels' or 'function-after[...]' from a union
        else:
            node = None
            out += (part,)
    return out


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    if isinstance(node, list):
        return isinstance(part, int) and 0 <= part < len(node)
    return False


def _message(error: Any, loc: Path) -> str:
    kind, msg = error["type"], str(error["msg"])
    if kind == "extra_forbidden":
        key = loc[-1] if loc else "?"
        if key in _NOT_IN_FRAGMENT and loc[:1] == ("overrides",):
            return f"'{key}' is top-level only; an override cannot change it"
        hint = difflib.get_close_matches(str(key), [n for n in _field_names() if n != key], n=1)
        return f"unknown key '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    if kind == "missing":
        return f"required key '{loc[-1]}' is missing" if loc else "required key is missing"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, found {_kind(error.get('input'))}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, found {_kind(error.get('input'))}"
    for noise in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(noise)
    return msg


def _field_names() -> list[str]:
    names: set[str] = set()
    for value in vars(model).values():
        if isinstance(value, type) and issubclass(value, BaseModel):
            names.update(value.model_fields)
    return sorted(names)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return f"the text '{value}'" if isinstance(value, str) and len(value) < 60 else "text"


def _issue(filename: str, position: Position, path: Path, message: str) -> PolicyIssue:
    return PolicyIssue(filename, position.line, position.col, ".".join(str(p) for p in path), message)
