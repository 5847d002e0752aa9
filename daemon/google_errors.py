"""Translation of google.api_core exceptions into rollbackd's action errors (`daemon.ports`).

Every real adapter (Cloud Run, Cloud Logging, Pub/Sub notifications) calls Google through
`translate()` or the `guarded()` helper, so the rest of rollbackd sees only three kinds of failure:

- `TransientError`: worth retrying with backoff (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED /
  429, INTERNAL, UNKNOWN, a client-side RetryError or timeout);
- `ConflictError`: someone else wrote first (ABORTED, FAILED_PRECONDITION: a stale etag): re-read;
- `PermanentError`: retrying cannot help (PERMISSION_DENIED, NOT_FOUND, INVALID_ARGUMENT,
  UNAUTHENTICATED and everything else): the rollout halts and a human is told.

Each error carries the API name and a status-code name, the labels of the Prometheus counter of
Cloud API errors; `daemon.retry` reports them through its `on_error(api, code)` hook.
"""
from __future__ import annotations

import concurrent.futures
from typing import Callable, TypeVar

from google.api_core import exceptions as gexc

from daemon.ports import ActionError, ConflictError, PermanentError, TransientError

T = TypeVar("T")
ErrorHook = Callable[[str, str], None]

_TRANSIENT: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.TooManyRequests, gexc.InternalServerError,
    gexc.Unknown, gexc.GatewayTimeout, gexc.BadGateway, gexc.RetryError,
)
_CONFLICT: tuple[type[BaseException], ...] = (gexc.Aborted, gexc.FailedPrecondition, gexc.Conflict,
                                              gexc.PreconditionFailed)


def code_of(exc: BaseException) -> str:
    """A stable status-code name for metrics: the gRPC name when known, else the class name."""
    if isinstance(exc, gexc.RetryError):
        return "RETRY_ERROR"
    if isinstance(exc, (TimeoutError, concurrent.futures.TimeoutError)):
        return "DEADLINE_EXCEEDED"
    status = getattr(exc, "grpc_status_code", None)
    if status is not None:
        return str(status.name)
    if isinstance(exc, gexc.TooManyRequests):
        return "RESOURCE_EXHAUSTED"
    return type(exc).__name__.upper()


def translate(exc: BaseException, api: str) -> ActionError:
    """Map one exception from a Google client call to an ActionError (never raises)."""
    if isinstance(exc, ActionError):
        if not exc.api:
            exc.api = api
        return exc
    code = code_of(exc)
    message = f"{api}: {code}: {_message(exc)}"
    if isinstance(exc, _CONFLICT):
        return ConflictError(message, api=api, code=code)
    if isinstance(exc, _TRANSIENT) or isinstance(exc, (TimeoutError, concurrent.futures.TimeoutError)):
        return TransientError(message, api=api, code=code)
    # A bare gRPC error that escaped the GAPIC wrapper: judge by its status code.
    status = getattr(exc, "code", None)
    if callable(status):
        try:
            name = status().name
        except Exception:  # noqa: BLE001 - an odd error object is still an error
            name = ""
        if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "UNKNOWN"):
            return TransientError(message, api=api, code=name)
        if name in ("ABORTED", "FAILED_PRECONDITION"):
            return ConflictError(message, api=api, code=name)
    return PermanentError(message, api=api, code=code)


def guarded(api: str, fn: Callable[[], T]) -> T:
    """Run one client call; any exception leaves as a translated ActionError."""
    try:
        return fn()
    except ActionError:
        raise
    except Exception as exc:  # noqa: BLE001 - everything from the client is translated
        raise translate(exc, api) from exc


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    # One line, bounded: these end up in decision records and log lines.
    return " ".join(str(text).split())[:300]
