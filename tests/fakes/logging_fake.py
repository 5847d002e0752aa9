"""An in-process gRPC fake of Cloud Logging v2 (LoggingServiceV2: ListLogEntries, WriteLogEntries).

The error-log capture adapter (`actions.error_logs`) is tested with the real
`LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=grpc.insecure_channel(addr)))`
against it. It understands enough of the Logging query language for rollbackd's queries:
comparisons (`=`, `!=`, `>=`, `<=`, `>`, `<`, `:`) on `resource.type`, `resource.labels.*`,
`labels.*`, `logName`, `severity` (ranked, by name or number), `timestamp` (RFC 3339),
`textPayload`, `jsonPayload.*` and `insertId`, joined by AND (or juxtaposition). Anything else
(OR, NOT, parentheses) is answered INVALID_ARGUMENT, as a query the real API would read differently
must not pass silently. `order_by` "timestamp asc|desc", paging with page_size/page_token, faults
and a request log as in the other fakes.
"""
from __future__ import annotations

import re
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import grpc
from google.api import monitored_resource_pb2
from google.cloud.logging_v2.types import log_entry as log_entry_types
from google.cloud.logging_v2.types import logging as logging_types
from google.logging.type import http_request_pb2, log_severity_pb2
from google.protobuf import struct_pb2, timestamp_pb2

from daemon.core.timefmt import parse_rfc3339
from tests.fakes.wire import FaultPlan, RequestLog, serve, unary

