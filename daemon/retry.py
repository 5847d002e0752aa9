"""The one retry helper: full-jitter exponential backoff within a bounded time budget.

Every adapter that calls Google (Cloud Run, Logging, Pub/Sub notifications, Cloud Monitoring, the
Pub/Sub source's reconnects) retries through `call_with_retry` or `backoff_s`, so the policy lives in
one place: here, below `actions/` and `daemon/adapters/`, which must not import each other. It sleeps
only through the `Clock` it is given (`daemon.ports.Clock`), so tests and the sandbox drive it with a
`VirtualClock` and never wait; the jitter comes from the seeded `random.Random` passed in, so a
replay backs off identically.

Only `TransientError` is retried. `ConflictError`, `ManualChangeError` and `PermanentError` leave at
once: a conflict needs a re-read and a re-decision by the caller, not a blind retry. Raw
google.api_core exceptions raised by `fn` are translated first (`daemon.google_errors.translate`).
"""
from __future__ import annotations

import random
from datetime import timedelta
from typing import Callable, NoReturn, TypeVar

from daemon.google_errors import ErrorHook, translate
from daemon.ports import ActionError, Clock, ManualChangeError, TransientError

T = TypeVar("T")

DEFAULT_BUDGET_S = 60.0
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_BASE_S = 0.5
DEFAULT_CAP_S = 16.0


def backoff_s(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))] for the attempt that just failed."""
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    return rng.uniform(0.0, ceiling)


def call_with_retry(fn: Callable[[], T], *, api: str, clock: Clock, rng: random.Random,
                    budget_s: float = DEFAULT_BUDGET_S, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                    base_s: float = DEFAULT_BASE_S, cap_s: float = DEFAULT_CAP_S,
                    on_error: ErrorHook | None = None) -> T:
    """Call `fn()` until it succeeds, a non-transient error occurs, `max_attempts` calls have been
    made, or the next sleep would pass `budget_s` seconds (clock time) since the first call.

    `on_error(api, code)` is told about every failed attempt (the Cloud API error counter); a
    ManualChangeError is not a Cloud API error and is not reported. The last error is re-raised,
    always as an `ActionError`.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    started = clock.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - translated, reported, then retried or re-raised
            error = translate(exc, api)
            if on_error is not None and not isinstance(error, ManualChangeError):
                on_error(error.api or api, error.code or "UNKNOWN")
            if not isinstance(error, TransientError) or attempt >= max_attempts:
                _reraise(error, exc)
            delay = backoff_s(attempt, base_s=base_s, cap_s=cap_s, rng=rng)
            elapsed = clock.monotonic() - started
            if elapsed + delay > budget_s:
                _reraise(error, exc)
            clock.sleep_until(clock.now() + timedelta(seconds=delay))


def _reraise(error: ActionError, original: BaseException) -> NoReturn:
    if error is original:
        raise error
    raise error from original
