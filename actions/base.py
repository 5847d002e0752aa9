"""The narrow interfaces between the engine and the systems it acts on, and their error types.

Adapters translate google.api_core exceptions into `TransientError` (retried with jittered backoff
by `actions.retry`, in one place) or `PermanentError` (the rollout halts and a human is told).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from daemon.core.commands import CaptureErrorLogs, DeleteRevision, Notify, SetTraffic


class ActionError(Exception):
    """Base class for failures of an action."""

    def __init__(self, message: str, *, api: str = "", code: str = "") -> None:
        super().__init__(message)
        self.api = api
        self.code = code


class TransientError(ActionError):
    """Worth retrying: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL."""


class PermanentError(ActionError):
    """Not worth retrying: PERMISSION_DENIED, NOT_FOUND, INVALID_ARGUMENT."""


class ConflictError(ActionError):
    """The service changed under us (stale etag: ABORTED or FAILED_PRECONDITION): re-read, re-decide."""


class ManualChangeError(ActionError):
    """The service's traffic is not what rollbackd last set: a human changed it. Never overwrite."""

    def __init__(self, message: str, *, observed_canary_percent: int | None) -> None:
        super().__init__(message, api="run", code="MANUAL_CHANGE")
        self.observed_canary_percent = observed_canary_percent


@dataclass(frozen=True, slots=True)
class TrafficEntry:
    revision: str
    percent: int
    tag: str = ""


@dataclass(frozen=True, slots=True)
class ServiceView:
    """What rollbackd needs to know about a Cloud Run service."""

    name: str  # short service name
    project: str
    location: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    traffic: tuple[TrafficEntry, ...]
    latest_created_revision: str  # short name
    latest_ready_revision: str
    etag: str = ""
    max_instances: int | None = None

    def percent_of(self, revision: str) -> int:
        return sum(t.percent for t in self.traffic if t.revision == revision)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    changed: bool  # False when the traffic was already as wanted (no call made)
    service: ServiceView | None = None


class TrafficController(Protocol):
    """Cloud Run traffic: read services, apply a split with annotations, delete a revision."""

    def list_services(self) -> list[ServiceView]: ...

    def get_service(self, project: str, location: str, service: str) -> ServiceView: ...

    def apply(self, command: SetTraffic) -> ApplyResult: ...

    def delete_revision(self, command: DeleteRevision) -> None: ...


class Notifier(Protocol):
    def notify(self, command: Notify) -> None: ...


@dataclass(frozen=True, slots=True)
class LogPattern:
    pattern: str
    count: int
    example: str = ""


@dataclass(frozen=True, slots=True)
class CapturedLogs:
    revision: str
    total: int
    patterns: tuple[LogPattern, ...] = ()
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "total": self.total, "error": self.error or None,
                "patterns": [{"pattern": p.pattern, "count": p.count, "example": p.example}
                             for p in self.patterns]}


class ErrorLogSource(Protocol):
    def capture(self, command: CaptureErrorLogs) -> CapturedLogs: ...
