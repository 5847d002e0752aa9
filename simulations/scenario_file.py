"""Scenario files for `rollbackd simulate SCENARIO.yaml`: each revision's behaviour and the traffic.

A file names the service's traffic, the baseline's behaviour and the canary's behaviour over time
(error rate, latency distribution, memory, as `changes` at given minutes). `load_scenario_file`
validates it (pydantic, extra keys forbidden) and reports problems as one `ScenarioFileError` line
with the file's line number; `scenario_from_file` turns it into a `Scenario` for the generator.
Examples: simulations/scenarios/*.yaml.
"""
from __future__ import annotations

import io
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from policies.units import Duration, Milliseconds, Percent
from simulations.scenario_model import Buckets, Profile, Scenario, Step


class ScenarioFileError(ValueError):
    """A scenario file that cannot be used; the message is one line a person can act on."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latency(_Model):
    median: Milliseconds = Field(100.0, description="Median request latency, e.g. '100ms'.")
    sigma: float = Field(0.596, gt=0, le=3, description="Log-normal shape (0.596: p99 = 4 x median).")
    slow_share: Percent = Field(0.0, description="Share of requests that are slow, e.g. '1%'.")
    slow_median: Milliseconds = Field(800.0, description="Median latency of the slow requests.")


class Change(_Model):
    """From `at` (minutes after the deploy) the canary moves to these values, over `over`."""

    at: Duration
    over: Duration = 0.0
    error_rate: Percent | None = None
    latency_median: Milliseconds | None = None
    slow_share: Percent | None = None
    memory: Percent | None = None


class RevisionBehaviour(_Model):
    """How one revision behaves: its own 5xx rate, latency distribution and memory utilisation."""

    revision: str = Field(min_length=1)
    error_rate: Percent = 0.001
    latency: Latency = Latency()
    memory: Percent = 0.4
    cpu: Percent = 0.3
    changes: tuple[Change, ...] = ()

    @field_validator("changes")
    @classmethod
    def _in_order(cls, changes: tuple[Change, ...]) -> tuple[Change, ...]:
        for before, after in zip(changes, changes[1:]):
            if after.at < before.at:
                raise ValueError("changes must be listed in time order")
        return changes


class Traffic(_Model):
    rps: float = Field(gt=0, le=100_000, description="Requests per second to the whole service.")
    noise: float = Field(0.1, ge=0, le=2, description="Per-minute shared log-normal traffic noise (sd).")
    diurnal_amplitude: Percent = 0.0
    diurnal_period: Duration = 86400.0


class Gap(_Model):
    at: Duration
    length: Duration = 600.0


class Data(_Model):
    missing: Percent = Field(0.0, description="Chance that one revision's minute never arrives.")
    delay: Duration = Field(0.0, description="Minimum visibility delay, e.g. '2m'.")
    max_delay: Duration | None = Field(None, description="Maximum delay; each point draws in between.")
    gap: Gap | None = None


class ScenarioFile(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    service: str = Field("checkout", min_length=1)
    seed: int = 0
    duration: Duration = Field(3600.0, description="How long to simulate, e.g. '60m'.")
    start: datetime | None = None
    traffic: Traffic
    baseline: RevisionBehaviour
    canary: RevisionBehaviour
    data: Data = Data()

    @model_validator(mode="after")
    def _sensible(self) -> "ScenarioFile":
        if self.baseline.error_rate <= 0:
            raise ValueError("baseline.error_rate must be above 0% (the canary's rate is modelled "
                             "relative to it; use e.g. '0.01%')")
        if self.baseline.changes:
            raise ValueError("baseline.changes is not supported: the baseline is the reference")
        if self.canary.revision == self.baseline.revision:
            raise ValueError("canary and baseline must be different revisions")
        if self.start is not None and self.start.tzinfo is None:
            raise ValueError("start needs a time zone, e.g. '2025-03-03T14:00:00Z'")
        if self.data.max_delay is not None and self.data.max_delay < self.data.delay:
            raise ValueError("data.max_delay is shorter than data.delay")
        return self


def _profile(base: float, changes: tuple[Change, ...], attr: str, transform) -> Profile:
    steps = [Step(c.at / 60.0, transform(getattr(c, attr)), c.over / 60.0)
             for c in changes if getattr(c, attr) is not None]
    return Profile(transform(base), tuple(steps))


def scenario_from_file(spec: ScenarioFile) -> Scenario:
    """The generator's `Scenario` for a validated file (canary relative to baseline)."""
    base, can = spec.baseline, spec.canary
    p0 = base.error_rate
    scale0 = base.latency.median
    onset = min((c.at / 60.0 for c in can.changes), default=None)
    worse = (can.error_rate > p0 or can.latency.median > scale0 or can.latency.slow_share > 0
             or any(c.error_rate is not None and c.error_rate > p0 for c in can.changes)
             or any(c.latency_median is not None and c.latency_median > scale0 for c in can.changes)
             or any(c.slow_share for c in can.changes))
    starts_worse = can.error_rate > p0 or can.latency.median > scale0 or can.latency.slow_share > 0
    return Scenario(
        name=spec.name, description=spec.description or spec.name, kind="errors" if worse else "aa",
        service=spec.service, baseline_revision=base.revision, canary_revision=can.revision,
        minutes=max(1, int(math.ceil(spec.duration / 60.0))),
        rps=spec.traffic.rps, traffic_noise_sd=spec.traffic.noise,
        diurnal_amplitude=spec.traffic.diurnal_amplitude, diurnal_period_min=spec.traffic.diurnal_period / 60.0,
        p0=p0, error_ratio=_profile(can.error_rate, can.changes, "error_rate", lambda v: v / p0),
        latency_median_ms=scale0, latency_sigma=base.latency.sigma,
        canary_latency_scale=_profile(can.latency.median, can.changes, "latency_median", lambda v: v / scale0),
        canary_tail_fraction=_profile(can.latency.slow_share, can.changes, "slow_share", float),
        tail_median_ms=can.latency.slow_median,
        memory_base=base.memory, cpu_base=base.cpu,
        canary_memory_delta=_profile(can.memory, can.changes, "memory", lambda v: v - base.memory),
        missing_prob=spec.data.missing,
        gap_start_min=None if spec.data.gap is None else int(spec.data.gap.at // 60),
        gap_minutes=10 if spec.data.gap is None else max(1, int(spec.data.gap.length // 60)),
        delay_min=int(spec.data.delay // 60),
        delay_max=int((spec.data.max_delay if spec.data.max_delay is not None else spec.data.delay) // 60),
        onset_min=(0.0 if starts_worse else onset) if worse else None,
        buckets=Buckets(),
    )


def _line_of(node: Any, loc: tuple) -> int | None:
    line = None
    for key in loc:
        lc = getattr(node, "lc", None)
        try:
            if lc is not None and isinstance(key, str):
                line = lc.key(key)[0] + 1
            elif lc is not None and isinstance(key, int):
                line = lc.item(key)[0] + 1
            node = node[key]
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    return line


def parse_scenario_text(text: str, where: str = "<scenario>") -> ScenarioFile:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="rt").load(io.StringIO(text))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise ScenarioFileError(f"{where}{at}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    _check_size(data, where)
    if not isinstance(data, dict):
        raise ScenarioFileError(f"{where}: expected a mapping with name, traffic, baseline and canary")
    try:
        return ScenarioFile.model_validate(_plain(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        line = _line_of(data, loc)
        path = ".".join(str(p) for p in loc) or "(top level)"
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ScenarioFileError(f"{where}{f':{line}' if line else ''}: {path}: {message}{more}") from None


# A scenario is a few dozen nodes. ruamel shares an aliased node instead of copying it, so a 445-byte
# "billion laughs" file loads at once and only blows up when walked (20 s, then gigabytes): count the
# nodes as the walk would see them, aliases expanded, and stop at the cap.
MAX_NODES = 10_000
MAX_DEPTH = 32


def _check_size(data: Any, where: str) -> None:
    """Raise `ScenarioFileError` if aliases expand `data` past MAX_NODES, or nest past MAX_DEPTH
    (`&a [*a]` refers to itself and would never end)."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ScenarioFileError(f"{where}: too large: YAML aliases expand past {MAX_NODES} values "
                                    "(a scenario needs a few dozen)")
        if depth > MAX_DEPTH:
            raise ScenarioFileError(f"{where}: nested deeper than {MAX_DEPTH} levels (or an alias refers "
                                    "to the node that contains it)")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def load_scenario_file(path: str | Path) -> ScenarioFile:
    """Read and validate a scenario file; raises `ScenarioFileError` with a one-line reason."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioFileError(f"{p}: cannot read: {exc.__class__.__name__}: {exc}") from None
    return parse_scenario_text(text, str(p))


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node
