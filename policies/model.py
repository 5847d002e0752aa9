"""The policy file's data model (pydantic v2, `extra="forbid"` everywhere).

A policy says how a canary walks through its phases, which key-metric levels pass, hold or roll
back, how much worse than the baseline the canary may be, how much evidence a phase needs, what an
open alert does, when promotions are frozen, and which services get overrides. The decision core
reads only these models; `policies.loader` builds them from YAML with line numbers.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from policies.units import Duration, Milliseconds, Percent, format_duration, format_ms, format_percent

Action = Literal["pass", "hold", "rollback"]
FailureAction = Literal["hold", "rollback", "halt"]

# Every criterion a phase may require. Key-metric levels, baseline comparisons and alerts.
CRITERIA: tuple[str, ...] = (
    "error_rate",  # canary 5xx rate against the key-metrics levels (absolute)
    "latency_p99",  # canary p99 against the key-metrics levels (absolute)
    "memory_utilization",  # canary memory utilisation levels, with persistence
    "cpu_utilization",  # canary CPU utilisation levels, with persistence
    "instance_count",  # canary instances reaching max_instances
    "error_ratio",  # canary 5xx rate against r0 x baseline (anytime-valid e-process)
    "latency_ratio",  # canary slow-request share against the baseline's (e-process)
    "memory_drift",  # canary-minus-baseline memory drift (CUSUM)
    "no_alerts",  # no open Cloud Monitoring alert on the canary or service
)
Criterion = Literal[
    "error_rate", "latency_p99", "memory_utilization", "cpu_utilization", "instance_count",
    "error_ratio", "latency_ratio", "memory_drift", "no_alerts",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def policy_error(kind: str, message: str, at: tuple[str | int, ...]) -> PydanticCustomError:
    """A validation error that names the field it is about.

    A model validator's error is located at the model itself; `at` (kept in the error's context)
    is the path below it that is actually wrong, so `policies.loader` can point at that YAML line.
    The model still rejects the input when built directly, with or without the loader.
    """
    return PydanticCustomError(kind, message.replace("{", "(").replace("}", ")"), {"at": at})


class Phase(_Model):
    """One step of the traffic schedule."""

    name: str | None = None
    traffic: Percent = Field(description="Canary share of traffic in this phase, e.g. '5%'.")
    duration: Duration | None = Field(None, description="Minimum time in the phase, e.g. '10m'. "
                                      "Omit on the final 100% phase.")
    max_extension: Duration = Field(0.0, description="How far the phase may run past `duration` "
                                    "while evidence is insufficient, e.g. '20m'.")
    criteria: tuple[Criterion, ...] = Field((), description="Criteria that must PASS to leave the phase.")
    min_requests: int | None = Field(None, ge=0, description="Overrides evidence.min_requests.")

    @field_validator("traffic")
    @classmethod
    def _traffic_in_range(cls, value: float) -> float:
        if not 0.01 <= value <= 1.0 + 1e-12:
            raise ValueError("traffic must be between 1% and 100%")
        if abs(value * 100 - round(value * 100)) > 1e-9:
            raise ValueError("Cloud Run splits traffic in whole percents")
        return value

    @property
    def percent(self) -> int:
        return int(round(self.traffic * 100))


class _Levels(_Model):
    on_warning: Action = "hold"
    on_critical: Action = "rollback"
    dry_run: bool = Field(False, description="Evaluate and log, never act.")

    def _format_level(self, value: float) -> str:
        return format_percent(value)

    @model_validator(mode="after")
    def _ordered(self) -> "_Levels":
        normal, warning, critical = (getattr(self, k, None) for k in ("normal", "warning", "critical"))
        if warning is not None and critical is not None and warning > critical:
            raise policy_error(
                "level_order", f"warning level {self._format_level(warning)} is above the critical "
                f"level {self._format_level(critical)}", ("warning",))
        if normal is not None and warning is not None and normal > warning:
            raise policy_error(
                "level_order", f"normal level {self._format_level(normal)} is above the warning "
                f"level {self._format_level(warning)}", ("normal",))
        return self


class ErrorRateLevels(_Levels):
    """Canary 5xx share of requests. Normal: under `normal`. Warning: over `warning`. Critical: over
    `critical`. "Over" needs statistical evidence (a confidence sequence), never a point estimate."""

    normal: Percent
    warning: Percent
    critical: Percent


class LatencyLevels(_Levels):
    """A latency percentile of the canary (from Cloud Monitoring distributions)."""

    percentile: float = Field(99.0, gt=0, lt=100)
    normal: Milliseconds
    warning: Milliseconds
    critical: Milliseconds

    def _format_level(self, value: float) -> str:
        return format_ms(value)


class UtilizationLevels(_Levels):
    """Memory or CPU utilisation of the canary's instances; a level counts only after it has held
    for `persistence` consecutive intervals."""

    normal: Percent
    warning: Percent
    critical: Percent
    persistence: int = Field(3, ge=1, le=60)


class InstanceLevels(_Model):
    """Instance count. Normal: stable. Warning: scaling up (count grew for `persistence` intervals in
    a row). Critical: at `max_instances` for `persistence` intervals."""

    on_warning: Action = "pass"
    on_critical: Action = "hold"
    persistence: int = Field(3, ge=1, le=60)
    dry_run: bool = False


class KeyMetrics(_Model):
    error_rate: ErrorRateLevels
    latency_p99: LatencyLevels
    memory_utilization: UtilizationLevels
    cpu_utilization: UtilizationLevels | None = None
    instance_count: InstanceLevels = InstanceLevels()


class RatioCheck(_Model):
    """Canary against baseline: roll back when there is evidence the canary is more than
    `max_ratio` times worse (the allowed degradation r0)."""

    enabled: bool = True
    max_ratio: float = Field(ge=1.0, le=100.0)
    overdispersion: float = Field(0.0, ge=0.0, le=4.0, description=(
        "Prior variance of one revision's per-minute log error odds beyond binomial noise (from the "
        "service's history); the test is tempered by it until the rollout's own baseline minutes "
        "refine it. 0 = the plain binomial test."))
    on_fail: Action = "rollback"
    dry_run: bool = False


class LatencyRatioCheck(RatioCheck):
    """Share of canary requests slower than `slow_above` (or the baseline's running p99 bucket when
    omitted) against the baseline's share."""

    slow_above: Milliseconds | None = None


