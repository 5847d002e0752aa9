"""Size limits on every parsed event, whatever format it came in: the last step of
`daemon.core.intake.parse_message`, so native messages, audit entries and incidents get the same
rules in one place (the rules themselves are in `daemon.core.sanity`).

- Free text (a command's reason, a principal, a traffic change's detail, an incident's summary
  and policy name, an action's error) is cut to the policy's `limits.max_text_chars` with a
  visible marker: a 10 MB reason must not reach the journal, the annotations or a decision-log
  line (Cloud Logging drops entries over 256 KB), but the rest of the command is still good.
- Names (service, revision, baseline, project, location, incident id, action) and a command's
  `by` are identities: cutting one would make it name something else, or let a shortened
  principal match an authorised pattern, so one that is too long is refused (`Bad`).
- Labels: at most `MAX_LABELS`, each key and value a name.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from daemon.core import sanity
from daemon.core.events import Event
from daemon.core.intake_fields import Bad

NAME_FIELDS = frozenset({"service", "revision", "baseline", "project", "location", "incident_id", "action",
                         "by", "decision_id"})
TEXT_FIELDS = frozenset({"principal", "detail", "reason", "summary", "policy_name", "error", "severity"})
MAX_LABELS = 256  # Cloud Run allows 64 labels per service


def bounded(event: Event, ranges: sanity.Ranges) -> Event:
    """`event` with its free text capped; `Bad` when a name or the labels are too long."""
    changes: dict[str, Any] = {}
    for f in fields(event):  # type: ignore[arg-type]
        value = getattr(event, f.name)
        if not isinstance(value, str):
            if f.name in ("labels", "policy_labels"):
                _check_labels(value, f"{event.kind}.labels")
            continue
        if f.name in NAME_FIELDS:
            problem = sanity.name_problem(value)
            if problem is not None:
                raise Bad(f"{event.kind}.{f.name}: {problem}")
        elif f.name in TEXT_FIELDS:
            capped = sanity.cap_text(value, ranges.max_text_chars)
            if capped is not value:
                changes[f.name] = capped
    return replace(event, **changes) if changes else event  # type: ignore[type-var]


def _check_labels(labels: tuple[tuple[str, str], ...], path: str) -> None:
    if len(labels) > MAX_LABELS:
        raise Bad(f"{path}: {len(labels)} labels, more than the limit of {MAX_LABELS}")
    for key, value in labels:
        problem = sanity.name_problem(key) or sanity.name_problem(value)
        if problem is not None:
            raise Bad(f"{path}: label {key[:40]!r}: {problem}")
