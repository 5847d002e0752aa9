"""Whose traffic is this? The one rule that tells rollbackd's own traffic split from a human's.

Called by every traffic controller before it writes: the live one on Cloud Run
(`actions.cloud_run`) and the sandbox's simulated Cloud Run (`simulations.sandbox_cloud`). Two
versions of this rule drifted apart once (the sandbox let a redeploy take over the superseded
canary's traffic, the live controller called it a human's change and stood down), so there is one,
here, pure, and both call it.

Also the matching rule for the durable record: before an etag-guarded write, the `rollbackd.dev/*`
annotations on the service must be what the deciding engine believed (or already what it wants).
Anything else means another writer (a replica, a human) changed the rollout since: re-read and
re-decide, never overwrite.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping

from daemon.core.commands import ANNOTATION_PREFIX, DESCRIPTIVE_ANNOTATIONS, SetTraffic


class Split(str, enum.Enum):
    AS_WANTED = "as-wanted"  # nothing to write
    OURS = "ours"  # what rollbackd last set (or a share it may take away): write the new split
    HUMAN = "human"  # someone else moved traffic: stand down, never fight a human


@dataclass(frozen=True, slots=True)
class SplitVerdict:
    split: Split
    observed_canary_percent: int
    reason: str = ""


def wanted_split(command: SetTraffic) -> dict[str, int]:
    """{revision: percent} the command asks for, 0% entries dropped."""
    split = {command.canary: command.canary_percent}
    if command.baseline != command.canary:
        split[command.baseline] = split.get(command.baseline, 0) + 100 - command.canary_percent
    else:
        split[command.canary] = 100
    return {revision: percent for revision, percent in split.items() if percent}


def classify_split(observed: Mapping[str, int], command: SetTraffic) -> SplitVerdict:
    """Compare the service's traffic now (`observed`, {revision: percent}) with what the core
    believes it set (`command.expected_canary_percent`) and what it wants (`command.canary_percent`).

    Ours when the canary's share is the expected one or already the target, and every other
    revision serving traffic is the baseline or one this rollout may take traffic from (the canary
    of the rollout it superseded, `command.released`). Anything else is a human's change."""
    serving = {revision: percent for revision, percent in observed.items() if percent}
    canary_now = serving.get(command.canary, 0)
    if serving == wanted_split(command):
        return SplitVerdict(Split.AS_WANTED, canary_now)
    if command.expected_canary_percent is None:
        return SplitVerdict(Split.OURS, canary_now)
    allowed = {command.canary, command.baseline, *command.released}
    elsewhere = sorted(revision for revision in serving if revision not in allowed)
    if canary_now in (command.expected_canary_percent, command.canary_percent) and not elsewhere:
        return SplitVerdict(Split.OURS, canary_now)
    reason = (f"{command.service}: canary {command.canary} has {canary_now}% (rollbackd had set "
              f"{command.expected_canary_percent}%)" + (f", traffic on {', '.join(elsewhere)}" if elsewhere else "")
              + ": changed by someone else; standing down")
    return SplitVerdict(Split.HUMAN, canary_now, reason)


def durable(annotations: Mapping[str, str], keys: frozenset[str]) -> dict[str, str]:
    """The part of the `rollbackd.dev/*` annotations among `keys` that is state, not wording (see
    `DESCRIPTIVE_ANNOTATIONS`). Empty values count as absent."""
    return {key: value for key, value in annotations.items()
            if key in keys and key.startswith(ANNOTATION_PREFIX) and key not in DESCRIPTIVE_ANNOTATIONS and value}


def record_changed_by_others(current: Mapping[str, str], expected: Mapping[str, str] | None,
                             wanted: Mapping[str, str]) -> bool:
    """True when the service's durable record is neither what the deciding engine believed nor
    already what it wants: someone else changed the rollout since that engine last read it.
    Only the keys rollbackd writes count (an annotation a human adds under the prefix does not)."""
    if expected is None:
        return False
    keys = frozenset(expected) | frozenset(wanted)
    now = durable(current, keys)
    return now != durable(expected, keys) and now != durable(wanted, keys)


def record_matches(current: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """The service already carries the record (wording aside; an empty value means absent)."""
    return all(current.get(key, "") == value for key, value in wanted.items() if key not in DESCRIPTIVE_ANNOTATIONS)


def merged_annotations(current: Mapping[str, str], record: Mapping[str, str]) -> dict[str, str]:
    """The service's annotations with the record written over them; empty values remove a key."""
    merged = dict(current)
    for key, value in record.items():
        if value:
            merged[key] = value
        else:
            merged.pop(key, None)
    return merged