class DriftCheck(_Model):
    """CUSUM on canary-minus-baseline utilisation: roll back on a sustained increase."""

    enabled: bool = True
    allowed_increase: Percent = Field(description="Tolerated canary-minus-baseline difference.")
    decision_threshold: float = Field(5.0, gt=0, description="CUSUM h, in units of the noise sd.")
    on_fail: Action = "rollback"
    dry_run: bool = False


class Comparison(_Model):
    """Baseline comparison and the whole rollout's false-rollback budget."""

    alpha: Percent = Field(description="False-rollback budget for a whole rollout, e.g. '1%'.")
    error_rate: RatioCheck
    latency: LatencyRatioCheck
    memory: DriftCheck


class Evidence(_Model):
    min_requests: int = Field(ge=0, description="Canary requests a phase needs before it may pass.")
    late_data_grace: Duration = Field(300.0, description="How long to wait for a minute's data.")
    max_data_gap: Duration = Field(600.0, description="Missing data longer than this triggers "
                                   "on_missing_data.")
    on_missing_data: FailureAction = "hold"
    on_extension_exhausted: FailureAction = "hold"
    canary_warmup: Duration = Field(0.0, description="After the canary first gets traffic, its latency "
                                    "is left out of the latency criteria for this long (cold starts); "
                                    "its errors always count. E.g. '3m'.")


class BlockingIncidents(_Model):
    """Which open incidents stop every promotion, wherever they are (the runbook's pre-deploy gate
    "No P0/P1 incidents currently active"): by the incident's severity, or by the alert policy's
    user labels (any listed value of any listed key). Matching is case-insensitive."""

    severities: tuple[Literal["critical", "error", "warning"], ...] = ("critical",)
    labels: dict[str, tuple[str, ...]] = Field(default_factory=lambda: {"priority": ("p0", "p1")})

    def matches(self, severity: str, labels: dict[str, str]) -> bool:
        if severity.lower() in self.severities:
            return True
        wanted = {key.lower(): {v.lower() for v in values} for key, values in self.labels.items()}
        return any(value.lower() in wanted.get(key.lower(), ()) for key, value in labels.items())


