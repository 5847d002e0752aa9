"""`rollbackd policy validate|schema|diff`: the functions daemon/cli.py calls.

Each takes its output streams and returns the exit code: 0 on success, 2 when a policy file is
invalid (every problem printed as `FILE:LINE:COL: path.to.field: message`). Never a traceback:
a missing file or a directory is reported like any other policy error.
"""
from __future__ import annotations

import json
from typing import TextIO

from policies.diff import describe_changes, schedule
from policies.loader import PolicyError, load_policy
from policies.model import Policy
from policies.units import format_percent

EXIT_OK = 0
EXIT_INVALID = 2


def summary(policy: Policy) -> str:
    """'4 phases (5%→25%→50%→100%), alpha 1%, 1 freeze window, 0 overrides'."""
    phases = [{"traffic": f"{p.percent}%"} for p in policy.phases]
    windows = len(policy.freeze.windows)
    overrides = len(policy.overrides)
    selectors = len(policy.managed)
    return (f"{len(policy.phases)} phase{'s' if len(policy.phases) != 1 else ''} ({schedule(phases)}), "
            f"alpha {format_percent(policy.comparison.alpha)}, "
            f"{windows} freeze window{'s' if windows != 1 else ''}, "
            f"{overrides} override{'s' if overrides != 1 else ''}"
            + (f", {selectors} managed selector{'s' if selectors != 1 else ''}" if selectors else ""))


def validate(paths: list[str], out: TextIO, err: TextIO) -> int:
    """Check each file; print one ok line per valid file and every error of the invalid ones."""
    if not paths:
        err.write("policy validate: name at least one policy file\n")
        return EXIT_INVALID
    code = EXIT_OK
    for path in paths:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            for issue in exc.issues:
                err.write(f"{issue}\n")
            code = EXIT_INVALID
            continue
        out.write(f"{path}: ok — {summary(policy)}\n")
    return code


def schema(out: TextIO) -> int:
    """The JSON Schema of a policy file, for editor completion (e.g. yaml-language-server)."""
    document = Policy.model_json_schema(mode="validation")
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "rollbackd policy"
    out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


def diff(old_path: str, new_path: str, out: TextIO, err: TextIO) -> int:
    """Explain in words what changed from OLD to NEW."""
    policies: list[Policy] = []
    failed = False
    for path in (old_path, new_path):
        try:
            policies.append(load_policy(path))
        except PolicyError as exc:
            for issue in exc.issues:
                err.write(f"{issue}\n")
            failed = True
    if failed:
        return EXIT_INVALID
    changes = describe_changes(policies[0], policies[1])
    if not changes:
        out.write(f"{old_path} → {new_path}: no differences\n")
        return EXIT_OK
    out.write(f"{old_path} → {new_path}: {len(changes)} difference{'s' if len(changes) != 1 else ''}\n")
    for line in changes:
        out.write(f"  {line}\n")
    return EXIT_OK
