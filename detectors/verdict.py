"""Verdicts as values: what every detector returns.

A verdict never raises and never hides missing data: NODATA and INCONCLUSIVE are outcomes of their
own, and only PASS counts toward promotion.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping


class Outcome(str, enum.Enum):
    PASS = "pass"  # enough evidence that the canary is within the normal level
    WARN = "warn"  # evidence that the canary is past the warning level
    FAIL = "fail"  # evidence that the canary is past the critical level / regressed vs baseline
    INCONCLUSIVE = "inconclusive"  # not enough evidence either way yet
    NODATA = "nodata"  # no usable data
    ERROR = "error"  # the detector could not compute (malformed input); never healthy

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Outcome.PASS: 0, Outcome.INCONCLUSIVE: 1, Outcome.NODATA: 2, Outcome.ERROR: 3,
             Outcome.WARN: 4, Outcome.FAIL: 5}


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    statistic: float | None  # the test statistic (e-value, bound, value) that decided
    threshold: float | None  # what it was compared with
    observed: float | None  # a human-friendly observed value (rate, p99 ms, utilisation)
    sentence: str  # one sentence a human can read
    details: Mapping[str, Any] = field(default_factory=dict)  # extra evidence for the record

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "statistic": _finite(self.statistic),
            "threshold": _finite(self.threshold),
            "observed": _finite(self.observed),
            "sentence": self.sentence,
            **({"details": {k: _finite(v) if isinstance(v, float) else v for k, v in self.details.items()}}
               if self.details else {}),
        }


def _finite(value: float | None) -> float | None | str:
    if value is None:
        return None
    if value != value:  # NaN
        return None
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return round(float(value), 6)