class Alerts(_Model):
    """What an open Cloud Monitoring incident does."""

    scope: Literal["canary", "service"] = "service"
    on_open: Action = "rollback"
    dry_run: bool = False
    blocking: BlockingIncidents = Field(default_factory=BlockingIncidents)

    def blocks(self, severity: str, labels: dict[str, str]) -> bool:
        """Does an incident with this severity and these alert-policy labels block promotions?"""
        return self.blocking.matches(severity, labels)


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Accepted spellings of each weekday: 'Fri', 'Friday', 'tues', 'Thurs', ...
_DAY_NUMBER = {name: day for day, names in enumerate((
    ("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "wednesday"), ("thu", "thur", "thurs", "thursday"),
    ("fri", "friday"), ("sat", "saturday"), ("sun", "sunday"))) for name in names}
_WINDOW_POINT = re.compile(r"^\s*([A-Za-z]+)\s+(\d{1,2}):(\d{2})\s*$")


def _weekly_minute(text: str) -> int | None:
    """Minutes since Monday 00:00 for 'Fri 17:00', or None when `text` is not such a time."""
    match = _WINDOW_POINT.match(text)
    if not match or match.group(1).lower() not in _DAY_NUMBER:
        return None
    hour, minute = int(match.group(2)), int(match.group(3))
    if hour > 23 or minute > 59:
        return None
    return _DAY_NUMBER[match.group(1).lower()] * 1440 + hour * 60 + minute


class FreezeWindow(_Model):
    """A weekly window with no promotions, e.g. start 'Fri 17:00', end 'Mon 08:00'."""

    start: str
    end: str
    reason: str = ""

    @field_validator("start", "end")
    @classmethod
    def _weekly_point(cls, value: str) -> str:
        if not isinstance(value, str) or _weekly_minute(value) is None:
            raise ValueError(f"'{value}' is not a weekly time such as 'Fri 17:00'")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> "FreezeWindow":
        if self._minute_of_week(self.start) == self._minute_of_week(self.end):
            raise policy_error("empty_window", "a freeze window must end at a different time than it "
                               "starts", ("end",))
        return self

    def _minute_of_week(self, text: str) -> int:
        minute = _weekly_minute(text)
        assert minute is not None  # checked by _weekly_point
        return minute

    def contains(self, local: datetime) -> bool:
        """Is `local` (already in the freeze's time zone) inside the window? End is exclusive."""
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        start, end = self._minute_of_week(self.start), self._minute_of_week(self.end)
        if start <= end:
            return start <= minute < end
        return minute >= start or minute < end  # wraps over the week end


_GREGORIAN_CYCLE_DAYS = 146_097  # 400 years, a whole number of weeks


class Freeze(_Model):
    """Promotion freeze windows. A freeze holds a rollout; it never blocks a rollback."""

    timezone: str = "UTC"
    windows: tuple[FreezeWindow, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):  # OSError: 'America' is a dir
            raise ValueError(
                f"unknown time zone '{value}' (use an IANA name such as 'Europe/London')") from None
        return value

    def active_window(self, when: datetime) -> FreezeWindow | None:
        try:
            local = when.astimezone(ZoneInfo(self.timezone))
        except OverflowError:
            # Within a day of datetime's limits (year 1 or 9999: a corrupt time the intake should
            # have refused). Every 400 Gregorian years repeat the calendar and the weekdays, and
            # zoneinfo uses the zone's earliest (or latest) offset for both, so the weekly window
            # is the same 400 years inward.
            shift = timedelta(days=_GREGORIAN_CYCLE_DAYS)
            local = (when + shift if when.year < 5000 else when - shift).astimezone(ZoneInfo(self.timezone))
        for window in self.windows:
            if window.contains(local):
                return window
        return None


class Commands(_Model):
    """Who may pause, resume, abort or promote a rollout, and flip the global kill switch.

    Commands are annotations written on the service through Cloud Run's IAM (docs/security.md); the
    principal is the verified email of the audit entry. Entries are whole emails or `*@domain`
    (`policies.principals`); shell patterns are refused here, at load, with the entry named."""

    authorized_principals: tuple[str, ...] = Field((), description="Who may command a service, on top "
                                                   "of IAM (run.services.update on it); empty = IAM alone.")
    kill_switch_principals: tuple[str, ...] = Field((), description="Who may flip the global kill switch; "
                                                    "empty = authorized_principals; both empty = nobody.")
    max_command_age: Duration = Field(900.0, description="A command issued longer ago than this is "
                                      "ignored (a replayed or long-delayed audit entry), e.g. '15m'.")

    @field_validator("authorized_principals", "kill_switch_principals")
    @classmethod
    def _plain_principals(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from policies.principals import entry_problem

        for entry in value:
            problem = entry_problem(entry)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("max_command_age")
    @classmethod
    def _command_age_range(cls, value: float) -> float:
        if not 60.0 <= value <= 86400.0:
            raise ValueError("max_command_age must be between 1m and 1d")
        return value

    @property
    def kill_switch_allowed(self) -> tuple[str, ...]:
        return self.kill_switch_principals or self.authorized_principals


class RollbackOptions(_Model):
    delete_revision: bool = False
    capture_error_logs: int = Field(1000, ge=0, le=10000, description="ERROR log lines to capture.")


class RateLimits(_Model):
    max_actions_per_service_per_hour: int = Field(12, ge=1)
    max_actions_per_project_per_hour: int = Field(200, ge=1)


class Limits(_Model):
    """Sane ranges for input from outside: event times, interval lengths and text sizes in Pub/Sub
    messages, and the rollout state saved in a service's annotations. Input outside them is
    refused as corrupt, with a reason (a corrupt service is held and a human told), so one bad
    message or one service's bad annotations cannot stop the daemon. `daemon.core.sanity` applies
    them. Top level only: input is checked before it is known which service it is about."""

    max_future_skew: Duration = Field(600.0, description="How far after rollbackd's clock an event "
                                      "or a saved rollout time may be (clock skew), e.g. '10m'.")
    max_rollout_age: Duration = Field(14 * 86400.0, description="How long ago a rollout that is still "
                                      "running may have started, e.g. '14d'; events older than this "
                                      "are refused too, as no running rollout can be that old.")
    max_metrics_interval: Duration = Field(3600.0, description="The longest interval one metrics "
                                           "event may cover, e.g. '1h'.")
    max_text_chars: int = Field(2000, ge=200, le=100_000, description="Free text (command reasons, "
                                "principals, details) is cut to this many characters, with a marker.")

    @field_validator("max_future_skew")
    @classmethod
    def _skew_range(cls, value: float) -> float:
        if not 0.0 <= value <= 86400.0:
            raise ValueError("max_future_skew must be between 0s and 1d")
        return value

    @field_validator("max_rollout_age")
    @classmethod
    def _age_range(cls, value: float) -> float:
        if not 3600.0 <= value <= 366 * 86400.0:
            raise ValueError("max_rollout_age must be between 1h and 366d")
        return value

    @field_validator("max_metrics_interval")
    @classmethod
    def _interval_range(cls, value: float) -> float:
        if not 1.0 <= value <= 86400.0 or not float(value).is_integer():
            raise ValueError("max_metrics_interval must be whole seconds between 1s and 1d")
        return value


class OverrideMatch(_Model):
    service: str | None = None
    labels: dict[str, str] = {}

    @model_validator(mode="after")
    def _not_empty(self) -> "OverrideMatch":
        if self.service is None and not self.labels:
            raise ValueError("an override must match a service name or labels")
        return self

    def matches(self, service: str, labels: dict[str, str]) -> bool:
        if self.service is not None and self.service != service:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())

    def may_overlap(self, other: "OverrideMatch") -> bool:
        """Could one service match both selectors?"""
        if self.service is not None and other.service is not None and self.service != other.service:
            return False
        for key, value in self.labels.items():
            if key in other.labels and other.labels[key] != value:
                return False
        return True


class ManagedSelector(_Model):
    """Services rollbackd manages even without the managed label (see `policies.managed`): by exact
    name, by a name prefix ending in '*', and/or by labels (all of them). The opt-out label
    (the managed label's key with the value 'disabled') always wins over a selector."""

    service: str | None = Field(None, description="Exact service name, or a prefix ending in '*' "
                                "such as 'payments-*'.")
    labels: dict[str, str] = Field({}, description="Labels the service must carry, all of them.")

    @field_validator("service")
    @classmethod
    def _name_or_prefix(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.strip():
            raise ValueError("a service name must not be empty")
        prefix = value[:-1] if value.endswith("*") else value
        if "*" in prefix:
            raise ValueError(f"'{value}': '*' is allowed only at the end, as in 'payments-*'")
        if not prefix:
            # A selector for every service would undo the opt-in the managed label stands for.
            raise ValueError("'*' alone would manage every service; name a prefix such as 'payments-*'")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> "ManagedSelector":
        if self.service is None and not self.labels:
            raise ValueError("a managed selector must match a service name or labels")
        return self

    def matches(self, service: str, labels: Mapping[str, str]) -> bool:
        if self.service is not None:
            if self.service.endswith("*"):
                if not service.startswith(self.service[:-1]):
                    return False
            elif self.service != service:
                return False
        return all(labels.get(k) == v for k, v in self.labels.items())

    def describe(self) -> str:
        """'service payments-* and labels team=payments', as `policy diff` and refusals word it."""
        parts = [f"service {self.service}"] if self.service is not None else []
        if self.labels:
            parts.append("labels " + ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items())))
        return " and ".join(parts)


