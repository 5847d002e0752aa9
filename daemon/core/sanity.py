"""Sane ranges for input from outside: one place for the rules, pure values and functions.

Every time, interval, phase and piece of free text that enters rollbackd (a Pub/Sub message read
by `daemon.core.intake`, the `rollbackd.dev/*` annotations read by `daemon.core.persist`) is
checked here, so a corrupt value is refused where it enters, with a reason, instead of crashing
or stalling the core later (year 1 overflowing a time-zone conversion, a rollout "started" in
1900 that one tick would evaluate minute by minute, a start in 2099 that makes every command
look older than the rollout, an `interval_s` no `timedelta` can hold).

The rules:
- a time is between `EARLIEST` and `LATEST` (absolute: keeps all date arithmetic far from the
  limits of `datetime`), at most `max_future_s` after "now" (clock skew), and, where an age
  limit applies, at most `max_age_s` before it;
- a metrics interval is between 1 s and `max_interval_s`;
- a phase number fits the policy, and a status that gathers evidence has a phase to gather it in
  and a next phase to promote to;
- free text (reasons, principals, details) is cut to `max_text_chars` with a visible marker;
  names (services, revisions, incident ids) longer than `MAX_NAME_CHARS` are refused.

The policy's `limits` section sets the relative ranges (`ranges_from`); without a policy the
defaults below apply. Pure: `now` is always a parameter; no clock, no I/O, no pydantic.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

# No Cloud Run event or rollout can be older than the first (2000 is far before Cloud Run); LATEST
# leaves ~7,800 years of headroom below datetime.max for any arithmetic on an accepted time.
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)
MAX_NAME_CHARS = 512  # Cloud Run names are at most 63 characters; an email at most 254
TRUNCATION_MARKER = "…[{n} more characters cut]"

DEFAULT_MAX_FUTURE_S = 600.0  # 10m
DEFAULT_MAX_AGE_S = 14 * 86400.0  # 14d
DEFAULT_MAX_INTERVAL_S = 3600  # 1h
DEFAULT_MAX_TEXT_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Ranges:
    """The relative ranges. `max_age_s=None` checks no age: replay reads recordings of any age
    (it passes a far-future "now"), so only a caller that knows the real present sets one."""

    max_future_s: float = DEFAULT_MAX_FUTURE_S
    max_age_s: float | None = DEFAULT_MAX_AGE_S
    max_interval_s: int = DEFAULT_MAX_INTERVAL_S
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS


# What `parse_message` uses when its caller passes no ranges: the defaults, without an age limit.
INTAKE_DEFAULT = Ranges(max_age_s=None)


class LimitsSection(Protocol):
    """The policy's `limits` section (`policies.model.Limits`), seconds as floats."""

    max_future_skew: float
    max_rollout_age: float
    max_metrics_interval: float
    max_text_chars: int


def ranges_from(limits: LimitsSection) -> Ranges:
    """The ranges a policy's `limits` section asks for (with the age limit)."""
    return Ranges(max_future_s=float(limits.max_future_skew), max_age_s=float(limits.max_rollout_age),
                  max_interval_s=int(limits.max_metrics_interval), max_text_chars=int(limits.max_text_chars))


# --- times --------------------------------------------------------------------------------------
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,12}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)


def parse_rfc3339(text: object) -> datetime:
    """Strict RFC 3339 (a mandatory offset, ASCII digits) as aware UTC, nanoseconds cut to
    microseconds. Raises ValueError, never OverflowError: '0001-01-01T00:30:00+01:00' is year 0
    in UTC, which `datetime` cannot hold. (`datetime.fromisoformat` also accepts far more ISO 8601
    shapes than RFC 3339 allows, such as '20261128' or week dates.)"""
    if not isinstance(text, str):
        raise ValueError(f"expected an RFC 3339 time string, got {type(text).__name__}")
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError("not an RFC 3339 time")
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        if zulu:
            return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro,
                            timezone.utc)
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        tz = timezone(-offset if sign == "-" else offset)
        parsed = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid time ({exc})") from None


def time_problem(when: datetime, now: datetime, ranges: Ranges) -> str | None:
    """None when `when` is a sane time relative to `now`; else why not, as a sentence fragment
    that follows the field's name ('deploy.time: <fragment>')."""
    if when < EARLIEST or when >= LATEST:
        return (f"{_stamp(when)} is outside the sane range {_stamp(EARLIEST)} to {_stamp(LATEST)}")
    if (when - now).total_seconds() > ranges.max_future_s:
        return (f"{when.isoformat()} is {human(when - now)} in the future "
                f"(limit {human(timedelta(seconds=ranges.max_future_s))})")
    if ranges.max_age_s is not None and (now - when).total_seconds() > ranges.max_age_s:
        return (f"{when.isoformat()} is {human(now - when)} old "
                f"(limit {human(timedelta(seconds=ranges.max_age_s))})")
    return None


def _stamp(when: datetime) -> str:
    return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"


def human(delta: timedelta) -> str:
    """'3d', '5h', '10m' or '30s': the largest whole unit, for reasons."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- intervals, phases, text --------------------------------------------------------------------
def interval_problem(interval_s: int, ranges: Ranges) -> str | None:
    if interval_s <= 0:
        return f"{interval_s} is not positive"
    if interval_s > ranges.max_interval_s:
        return f"{interval_s} s is longer than the limit of {ranges.max_interval_s} s"
    return None


def phase_problem(phase_index: int, n_phases: int, gathers_evidence: bool) -> str | None:
    """`phase_index` is 0-based, -1 before the first traffic change. A status that gathers evidence
    (phase, waiting, held) needs a phase that is not the last (the last is 100%: reaching it
    completes the rollout), so that there is a next phase to promote to."""
    if not -1 <= phase_index < n_phases:
        return f"phase {phase_index + 1} does not exist in the current policy ({n_phases} phases)"
    if gathers_evidence and phase_index >= n_phases - 1:
        return (f"phase {phase_index + 1} is the policy's last (100%) phase, so a rollout still "
                f"gathering evidence cannot be in it")
    return None


def cap_text(text: str, limit: int) -> str:
    """`text` unchanged when it fits in `limit` characters, else cut so that it and the marker
    together fit: the result never exceeds `limit`, so capping twice changes nothing."""
    if len(text) <= limit:
        return text
    keep = max(limit - len(TRUNCATION_MARKER.format(n=len(text))), 0)
    return text[:keep] + TRUNCATION_MARKER.format(n=len(text) - keep)


def name_problem(name: str) -> str | None:
    if len(name) > MAX_NAME_CHARS:
        return f"{len(name)} characters, longer than the limit of {MAX_NAME_CHARS}"
    return None
