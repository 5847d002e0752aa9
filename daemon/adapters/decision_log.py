"""Decision logs for Cloud Logging: one structured JSON line per decision on stdout.

Uses the google-cloud-logging library's `StructuredLogHandler`, the format Cloud Run lifts into
LogEntries: `severity`, `message`, `logging.googleapis.com/labels` (`service`, `action`) and the
decision record itself as the rest of `jsonPayload`. No API calls, no credentials, nothing buffered
that a stopped instance could lose.

Every line is redacted (`daemon.core.redact`: reasons quote commands and error text, which may carry a
credential) and kept under Cloud Logging's 256 KB entry limit: a line over it is dropped whole by
the logging agent, so the longest free-text fields are cut, with a marker, until the line fits
(`fit_line`).
"""
from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any, TextIO

from daemon.core.redact import might_hold_secret, redact, redact_json
from daemon.core.decision import Decision, severity_of

NOTICE = 25  # Cloud Logging's NOTICE sits between INFO and WARNING
logging.addLevelName(NOTICE, "NOTICE")
_LEVELS = {"ERROR": logging.ERROR, "WARNING": logging.WARNING, "NOTICE": NOTICE, "INFO": logging.INFO}

# Cloud Logging refuses entries over 256 KB. Budget for the message and jsonPayload fields we pass,
# leaving room for what the handler adds (severity, labels, source location, trace) and escaping.
MAX_LINE_BYTES = 200_000
# Each pass cuts every string longer than this to it; the next pass uses the next, smaller cap.
_CAPS = (65_536, 16_384, 4_096, 1_024, 256)


def _size(message: str, fields: Any) -> int:
    # ensure_ascii: an upper bound on the UTF-8 size the handler writes (6 bytes per escape ≥ UTF-8).
    return len(json.dumps({"message": message, **fields}, default=str))


_MARKER = re.compile(r"… \[truncated: (\d+) more characters\]$")


def _cut(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        if len(value) <= cap:
            return value
        earlier = _MARKER.search(value)  # cut before: count what that cut dropped too
        dropped = int(earlier.group(1)) if earlier else 0
        text = value[:earlier.start()] if earlier else value
        return text[:cap] + f"… [truncated: {max(0, len(text) - cap) + dropped} more characters]"
    if isinstance(value, dict):
        return {k: _cut(v, cap) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cut(v, cap) for v in value]
    return value


def fit_line(message: str, fields: dict[str, Any],
             max_bytes: int = MAX_LINE_BYTES) -> tuple[str, dict[str, Any]]:
    """(message, fields) whose JSON is at most `max_bytes`: long strings are cut with a marker,
    smallest cut first; if that is not enough (a huge list), the fields keep only their short
    identifying values plus a note, so the entry is never lost."""
    if _size(message, fields) <= max_bytes:
        return message, fields
    for cap in _CAPS:
        message, fields = _cut(message, cap), _cut(fields, cap)
        if _size(message, fields) <= max_bytes:
            return message, fields
    kept = {k: v for k, v in fields.items() if isinstance(v, (int, float, bool)) or
            (isinstance(v, str) and len(v) <= 256)}
    kept["truncated"] = f"record over {max_bytes} bytes: only its short fields are logged; see the journal"
    return message[:256], kept


def clean(message: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Redacted and within the size limit: what every decision-log line goes through. Strings are
    cut to the first cap before redaction, so a 10 MB reason costs no 10 MB regex scan."""
    message, fields = _cut(message, _CAPS[0]), _cut(fields, _CAPS[0])
    text = json.dumps(fields, default=str)
    if might_hold_secret(message) or might_hold_secret(text):
        message, fields = redact(message), redact_json(json.loads(text))
    return fit_line(message, fields)


class DecisionLog:
    def __init__(self, stream: TextIO | None = None, *, project: str = "") -> None:
        from google.cloud.logging_v2.handlers import StructuredLogHandler

        self.logger = logging.getLogger("rollbackd.decisions")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        handler = StructuredLogHandler(stream=stream or sys.stdout, project_id=project or None)
        self.logger.handlers = [handler]

    def _log(self, level: int, message: str, fields: dict[str, Any], labels: dict[str, str] | None) -> None:
        message, fields = clean(message, fields)
        extra: dict[str, Any] = {"json_fields": fields}
        if labels is not None:
            extra["labels"] = {k: redact(str(v))[:256] for k, v in labels.items()}
        self.logger.log(level, message, extra=extra)

    def decision(self, decision: Decision) -> None:
        self._log(_LEVELS[severity_of(decision.action)],
                  f"{decision.service}: {decision.action} — {decision.reason}",
                  decision.to_json(), {"service": decision.service, "action": decision.action,
                                       # same-named services in two regions: filter by both labels
                                       **({"location": decision.location} if decision.location else {})})

    def error(self, message: str, **fields: Any) -> None:
        self._log(logging.ERROR, message, fields, {"service": fields.get("service", "*"), "action": "error"})

    def info(self, message: str, **fields: Any) -> None:
        self._log(logging.INFO, message, fields, None)
