"""Event intake: one Pub/Sub message (or one recording line) in, typed events out, never an
exception. Called by the Pub/Sub subscriber adapter, the replay reader and the journal loader.

`parse_message(data, attributes, now=..., own_principals=..., where=..., ranges=...)` returns
- a list of events (usually one);
- `Rejected(reason, where)` for bad input: not UTF-8 or not JSON, not an object, an unknown type,
  a missing or mistyped field, a negative or non-integer count, 5xx above the total, NaN or
  infinity, a utilisation outside [0, 1.5], a time that is not RFC 3339 or outside the sane range
  (`daemon.core.sanity`: not before 2000 nor after 2200, at most `max_future_s` after `now`, and,
  when `ranges` sets an age limit, at most `max_age_s` before it), an `interval_s` over the
  limit, a malformed distribution, an empty or overlong name, an unknown command action;
- `Ignored(reason, where)` for valid input rollbackd deliberately does not act on: its own
  audit entries, failed operations, the second entry of a long-running operation, audit entries
  for other methods, Monitoring's test notifications.

Where a message came from decides which format it may have (`source`): each Pub/Sub subscription
has its own publisher (docs/deploy.md), so it accepts only its own format and refuses anything else
with a reason: `"audit"` (the Logging sink's topic) only Cloud Audit Log entries, `"incidents"`
(Monitoring's notification channel) only incident notifications, `"metrics"` (the optional native
metrics topic) only native `metrics` events. `"recording"` (replay, recordings, the journal) accepts
every format, native `deploy`, `alert`, `command` and `traffic-changed` included: those are never
accepted from Pub/Sub, where anyone who could publish could forge them.

The format is recognised by shape: `"type"` → native (`intake_native`), `"protoPayload"` → Cloud
Audit Log entry (`intake_audit`, with its heuristics documented there), `"incident"` or
`"version"` → Monitoring incident (`intake_incident`). The Pub/Sub attribute
`logging.googleapis.com/timestamp` is only a fallback when the message itself has no time.

Free text is cut to `ranges.max_text_chars` with a marker (`intake_limits`). The live daemon passes
`ranges=sanity.ranges_from(policy.limits)`; replay passes none (no age limit: recordings are old).

Pure: `now` is a parameter (the future-time check), nothing reads a clock, nothing imports google.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Mapping

from daemon.core import sanity
from daemon.core.events import Event, Ignored, Rejected
from daemon.core.intake_audit import parse_audit
from daemon.core.intake_fields import Bad, Skip, Window, parse_time, short, type_name
from daemon.core.intake_incident import parse_incident
from daemon.core.intake_limits import bounded
from daemon.core.intake_native import INTERNAL_TYPES, PUBLIC_TYPES

RAW_KEPT = 512  # characters of the offending input kept on a Rejected, for the journal
ATTR_TIMESTAMP = "logging.googleapis.com/timestamp"

ParseResult = list[Event] | Rejected | Ignored
SOURCES = ("audit", "incidents", "metrics", "recording")
# What each Pub/Sub source accepts, for the refusal's reason.
_EXPECTED = {"audit": "a Cloud Audit Log entry (protoPayload)",
             "incidents": "a Cloud Monitoring incident notification (schema 1.2)",
             "metrics": 'a native metrics event ("type": "metrics")'}


def parse_message(data: bytes | str, attributes: Mapping[str, str] | None, *, now: datetime,
                  own_principals: frozenset[str] = frozenset(), where: str = "",
                  allow_internal: bool = False, ranges: sanity.Ranges = sanity.INTAKE_DEFAULT,
                  source: str = "recording") -> ParseResult:
    """Parse one message. `allow_internal` also accepts the engine's own `tick` and
    `action-failed` events, for reading rollbackd's journal back; never set it for Pub/Sub.
    `ranges`: the sane ranges (`sanity.ranges_from(policy.limits)`); the default has no age limit.
    `source`: where it came from (see the module doc); a Pub/Sub source accepts one format only."""
    if source not in SOURCES:
        return Rejected(f"unknown message source {short(source)}", where)
    if source != "recording" and allow_internal:
        return Rejected(f"internal events are never accepted from {source}", where)
    hint = ""
    text = ""
    try:
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                text = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                return Rejected(f"not UTF-8: {exc.reason} at byte {exc.start}", where,
                                _raw(bytes(data).decode("utf-8", "replace")))
        elif isinstance(data, str):
            text = data
        else:
            return Rejected(f"message data is {type(data).__name__}, not bytes or text", where)
        if text.startswith("\ufeff"):
            text = text[1:]  # a byte-order mark from some editors; JSON itself forbids it
        if not text.strip():
            return Rejected("empty message", where)
        try:
            msg = json.loads(text)
        except json.JSONDecodeError as exc:
            return Rejected(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", where, _raw(text))
        except RecursionError:
            return Rejected("not JSON: nested too deeply", where, _raw(text))
        except ValueError as exc:  # e.g. an integer literal longer than Python's 4300-digit limit
            return Rejected(f"not JSON: {short(str(exc), 120)}", where, _raw(text))
        if not isinstance(msg, dict):
            return Rejected(f"expected a JSON object, got {type_name(msg)}", where, _raw(text))

        attrs = attributes if hasattr(attributes, "get") else None  # dict, or a protobuf map
        window = Window(now, ranges)
        shape = ("native" if "type" in msg else "audit" if "protoPayload" in msg
                 else "incident" if ("incident" in msg or "version" in msg) else "")
        wanted = {"audit": "audit", "incidents": "incident", "metrics": "native"}.get(source)
        if wanted is not None and (shape != wanted or (shape == "native" and msg.get("type") != "metrics")):
            found = (f'a native {short(msg["type"])} event' if shape == "native"
                     else {"audit": "an audit entry", "incident": "an incident notification"}.get(shape,
                                                                                           "an unrecognised message"))
            return Rejected(f"wrong subscription: the {source} subscription accepts only {_EXPECTED[source]}, "
                            f"not {found}", where, _raw(text), shape)
        if "type" in msg:
            kind = msg["type"]
            if not isinstance(kind, str):
                return Rejected(f"type: expected a string, got {type_name(kind)}", where, _raw(text))
            hint = kind
            parser = PUBLIC_TYPES.get(kind) or (INTERNAL_TYPES.get(kind) if allow_internal else None)
            if parser is None:
                return Rejected(f"type: unknown event type {short(kind)}", where, _raw(text))
            events = parser(msg, window, _attr_time(attrs))
        elif "protoPayload" in msg:
            hint = "audit"
            events = parse_audit(msg, attrs, window=window, own_principals=own_principals)
        elif "incident" in msg or "version" in msg:
            hint = "incident"
            events = parse_incident(msg, attrs, window=window)
        else:
            return Rejected('unrecognised message: no "type", "protoPayload" or "incident"', where,
                            _raw(text))
        return [bounded(event, ranges) for event in events]
    except Bad as bad:
        return Rejected(bad.reason, where, _raw(text), hint)
    except Skip as skip:
        return Ignored(skip.reason, where)
    except RecursionError:
        return Rejected("internal parse error: nested too deeply", where, _raw(text), hint)
    except Exception as exc:  # noqa: BLE001 - the intake must never raise; this is the last resort
        return Rejected(f"internal parse error: {type(exc).__name__}: {short(str(exc), 200)}", where,
                        _raw(text), hint)


def _attr_time(attributes: Mapping[str, str] | None) -> datetime | None:
    """The sink's timestamp attribute, for native messages without a time (fallback only)."""
    if not attributes or ATTR_TIMESTAMP not in attributes:
        return None
    try:
        return parse_time(attributes[ATTR_TIMESTAMP], f"attributes.{ATTR_TIMESTAMP}")
    except Bad:
        return None


def _raw(text: str) -> str:
    return text if len(text) <= RAW_KEPT else text[:RAW_KEPT] + "..."


def parse_line(line: str, *, now: datetime, where: str = "", allow_internal: bool = False,
               ranges: sanity.Ranges = sanity.INTAKE_DEFAULT) -> ParseResult:
    """A recording or journal line (no attributes); a thin convenience over `parse_message`."""
    return parse_message(line, None, now=now, where=where, allow_internal=allow_internal, ranges=ranges)
