"""The ports: one narrow interface per outside system, the error types and the values adapters return.

The engine talks to the world only through these. `actions/` (Cloud Run, notifications, Cloud
Logging), `daemon/adapters/` (Pub/Sub, Cloud Monitoring, the journal, decision logs) and
`simulations/` (the simulated Cloud Run, replay) implement them; `daemon.bootstrap` chooses which
implementation each mode gets. This module imports only the core, so every adapter can import it
without importing another adapter (the import-linter contract in pyproject.toml keeps it so).

Adapters translate google.api_core exceptions into `TransientError` (retried with jittered backoff
by `daemon.retry`, in one place) or `PermanentError` (the rollout halts and a human is told).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Protocol

from daemon.core.commands import CaptureErrorLogs, DeleteRevision, Notify, SaveState, SetTraffic
from daemon.core.decision import Decision


# --- errors -------------------------------------------------------------------------------------

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


class RecordChangedError(ActionError):
    """The service's `rollbackd.dev/*` record is not what the deciding engine believed: another
    replica (or a human) changed the rollout since. Never overwrite: re-read and re-decide."""

    def __init__(self, message: str) -> None:
        super().__init__(message, api="run", code="RECORD_CHANGED")


class ManualChangeError(ActionError):
    """The service's traffic is not what rollbackd last set: a human changed it. Never overwrite."""

    def __init__(self, message: str, *, observed_canary_percent: int | None) -> None:
        super().__init__(message, api="run", code="MANUAL_CHANGE")
        self.observed_canary_percent = observed_canary_percent


# --- clock --------------------------------------------------------------------------------------

class Clock(Protocol):
    """Time as the engine and adapters see it (`daemon.clock`: SystemClock, VirtualClock)."""

    def now(self) -> datetime: ...

    def sleep_until(self, when: datetime, stop: threading.Event | None = None) -> None: ...

    def monotonic(self) -> float: ...


# --- traffic controller (Cloud Run, with the rollout's state saved as annotations) --------------

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
    """Cloud Run traffic: read services, apply a split with its annotations in one etag-guarded
    update (the rollout's durable state), delete a revision."""

    def list_services(self) -> list[ServiceView]: ...

    def get_service(self, project: str, location: str, service: str) -> ServiceView: ...

    def apply(self, command: SetTraffic) -> ApplyResult: ...

    def save_state(self, command: SaveState) -> ApplyResult:
        """Write the annotations only; the traffic stays exactly as it is."""
        ...

    def delete_revision(self, command: DeleteRevision) -> None: ...


# --- notifier -----------------------------------------------------------------------------------

class Notifier(Protocol):
    def notify(self, command: Notify) -> None: ...


# --- error-log source ---------------------------------------------------------------------------

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


# --- event source and metrics source ------------------------------------------------------------

class MessageHandler(Protocol):
    """Where an event source delivers each message (`daemon.dispatch.Dispatcher.handle`). The
    source acknowledges the message only after this returns."""

    def __call__(self, data: bytes, attributes: Mapping[str, str] | None = None, message_id: str = "",
                 publish_time: datetime | None = None, delivery_attempt: int | None = None) -> None: ...


class EventSource(Protocol):
    """A stream of messages (Pub/Sub) feeding a `MessageHandler` on its own threads."""

    @property
    def ready(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class MetricsSource(Protocol):
    """Per-revision metrics for the active rollouts (Cloud Monitoring). `poll` returns the minutes
    collected and whether collection worked; a failure is never "healthy"."""

    def poll(self, active: Iterable[tuple[Any, datetime]]) -> Any: ...

    def forget(self, target: Any) -> None: ...


# --- decision sink and journal ------------------------------------------------------------------

class DecisionSink(Protocol):
    """Where decisions and operational errors are reported (Cloud Logging's structured stdout)."""

    def decision(self, decision: Decision) -> None: ...

    def error(self, message: str, **fields: Any) -> None: ...

    def info(self, message: str, **fields: Any) -> None: ...


class Journal(Protocol):
    """Every input and decision, in order; a decision is written `durable` before it is acted on."""

    def write(self, record: dict[str, Any], *, durable: bool = False) -> None: ...


class NullJournal:
    """Writes nothing (replay and backtests without `--report`); the engine then skips building records."""

    def write(self, record: dict[str, Any], *, durable: bool = False) -> None:
        return None


class ListJournal:
    """Keeps journal records in memory (replay with a report, the sandbox without `--state-dir`, tests)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any], *, durable: bool = False) -> None:
        self.records.append(record)


class EngineFactory(Protocol):
    """`daemon.bootstrap.build` with its mode chosen (`daemon.bootstrap.engine_factory(mode)`): how
    replay and backtests get an engine without importing the engine or the bootstrap (both sit
    beside or above them). Keyword arguments are the engine's adapters and options."""

    def __call__(self, **adapters: Any) -> Any: ...