LogEntry = log_entry_types.LogEntry
SEVERITY_RANK: dict[str, int] = {name: log_severity_pb2.LogSeverity.Value(name)
                                 for name in log_severity_pb2.LogSeverity.keys()}
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>>=|<=|!=|=|>|<|:)|(?P<word>[^\s=<>!:"()]+)|(?P<bad>\S))')


class FilterError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        kind = m.lastgroup or "bad"
        value = m.group(kind)
        if kind == "str":
            value = bytes(value[1:-1], "utf-8").decode("unicode_escape")
        out.append((kind, value))
    return out


def parse_filter(text: str) -> list[tuple[str, str, str]]:
    """`a="x" AND b>=y c:z` → [(field, op, value), ...]; raises FilterError for what we don't model."""
    toks = _tokens(text)
    clauses: list[tuple[str, str, str]] = []
    i = 0
    while i < len(toks):
        kind, value = toks[i]
        if kind == "word" and value == "AND":
            i += 1
            continue
        if kind == "bad" or (kind == "word" and value in ("OR", "NOT")):
            raise FilterError(f"unsupported filter syntax near {value!r}")
        if i + 2 >= len(toks):
            raise FilterError("incomplete comparison")
        if kind != "word" or toks[i + 1][0] != "op" or toks[i + 2][0] not in ("word", "str"):
            raise FilterError(f"expected FIELD OP VALUE near {value!r}")
        clauses.append((value, toks[i + 1][1], toks[i + 2][1]))
        i += 3
    return clauses


def _field(entry: LogEntry, path: str) -> Any:
    pb = LogEntry.pb(entry)
    if path == "resource.type":
        return pb.resource.type
    if path.startswith(("resource.labels.", "resource.label.")):
        return pb.resource.labels.get(path.split(".", 2)[2], "")
    if path.startswith("labels."):
        return pb.labels.get(path.split(".", 1)[1], "")
    if path in ("logName", "log_name"):
        return pb.log_name
    if path == "severity":
        return pb.severity
    if path == "timestamp":
        return pb.timestamp.ToDatetime(tzinfo=timezone.utc)
    if path == "textPayload":
        return pb.text_payload
    if path == "insertId":
        return pb.insert_id
    if path.startswith("jsonPayload."):
        value: Any = pb.json_payload
        for part in path.split(".")[1:]:
            if not isinstance(value, struct_pb2.Struct) or part not in value.fields:
                return ""
            field = value.fields[part]
            kind = field.WhichOneof("kind")
            value = field.struct_value if kind == "struct_value" else getattr(field, kind or "null_value")
        return value if isinstance(value, (str, float, bool)) else str(value)
    raise FilterError(f"unsupported field {path}")


def _coerce(path: str, value: str) -> Any:
    if path == "severity":
        if value.upper() in SEVERITY_RANK:
            return SEVERITY_RANK[value.upper()]
        try:
            return int(value)
        except ValueError:
            raise FilterError(f"bad severity {value}") from None
    if path == "timestamp":
        try:
            return parse_rfc3339(value)
        except ValueError:
            raise FilterError(f"bad timestamp {value}") from None
    return value


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
    ":": lambda a, b: str(b).lower() in str(a).lower(),
}


def matches(entry: LogEntry, clauses: list[tuple[str, str, str]]) -> bool:
    for path, op, raw in clauses:
        left = _field(entry, path)
        right = _coerce(path, raw)
        if isinstance(left, float) and not isinstance(right, float):
            try:
                right = float(right)
            except ValueError:
                return False
        if not _OPS[op](left, right):
            return False
    return True


class LoggingFake:
    """Stored entries plus the gRPC handlers."""

    def __init__(self) -> None:
        self.requests = RequestLog()
        self.faults = FaultPlan()
        self._lock = threading.Lock()
        self._entries: list[LogEntry] = []
        self._counter = 0
        self._server: grpc.Server | None = None
        self.address = ""  # host:port once started

    def start(self) -> str:
        name = "google.logging.v2.LoggingServiceV2"
        self._server, port = serve({name: dict([
            unary(name, "ListLogEntries", self._list, logging_types.ListLogEntriesRequest,
                  logging_types.ListLogEntriesResponse),
            unary(name, "WriteLogEntries", self._write, logging_types.WriteLogEntriesRequest,
                  logging_types.WriteLogEntriesResponse),
        ])})
        self.address = f"127.0.0.1:{port}"
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    # ------------------------------------------------------------------ helpers
    def add_entry(self, *, project: str, service: str, revision: str, severity: str, message: str,
                  timestamp: datetime, location: str = "europe-west1", json_message: bool = False,
                  http_status: int | None = None, http_url: str = "",
                  log: str = "run.googleapis.com%2Fstderr") -> None:
        """One Cloud Run log line: stderr text, a structured JSON line, or a request log entry."""
        entry = log_entry_types.LogEntry(
            log_name=f"projects/{project}/logs/{log}",
            resource=monitored_resource_pb2.MonitoredResource(type="cloud_run_revision", labels={
                "project_id": project, "service_name": service, "revision_name": revision,
                "location": location, "configuration_name": service}),
            severity=SEVERITY_RANK[severity.upper()])
        pb = LogEntry.pb(entry)
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(timestamp)
        pb.timestamp.CopyFrom(ts)
        if http_status is not None:
            pb.http_request.CopyFrom(http_request_pb2.HttpRequest(
                request_method="GET", request_url=http_url or "/", status=http_status))
            pb.log_name = f"projects/{project}/logs/run.googleapis.com%2Frequests"
        elif json_message:
            pb.json_payload.update({"message": message, "severity": severity.upper()})
        else:
            pb.text_payload = message
        self._store(entry)

    def count(self) -> int:
        with self._lock:
            return len(self._entries)

    def _store(self, entry: LogEntry) -> None:
        with self._lock:
            self._counter += 1
            pb = LogEntry.pb(entry)
            if not pb.insert_id:
                pb.insert_id = f"i{self._counter:08d}"
            self._entries.append(entry)

    # ------------------------------------------------------------------ handlers
    def _list(self, request: logging_types.ListLogEntriesRequest,
              context: grpc.ServicerContext) -> logging_types.ListLogEntriesResponse:
        self.requests.add("ListLogEntries", request)
        self.faults.apply("ListLogEntries", context)
        if not request.resource_names:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "resource_names is required")
        try:
            clauses = parse_filter(request.filter)
            order = (request.order_by or "timestamp asc").strip().lower()
            if order not in ("timestamp asc", "timestamp desc", "timestamp"):
                raise FilterError(f"unsupported order_by {request.order_by}")
            with self._lock:
                entries = list(self._entries)
            projects = {n.split("/")[1] for n in request.resource_names if n.startswith("projects/")}
            selected = [e for e in entries if LogEntry.pb(e).log_name.split("/")[1] in projects
                        and matches(e, clauses)]
        except FilterError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid filter: {exc}")
        selected.sort(key=lambda e: (LogEntry.pb(e).timestamp.ToNanoseconds(), LogEntry.pb(e).insert_id),
                      reverse=order.endswith("desc"))
        try:
            start = int(request.page_token) if request.page_token else 0
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad page token")
        size = min(request.page_size if request.page_size > 0 else 50, 1000)
        end = start + size
        return logging_types.ListLogEntriesResponse(
            entries=selected[start:end], next_page_token=str(end) if end < len(selected) else "")

    def _write(self, request: logging_types.WriteLogEntriesRequest,
               context: grpc.ServicerContext) -> logging_types.WriteLogEntriesResponse:
        self.requests.add("WriteLogEntries", request)
        self.faults.apply("WriteLogEntries", context)
        for entry in request.entries:
            pb = LogEntry.pb(entry)
            # Entries inherit the request's log name, resource and labels when they lack their own.
            if not pb.log_name:
                pb.log_name = request.log_name
            if not pb.HasField("resource") and request.resource:
                pb.resource.CopyFrom(type(pb.resource)(type=request.resource.type,
                                                       labels=dict(request.resource.labels)))
            for key, value in dict(request.labels).items():
                if key not in pb.labels:
                    pb.labels[key] = value
            if not pb.log_name or "/" not in pb.log_name:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "log_name is required")
            self._store(entry)
        return logging_types.WriteLogEntriesResponse()


def entry_fields(entry: LogEntry) -> Mapping[str, Any]:
    """A small dict view of an entry, for test assertions."""
    pb = LogEntry.pb(entry)
    return {"log_name": pb.log_name, "severity": pb.severity, "text": pb.text_payload,
            "revision": pb.resource.labels.get("revision_name", "")}
