"""Capture a bad revision's recent ERROR logs from Cloud Logging, grouped into top patterns.

The engine runs a `CaptureErrorLogs` command after a rollback; `daemon.bootstrap` chooses this
adapter for the live daemon (the sandbox has its own). One ListLogEntries query, newest first:

    resource.type="cloud_run_revision" AND resource.labels.service_name="S"
    AND resource.labels.revision_name="REV" AND severity>=ERROR AND timestamp>="<now - since_s>"

Messages are normalised (UUIDs, hex, numbers, quoted strings → placeholders) so that one failure
repeated with different ids counts as one pattern. A rollback must never wait on log capture, so
faults come back as `CapturedLogs(error=...)` after at most a short retry, never as an exception.

Every message is redacted (`daemon.core.redact`: bearer tokens, `?api_key=`, passwords in URLs, keys,
JWTs...) as it is read, before grouping: the patterns and examples go to the journal, the
notification and reports, and none of them may carry a credential a bad revision logged.
"""
from __future__ import annotations

import json
import random
import re
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from google.cloud.logging_v2.types import LogEntry

from daemon.core.redact import redact
from daemon.core.commands import CaptureErrorLogs
from daemon.core.timefmt import format_rfc3339
from daemon.google_errors import ErrorHook, guarded
from daemon.ports import ActionError, CapturedLogs, Clock, LogPattern
from daemon.retry import call_with_retry

# Order matters: the specific shapes first, so a UUID's digits do not become <n>-<n>-...
_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r'"(?:[^"\\]|\\.)*"'), '"<str>"'),
    (re.compile(r"'(?:[^'\\]|\\.)*'"), "'<str>'"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|us|ns|%)?\b"), "<n>"),
)
MAX_PATTERN_CHARS = 200
MAX_EXAMPLE_CHARS = 500
# Redaction reads this much of a message (patterns and examples use less): a credential cut at
# the limit is still masked by the shape-tolerant patterns, and a 1 MB stack trace costs no more.
MAX_READ_CHARS = 2000


def normalise(message: str) -> str:
    """The pattern of one message: its first line, variable parts replaced, whitespace collapsed."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    for regex, placeholder in _NORMALISERS:
        first = regex.sub(placeholder, first)
    return " ".join(first.split())[:MAX_PATTERN_CHARS]


def message_of(entry: LogEntry) -> str:
    """The human text of an entry: textPayload, jsonPayload.message, or a request log's status line."""
    pb = LogEntry.pb(entry)
    if pb.text_payload:
        return str(pb.text_payload)
    if pb.HasField("json_payload"):
        fields = pb.json_payload.fields
        for key in ("message", "msg", "error", "textPayload"):
            if key in fields and fields[key].WhichOneof("kind") == "string_value":
                return str(fields[key].string_value)
        return json.dumps({k: _plain(v) for k, v in fields.items()}, sort_keys=True)
    if pb.HasField("http_request") and pb.http_request.status:
        return f"HTTP {pb.http_request.status} {pb.http_request.request_method} {pb.http_request.request_url}"
    if pb.HasField("proto_payload"):
        return f"<{pb.proto_payload.type_url.rsplit('/', 1)[-1]}>"
    return ""


def group(messages: list[str], top_n: int) -> tuple[LogPattern, ...]:
    """Top patterns by count; ties keep first-seen (newest-first input) order; one example each."""
    counts: OrderedDict[str, list[Any]] = OrderedDict()
    for message in messages:
        key = normalise(message)
        if key in counts:
            counts[key][0] += 1
        else:
            counts[key] = [1, message[:MAX_EXAMPLE_CHARS]]
    ranked = sorted(enumerate(counts.items()), key=lambda item: (-item[1][1][0], item[0]))
    return tuple(LogPattern(pattern=key, count=count, example=example)
                 for _, (key, (count, example)) in ranked[:top_n])


class CloudLoggingErrorLogs:
    """`daemon.ports.ErrorLogSource` on the real LoggingServiceV2Client."""

    def __init__(self, logging_client: Any, *, clock: Clock, rng: random.Random, top_n: int = 10,
                 call_timeout_s: float = 20.0, retry_budget_s: float = 5.0, max_attempts: int = 2,
                 on_error: ErrorHook | None = None, log_view: str = "") -> None:
        self._client = logging_client
        # A log view (projects/P/locations/L/buckets/B/views/V) limits what rollbackd may read to
        # Cloud Run's error lines (docs/deploy.md); '' reads the project's logs.
        self.log_view = log_view
        self._clock = clock
        self._rng = rng
        self.top_n = top_n
        self.call_timeout_s = call_timeout_s
        self.retry_budget_s = retry_budget_s
        self.max_attempts = max_attempts
        self._on_error = on_error

    def query(self, command: CaptureErrorLogs) -> str:
        since = self._clock.now() - timedelta(seconds=max(0.0, command.since_s))
        return (f'resource.type="cloud_run_revision" AND resource.labels.service_name="{_quote(command.service)}" '
                f'AND resource.labels.revision_name="{_quote(command.revision)}" AND severity>=ERROR '
                f'AND timestamp>="{format_rfc3339(since)}"')

    def capture(self, command: CaptureErrorLogs) -> CapturedLogs:
        limit = max(0, int(command.limit))
        if limit == 0:
            return CapturedLogs(revision=command.revision, total=0)
        request = {"resource_names": [self.log_view or f"projects/{command.project}"], "filter": self.query(command),
                   "order_by": "timestamp desc", "page_size": min(limit, 1000)}

        def fetch() -> list[str]:
            messages: list[str] = []
            pager = guarded("logging.ListLogEntries", lambda: self._client.list_log_entries(
                request=request, retry=None, timeout=self.call_timeout_s))
            # Later pages are fetched lazily by the pager; stop as soon as we have `limit` entries.
            iterator = iter(pager)
            while len(messages) < limit:
                entry = guarded("logging.ListLogEntries", lambda: next(iterator, None))
                if entry is None:
                    break
                messages.append(redact(message_of(entry)[:MAX_READ_CHARS]))
            return messages

        try:
            messages = call_with_retry(fetch, api="logging.ListLogEntries", clock=self._clock, rng=self._rng,
                                       budget_s=self.retry_budget_s, max_attempts=self.max_attempts,
                                       on_error=self._on_error)
        except ActionError as exc:
            return CapturedLogs(revision=command.revision, total=0, error=f"{exc.code or 'ERROR'}: {exc}")
        return CapturedLogs(revision=command.revision, total=len(messages), patterns=group(messages, self.top_n))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _plain(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return getattr(value, kind) if kind and kind != "null_value" else None
