"""The command annotation: how a person asks rollbackd to pause, resume, abort or promote a rollout
(or flip the global kill switch) by writing on the Cloud Run service itself.

`rollbackd ctl` (and the sandbox) write `rollbackd.dev/command` = `{"id", "action", "reason",
"issued"}` through `run.services.update`, annotations only. Google authenticates the writer and IAM
authorises it; the Admin Activity audit entry of that update names the principal, and only that
entry (on the sink-only audit subscription) turns into a `Command` (`daemon.core.intake_audit`).
The dispatcher then reads the service back and acts only if the same command id is on it.

Annotations are input from outside: `decode` checks every field (id shape, known action, sizes,
the issue time's sane range) and raises `intake_fields.Bad` with a reason. Pure: no clock; `encode`
takes the time it is given.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, NamedTuple

from daemon.core.commands import ANNOTATION_PREFIX
from daemon.core.events import COMMAND_ACTIONS
from daemon.core.intake_fields import Bad, Window, parse_time, sane_time, short, type_name
from daemon.core.timefmt import format_rfc3339

COMMAND_ANNOTATION = f"{ANNOTATION_PREFIX}command"
COMMAND_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)
MAX_ANNOTATION_CHARS = 4096  # a reason is capped by the policy's max_text_chars as well
MAX_REASON_CHARS = 1000


class CommandRequest(NamedTuple):
    command_id: str
    action: str
    reason: str
    issued: datetime


def encode(command_id: str, action: str, reason: str, issued: datetime) -> str:
    """The annotation's value (compact JSON, keys sorted). Raises ValueError on a bad field."""
    if not COMMAND_ID.fullmatch(command_id):
        raise ValueError(f"command id {command_id!r} is not a lower-case UUID")
    if action not in COMMAND_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"the reason is {len(reason)} characters; at most {MAX_REASON_CHARS}")
    return json.dumps({"id": command_id, "action": action, "reason": reason, "issued": format_rfc3339(issued)},
                      sort_keys=True, separators=(",", ":"))


def decode(text: Any, window: Window, where: str = "command annotation") -> CommandRequest:
    """The command an annotation value carries; `Bad` with the field's path when it is not one."""
    if not isinstance(text, str):
        raise Bad(f"{where}: expected a string, got {type_name(text)}")
    if len(text) > MAX_ANNOTATION_CHARS:
        raise Bad(f"{where}: {len(text)} characters, more than {MAX_ANNOTATION_CHARS}")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise Bad(f"{where}: not JSON") from None
    if not isinstance(body, dict):
        raise Bad(f"{where}: expected a JSON object, got {type_name(body)}")
    command_id, action, reason = body.get("id"), body.get("action"), body.get("reason", "")
    if not isinstance(command_id, str) or not COMMAND_ID.fullmatch(command_id):
        raise Bad(f"{where}.id: {short(command_id)} is not a lower-case UUID")
    if not isinstance(action, str) or action not in COMMAND_ACTIONS:
        raise Bad(f"{where}.action: unknown action {short(action)} (expected one of {', '.join(COMMAND_ACTIONS)})")
    if not isinstance(reason, str):
        raise Bad(f"{where}.reason: expected a string, got {type_name(reason)}")
    if len(reason) > MAX_REASON_CHARS:
        raise Bad(f"{where}.reason: {len(reason)} characters, more than {MAX_REASON_CHARS}")
    if "issued" not in body:
        raise Bad(f"{where}.issued: missing")
    issued = sane_time(parse_time(body["issued"], f"{where}.issued"), window, f"{where}.issued")
    return CommandRequest(command_id, action, reason, issued)


def command_id_on(annotations: Any) -> str | None:
    """The id of the command an annotation map carries (unchecked beyond its shape), or None."""
    if not hasattr(annotations, "get"):
        return None
    text = annotations.get(COMMAND_ANNOTATION)
    if not isinstance(text, str) or len(text) > MAX_ANNOTATION_CHARS:
        return None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return None
    command_id = body.get("id") if isinstance(body, dict) else None
    return command_id if isinstance(command_id, str) and COMMAND_ID.fullmatch(command_id) else None


__all__ = ["COMMAND_ANNOTATION", "CommandRequest", "command_id_on", "decode", "encode"]