class Override(_Model):
    """Per-service changes, deep-merged over the base policy for matching services."""

    match: OverrideMatch
    policy: dict[str, Any] = Field(description="Any subset of the top-level policy keys.")


class PolicyBody(_Model):
    """Everything an override may change."""

    phases: tuple[Phase, ...]
    key_metrics: KeyMetrics
    comparison: Comparison
    evidence: Evidence
    alerts: Alerts = Alerts()
    freeze: Freeze = Freeze()
    commands: Commands = Commands()
    rollback: RollbackOptions = RollbackOptions()
    rate_limits: RateLimits = RateLimits()

    @field_validator("phases")
    @classmethod
    def _phases_ascend(cls, phases: tuple[Phase, ...]) -> tuple[Phase, ...]:
        if not phases:
            raise ValueError("at least one phase is required")
        for index in range(1, len(phases)):
            before, after = phases[index - 1], phases[index]
            if after.traffic <= before.traffic:
                raise policy_error("phase_order", f"phases must ascend: {after.percent}% follows "
                                   f"{before.percent}%", (index, "traffic"))
        if phases[-1].percent != 100:
            raise policy_error("phase_order", "the last phase must route 100% of traffic to the canary",
                               (len(phases) - 1, "traffic"))
        for index, phase in enumerate(phases[:-1]):
            if phase.duration is None:
                raise policy_error("phase_duration", f"phase {index + 1} needs a duration",
                                   (index, "duration"))
        return phases

    def phase_name(self, index: int) -> str:
        phase = self.phases[index]
        return phase.name or f"phase {index + 1}"


