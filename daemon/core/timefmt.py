"""RFC 3339 timestamps: the one parser and formatter for every time rollbackd reads or writes.

Pure text ⇄ aware-UTC datetime; no clock. The core uses it for decision records and annotations,
the adapters for API timestamps, the journal and recordings. Reading the time is `daemon.clock`'s job.
"""
from __future__ import annotations

from datetime import datetime, timezone


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime. Raises ValueError."""
    if not isinstance(text, str) or not text:
        raise ValueError("expected an RFC 3339 timestamp string")
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    # Python < 3.11 fromisoformat cannot read nanoseconds; trim to microseconds.
    if "." in value:
        head, _, rest = value.partition(".")
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        value = head + ("." + frac[:6] if frac else "") + rest[i:]
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return parsed.astimezone(timezone.utc)


def format_rfc3339(when: datetime) -> str:
    """Format as RFC 3339 UTC with a Z, seconds precision unless there are microseconds."""
    when = when.astimezone(timezone.utc)
    if when.microsecond:
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
