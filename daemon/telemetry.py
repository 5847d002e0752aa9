"""Prometheus metrics (`rollbackd_*`) and the hooks the engine calls to update them.

`NullTelemetry` is used by replay and backtests, where nothing scrapes metrics and speed matters.
"""
from __future__ import annotations

from typing import Any

try:  # prometheus_client is a runtime dependency; keep replay importable without touching it
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
except ImportError:  # pragma: no cover
    CollectorRegistry = None  # type: ignore


class NullTelemetry:
    def event(self, kind: str, result: str) -> None: ...
    def decision(self, action: str) -> None: ...
    def lag(self, seconds: float) -> None: ...
    def evaluation_seconds(self, seconds: float) -> None: ...
    def api_error(self, api: str, code: str) -> None: ...
    def evidence(self, service: str, metric: str, value: float) -> None: ...
    def rollouts(self, by_phase: dict[str, int]) -> None: ...
    def policy_reload(self, ok: bool) -> None: ...


class PrometheusTelemetry(NullTelemetry):
    """All metrics on a private registry (so tests and replicas in one process do not clash)."""

    def __init__(self, registry: Any | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active_rollouts = Gauge("rollbackd_active_rollouts", "Active rollouts by phase", ["phase"], registry=r)
        self.decisions = Counter("rollbackd_decisions", "Decisions by action", ["action"], registry=r)
        self.rollbacks = Counter("rollbackd_rollbacks", "Rollbacks", registry=r)
        self.events = Counter("rollbackd_events", "Events by type and result", ["type", "result"], registry=r)
        self.event_lag = Histogram("rollbackd_event_lag_seconds", "Event time to handling",
                                   buckets=(1, 5, 15, 30, 60, 120, 240, 480, 960, 1920), registry=r)
        self.eval_time = Histogram("rollbackd_evaluation_seconds", "Engine time per event",
                                   buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1), registry=r)
        self.api_errors = Counter("rollbackd_cloud_api_errors", "Cloud API errors by API and code",
                                  ["api", "code"], registry=r)
        self.evidence_gauge = Gauge("rollbackd_evidence", "Current evidence (statistic) per rollout and metric",
                                    ["service", "metric"], registry=r)
        self.policy_reloads = Counter("rollbackd_policy_reloads", "Policy reloads by result", ["result"], registry=r)
        self._phases_seen: set[str] = set()

    def event(self, kind: str, result: str) -> None:
        self.events.labels(kind, result).inc()

    def decision(self, action: str) -> None:
        self.decisions.labels(action).inc()
        if action == "rollback":
            self.rollbacks.inc()

    def lag(self, seconds: float) -> None:
        self.event_lag.observe(max(seconds, 0.0))

    def evaluation_seconds(self, seconds: float) -> None:
        self.eval_time.observe(seconds)

    def api_error(self, api: str, code: str) -> None:
        self.api_errors.labels(api, code).inc()

    def evidence(self, service: str, metric: str, value: float) -> None:
        self.evidence_gauge.labels(service, metric).set(value)

    def rollouts(self, by_phase: dict[str, int]) -> None:
        for phase in self._phases_seen - set(by_phase):
            self.active_rollouts.labels(phase).set(0)
        for phase, count in by_phase.items():
            self.active_rollouts.labels(phase).set(count)
        self._phases_seen |= set(by_phase)

    def policy_reload(self, ok: bool) -> None:
        self.policy_reloads.labels("ok" if ok else "error").inc()
