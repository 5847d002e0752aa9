"""The one retry helper and the google.api_core error translation used by every Cloud adapter.
(No network: kept beside the Cloud Run tests because the controller is their main user.)"""
from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest
from google.api_core import exceptions as gexc

from daemon.clock import VirtualClock
from daemon.google_errors import translate
from daemon.ports import ConflictError, ManualChangeError, PermanentError, TransientError
from daemon.retry import backoff_s, call_with_retry


@pytest.mark.parametrize("exc,kind,code", [
    (gexc.ServiceUnavailable("x"), TransientError, "UNAVAILABLE"),
    (gexc.DeadlineExceeded("x"), TransientError, "DEADLINE_EXCEEDED"),
    (gexc.ResourceExhausted("x"), TransientError, "RESOURCE_EXHAUSTED"),
    (gexc.TooManyRequests("x"), TransientError, "RESOURCE_EXHAUSTED"),
    (gexc.InternalServerError("x"), TransientError, "INTERNAL"),
    (gexc.RetryError("gave up", cause=None), TransientError, "RETRY_ERROR"),
    (TimeoutError(), TransientError, "DEADLINE_EXCEEDED"),
    (gexc.Aborted("x"), ConflictError, "ABORTED"),
    (gexc.FailedPrecondition("x"), ConflictError, "FAILED_PRECONDITION"),
    (gexc.PermissionDenied("x"), PermanentError, "PERMISSION_DENIED"),
    (gexc.NotFound("x"), PermanentError, "NOT_FOUND"),
    (gexc.InvalidArgument("x"), PermanentError, "INVALID_ARGUMENT"),
    (gexc.Unauthenticated("x"), PermanentError, "UNAUTHENTICATED"),
    (ValueError("odd"), PermanentError, "VALUEERROR"),
])
def test_translation(exc, kind, code):
    error = translate(exc, "run.GetService")
    assert type(error) is kind
    assert error.code == code and error.api == "run.GetService"
    assert "\n" not in str(error)


def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 3, 1, tzinfo=timezone.utc))


def flaky(failures: list[BaseException], result: str = "ok"):
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if failures:
            raise failures.pop(0)
        return result
    return fn, calls


def test_retries_transient_then_succeeds_and_reports_each_error():
    seen: list[tuple[str, str]] = []
    fn, calls = flaky([gexc.ServiceUnavailable("a"), gexc.ResourceExhausted("b")])
    c = clock()
    assert call_with_retry(fn, api="x", clock=c, rng=random.Random(1), on_error=lambda a, k: seen.append((a, k))) == "ok"
    assert calls["n"] == 3
    assert seen == [("x", "UNAVAILABLE"), ("x", "RESOURCE_EXHAUSTED")]
    assert c.now() > datetime(2026, 3, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("exc,kind", [(gexc.Aborted("a"), ConflictError), (gexc.NotFound("n"), PermanentError),
                                      (ManualChangeError("m", observed_canary_percent=3), ManualChangeError)])
def test_non_transient_errors_are_not_retried(exc, kind):
    seen: list[tuple[str, str]] = []
    fn, calls = flaky([exc])
    with pytest.raises(kind):
        call_with_retry(fn, api="x", clock=clock(), rng=random.Random(1), on_error=lambda a, k: seen.append((a, k)))
    assert calls["n"] == 1
    assert seen == ([] if kind is ManualChangeError else [("x", exc.grpc_status_code.name)])


def test_full_jitter_is_bounded_and_seeded():
    rng_a, rng_b = random.Random(7), random.Random(7)
    delays = [backoff_s(n, base_s=0.5, cap_s=8.0, rng=rng_a) for n in range(1, 12)]
    assert delays == [backoff_s(n, base_s=0.5, cap_s=8.0, rng=rng_b) for n in range(1, 12)]
    for n, delay in enumerate(delays, start=1):
        assert 0 <= delay <= min(8.0, 0.5 * 2 ** (n - 1))
    # Jitter means the delays are not the deterministic exponential ladder.
    assert any(delay < 0.9 * min(8.0, 0.5 * 2 ** (n - 1)) for n, delay in enumerate(delays, start=1))


def test_budget_and_attempts_bound_the_retries():
    c = clock()
    start = c.now()
    fn, calls = flaky([gexc.ServiceUnavailable("u")] * 10_000)
    with pytest.raises(TransientError):
        call_with_retry(fn, api="x", clock=c, rng=random.Random(3), budget_s=20, max_attempts=10_000, base_s=2)
    assert (c.now() - start).total_seconds() <= 20
    fn, calls = flaky([gexc.ServiceUnavailable("u")] * 10)
    with pytest.raises(TransientError):
        call_with_retry(fn, api="x", clock=clock(), rng=random.Random(3), budget_s=1e9, max_attempts=3)
    assert calls["n"] == 3