class Policy(PolicyBody):
    version: Literal[1] = 1
    name: str = "policy"
    managed: tuple[ManagedSelector, ...] = Field((), description="Services managed without the managed "
                                                 "label (any selector matching is enough).")
    limits: Limits = Limits()
    overrides: tuple[Override, ...] = ()

    @model_validator(mode="after")
    def _rollouts_fit_the_age_limit(self) -> "Policy":
        schedules = [self.phases] + [_phases_or_none(o.policy.get("phases")) for o in self.overrides]
        longest = max(sum((p.duration or 0.0) + p.max_extension for p in phases)
                      for phases in schedules if phases is not None)
        if longest >= self.limits.max_rollout_age:
            raise policy_error("rollout_age", f"{format_duration(self.limits.max_rollout_age)} is not longer "
                               f"than the phases with their extensions can take ({format_duration(longest)}): "
                               "a restarted daemon would refuse its own rollouts", ("limits", "max_rollout_age"))
        return self

    @model_validator(mode="after")
    def _overrides_valid(self) -> "Policy":
        # `policies.loader` repeats both checks on the raw YAML to report every problem with its
        # line; these keep a Policy built any other way just as strict.
        for j, second in enumerate(self.overrides):
            for i in range(j):
                if self.overrides[i].match.may_overlap(second.match):
                    raise policy_error("ambiguous_overrides", ambiguity_message(i, j),
                                       ("overrides", j, "match"))
        if self.overrides:
            base = self.model_dump(mode="json", exclude={"overrides", "managed", "limits", "name", "version"})
            for i, override in enumerate(self.overrides):
                try:
                    PolicyBody.model_validate(_deep_merge(base, override.policy))
                except ValidationError as exc:
                    first = exc.errors()[0]
                    where = tuple(first["loc"]) + tuple((first.get("ctx") or {}).get("at", ()))
                    raise policy_error("override_invalid", f"override {i + 1}: {first['msg']}",
                                       ("overrides", i, "policy", *where)) from None
        return self

    def for_service(self, service: str, labels: dict[str, str] | None = None) -> "Policy":
        """The effective policy for one service: the base with its (single) matching override."""
        labels = labels or {}
        matching = [o for o in self.overrides if o.match.matches(service, labels)]
        if not matching:
            return self
        if len(matching) > 1:  # unreachable for validated policies; kept as a guard
            raise ValueError(f"service {service} matches {len(matching)} overrides")
        base = self.model_dump(mode="json", exclude={"overrides"})
        merged = _deep_merge(base, matching[0].policy)
        return Policy.model_validate(merged)


def _phases_or_none(raw: Any) -> tuple[Phase, ...] | None:
    """An override's phases, or None when it has none (or invalid ones: reported elsewhere)."""
    if not isinstance(raw, list):
        return None
    try:
        return tuple(Phase.model_validate(item) for item in raw)
    except ValidationError:
        return None


def ambiguity_message(first: int, second: int) -> str:
    return (f"overrides {first + 1} and {second + 1} can both match the same service; "
            "make their selectors exclusive")


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
