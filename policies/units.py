"""Units as people write them: `10m`, `90s`, `500ms`, `1s`, `1h`; `0.1%`, `85%`.

Bare numbers are rejected where a unit is required: "500" could mean ms or s, and a policy that
means the wrong one moves production traffic.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_duration(value: Any) -> float:
    """Return seconds. Accepts '10m', '90s', '500ms', '1h', '1d' and combinations like '1m30s'."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration with a unit such as '10m', '90s' or '500ms', got {value!r}")
    text = value.strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", "", text).strip():
        raise ValueError(f"'{value}' is not a duration; use a unit: ms, s, m, h or d (e.g. '10m')")
    seconds = sum(float(n) * _DURATION_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds):
        raise ValueError(f"'{value}' is not a finite duration")
    return seconds


def parse_percent(value: Any) -> float:
    """Return a fraction: '0.1%' -> 0.001. The % sign is required."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a percentage such as '0.1%' or '85%', got {value!r}")
    match = _PERCENT.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a percentage; write it with a % sign, e.g. '0.5%'")
    return float(match.group(1)) / 100.0


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def format_percent(fraction: float) -> str:
    return f"{fraction * 100:.12g}%"


def format_ms(milliseconds: float) -> str:
    return format_duration(milliseconds / 1000.0)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$",
                    "examples": ["10m", "90s", "500ms"]}),
]
Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    PlainSerializer(format_percent, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?%$", "examples": ["0.1%", "85%"]}),
]
# Latency thresholds are written as durations and held in milliseconds.
Milliseconds = Annotated[
    float,
    BeforeValidator(lambda v: parse_duration(v) * 1000.0),
    PlainSerializer(format_ms, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$",
                    "examples": ["500ms", "1s"]}),
]
