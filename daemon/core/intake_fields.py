"""Field readers shared by the intake parsers (`intake_native`, `intake_audit`, `intake_incident`).

Each reader takes a decoded JSON object, a key and the dotted path used in messages, and either
returns a clean Python value or raises `Bad(reason)`. `Bad` and `Skip` never leave the intake:
`daemon.core.intake.parse_message` turns them into `Rejected` / `Ignored` values. Raising inside
the intake keeps every parser a straight line of field reads instead of a pyramid of checks.

Pure: no clock (the caller passes `now`), no I/O.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from daemon.core import sanity

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

_INT_TEXT = re.compile(r"-?[0-9]{1,19}", re.ASCII)


class Bad(Exception):
    """Malformed input: becomes `Rejected(reason)`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Skip(Exception):
    """Valid input rollbackd does not act on: becomes `Ignored(reason)`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def short(value: Any, limit: int = 40) -> str:
    """A value quoted for a reason, cut so a hostile message cannot bloat the journal."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def wrong(path: str, what: str, value: Any) -> Bad:
    """`path: missing` for None, else `path: expected <what>, got <type>`."""
    if value is None:
        return Bad(f"{path}: missing")
    return Bad(f"{path}: expected {what}, got {type_name(value)}")


# --- strings and objects ------------------------------------------------------------------------
def req_str(obj: Mapping[str, Any], key: str, path: str) -> str:
    """A required, non-empty string."""
    if key not in obj:
        raise Bad(f"{path}: missing")
    value = obj[key]
    if not isinstance(value, str):
        raise Bad(f"{path}: expected a string, got {type_name(value)}")
    if not value.strip():
        raise Bad(f"{path}: empty string")
    return value


def opt_str(obj: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    """An optional string (absent or null gives `default`); empty is allowed."""
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise Bad(f"{path}: expected a string, got {type_name(value)}")
    return value


def opt_name(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """An optional name (service, revision): absent or null gives None, empty is an error."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Bad(f"{path}: expected a string, got {type_name(value)}")
    if not value.strip():
        raise Bad(f"{path}: empty string")
    return value


def obj_at(obj: Any, *keys: str) -> Any:
    """Lenient nested lookup for foreign formats: None when any level is missing or not an object."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def str_at(obj: Any, *keys: str) -> str:
    """Lenient nested string: "" unless a string is there."""
    value = obj_at(obj, *keys)
    return value if isinstance(value, str) else ""


# --- numbers ------------------------------------------------------------------------------------
def as_int(value: Any, path: str) -> int:
    """An int64 written as a JSON number or a decimal string (Cloud Monitoring writes strings)."""
    if isinstance(value, bool):
        raise Bad(f"{path}: expected an integer, got boolean")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Bad(f"{path}: {value} is not a finite number")
        if not value.is_integer():
            raise Bad(f"{path}: {value!r} is not an integer")
        result = int(value)
    elif isinstance(value, str):
        if not _INT_TEXT.fullmatch(value):
            raise Bad(f"{path}: {short(value)} is not an integer")
        result = int(value)
    else:
        raise Bad(f"{path}: expected an integer, got {type_name(value)}")
    if not INT64_MIN <= result <= INT64_MAX:
        raise Bad(f"{path}: {short(value)} does not fit in int64")
    return result


def as_count(value: Any, path: str) -> int:
    result = as_int(value, path)
    if result < 0:
        raise Bad(f"{path}: negative count")
    return result


def as_float(value: Any, path: str) -> float:
    """A finite number (JSON number, or a numeric string as proto3 JSON allows for doubles)."""
    if isinstance(value, bool):
        raise Bad(f"{path}: expected a number, got boolean")
    if isinstance(value, (int, float)):
        try:
            result = float(value)
        except OverflowError:
            raise Bad(f"{path}: number out of range") from None
    elif isinstance(value, str) and value.strip():
        try:
            result = float(value)
        except ValueError:
            raise Bad(f"{path}: {short(value)} is not a number") from None
    else:
        raise Bad(f"{path}: expected a number, got {type_name(value)}")
    if not math.isfinite(result):
        raise Bad(f"{path}: {short(value)} is not a finite number")
    return result


def opt_count(obj: Mapping[str, Any], key: str, path: str) -> int | None:
    value = obj.get(key)
    return None if value is None else as_count(value, path)


def percent(value: Any, path: str) -> int:
    result = as_int(value, path)
    if not 0 <= result <= 100:
        raise Bad(f"{path}: {result} is not a percent between 0 and 100")
    return result


# --- times --------------------------------------------------------------------------------------
def parse_time(value: Any, path: str) -> datetime:
    """RFC 3339 with an offset, returned as aware UTC; nanoseconds are cut to microseconds."""
    if not isinstance(value, str):
        raise Bad(f"{path}: expected an RFC 3339 time string, got {type_name(value)}")
    try:
        return sanity.parse_rfc3339(value)
    except ValueError as exc:
        raise Bad(f"{path}: {short(value)} is {exc}") from None


def epoch_time(value: Any, path: str) -> datetime:
    """Epoch seconds (number or numeric string), as Monitoring incidents carry them."""
    seconds = as_float(value, path)
    if seconds < 0:
        raise Bad(f"{path}: negative epoch seconds")
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise Bad(f"{path}: epoch seconds {short(value)} out of range") from None


@dataclass(frozen=True, slots=True)
class Window:
    """What a time is checked against: the caller's "now" and the sane ranges around it."""

    now: datetime
    ranges: sanity.Ranges = sanity.INTAKE_DEFAULT


def sane_time(when: datetime, window: Window, path: str) -> datetime:
    """`when`, if it lies in the sane range around `window.now` (see `daemon.core.sanity`)."""
    problem = sanity.time_problem(when, window.now, window.ranges)
    if problem is not None:
        raise Bad(f"{path}: {problem}")
    return when
