"""CloudLoggingErrorLogs with the real LoggingServiceV2Client against the Logging fake: the query,
newest-first capture up to a limit across pages, pattern grouping, and faults as data."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from actions.error_logs import CloudLoggingErrorLogs, group, normalise
from daemon.core.commands import CaptureErrorLogs
from tests.fakes.logging_fake import parse_filter

pytestmark = pytest.mark.integration

REV, OTHER = "checkout-00042-vux", "checkout-00041-mib"


def capture_cmd(limit: int = 100, since_s: float = 900) -> CaptureErrorLogs:
    return CaptureErrorLogs(service="checkout", project="shop", location="europe-west1", revision=REV,
                            since_s=since_s, limit=limit, decision_id="d1")


@pytest.fixture
def logs(logging_fake, virtual_clock):
    now = virtual_clock.now()

    def add(i: int, message: str, severity: str = "ERROR", revision: str = REV, age_s: float = 60, **kw):
        logging_fake.add_entry(project="shop", service="checkout", revision=revision, severity=severity,
                               message=message, timestamp=now - timedelta(seconds=age_s - i * 0.01), **kw)

    for i in range(30):
        add(i, f'payment 4f1c9d2e-1a2b-4c3d-8e9f-0123456789ab failed: upstream "psp-{i}" returned 503 after {i * 7}ms')
    for i in range(12):
        add(100 + i, f"KeyError: 'order_{i}'\nTraceback (most recent call last):\n  File x.py line {i}", json_message=True)
    for i in range(5):
        add(200 + i, "", http_status=500, http_url="/pay")
    add(300, "connection reset by peer 0xdeadbeef")
    add(301, "noise at INFO", severity="INFO")
    add(302, "error on the baseline", revision=OTHER)
    add(303, "old error, outside the window", age_s=3600)
    return logging_fake


@pytest.fixture
def source(logging_client, virtual_clock, rng):
    errors: list[tuple[str, str]] = []
    src = CloudLoggingErrorLogs(logging_client, clock=virtual_clock, rng=rng, top_n=3,
                                on_error=lambda api, code: errors.append((api, code)))
    src.errors = errors  # type: ignore[attr-defined]
    return src


def test_query_is_what_the_real_api_expects(source, virtual_clock):
    query = source.query(capture_cmd(since_s=600))
    fields = {(f, op): v for f, op, v in parse_filter(query)}
    assert fields[("resource.type", "=")] == "cloud_run_revision"
    assert fields[("resource.labels.revision_name", "=")] == REV
    assert fields[("severity", ">=")] == "ERROR"
    assert fields[("timestamp", ">=")] == "2026-03-01T11:50:00Z"


def test_capture_groups_top_patterns(logs, source):
    captured = source.capture(capture_cmd())
    assert captured.error == ""
    assert captured.total == 30 + 12 + 5 + 1  # INFO, other revision and old entries excluded
    assert [p.count for p in captured.patterns] == [30, 12, 5]
    top = captured.patterns[0]
    assert top.pattern == 'payment <uuid> failed: upstream "<str>" returned <n> after <n>'
    assert top.example.startswith("payment 4f1c9d2e")
    assert captured.patterns[1].pattern == "KeyError: '<str>'"
    assert captured.patterns[2].pattern == "HTTP <n> GET /pay"
    request = logs.requests.of("ListLogEntries")[0]
    assert request.order_by == "timestamp desc" and list(request.resource_names) == ["projects/shop"]
    assert captured.to_json()["patterns"][0]["count"] == 30


def test_capture_stops_at_the_limit_newest_first(logs, source):
    captured = source.capture(capture_cmd(limit=7))
    assert captured.total == 7
    # Newest first: the last lines written (the 0xdeadbeef one and the HTTP 500s) come first.
    assert {p.pattern for p in captured.patterns} == {"connection reset by peer <hex>", "HTTP <n> GET /pay",
                                                      "KeyError: '<str>'"}


def test_capture_follows_pages(logs, source):
    captured = source.capture(capture_cmd(limit=2000))
    assert captured.total == 48
    assert len(logs.requests.of("ListLogEntries")) == 1  # page_size covers it
    source2 = CloudLoggingErrorLogs(source._client, clock=source._clock, rng=source._rng)
    logs.requests.entries.clear()
    assert source2.capture(capture_cmd(limit=25)).total == 25
    assert logs.requests.of("ListLogEntries")[0].page_size == 25


@pytest.mark.parametrize("code", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED",
                                  "PERMISSION_DENIED", "NOT_FOUND", "INVALID_ARGUMENT"])
def test_faults_become_data_not_exceptions(logs, source, code):
    logs.faults.inject("ListLogEntries", code, times=-1)
    captured = source.capture(capture_cmd())
    assert captured.total == 0 and captured.patterns == ()
    assert code in captured.error
    assert source.errors and all(c == code for _, c in source.errors)


def test_one_transient_fault_is_retried(logs, source):
    logs.faults.inject("ListLogEntries", "UNAVAILABLE", times=1)
    captured = source.capture(capture_cmd())
    assert captured.error == "" and captured.total == 48


def test_slow_logging_gives_up_quickly(logs, logging_client, virtual_clock, rng):
    src = CloudLoggingErrorLogs(logging_client, clock=virtual_clock, rng=rng, call_timeout_s=0.3, max_attempts=1)
    logs.faults.inject("ListLogEntries", None, delay_s=1.0)
    captured = src.capture(capture_cmd())
    assert "DEADLINE_EXCEEDED" in captured.error


def test_normalise_and_group():
    assert normalise("user 12 got 0xFF and id deadbeef00 at 3.5s") == "user <n> got <hex> and id <hex> at <n>"
    assert normalise("  \n") == ""
    patterns = group(["a 1", "b", "a 2", "b", "a 3"], top_n=1)
    assert [(p.pattern, p.count, p.example) for p in patterns] == [("a <n>", 3, "a 1")]


SECRET_LINES = [
    ("GET /v1/pay?api_key=sk9Secret1&cur=eur failed: 502", {}),
    ("login failed for postgres://app:hunter2hunter@db.internal/orders", {}),
    ("upstream 401: Authorization: Bearer ya29.a0AfH6SMBx-leaked_token", {"json_message": True}),
    ("config loaded password=correct-horse-battery from env", {"json_message": True}),
    ("", {"http_status": 500, "http_url": "/cb?token=tok-7781-zz&access_token=AT.998877.xyz"}),
    ("gcp key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY rejected", {}),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw\n-----END PRIVATE KEY-----", {}),
]
SECRETS = ["sk9Secret1", "hunter2hunter", "ya29.a0AfH6SMBx", "leaked_token", "correct-horse-battery", "tok-7781-zz",
           "AT.998877.xyz", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw"]


def test_credentials_in_error_logs_never_leave_the_capture(logging_fake, logging_client, virtual_clock, rng):
    """Text, structured and request-log entries carrying credentials: the captured patterns and
    examples (what the journal, notifications and reports get) hold none of them."""
    now = virtual_clock.now()
    for i, (message, kw) in enumerate(SECRET_LINES):
        logging_fake.add_entry(project="shop", service="checkout", revision=REV, severity="ERROR",
                               message=message, timestamp=now - timedelta(seconds=60 - i), **kw)
    src = CloudLoggingErrorLogs(logging_client, clock=virtual_clock, rng=rng, top_n=20)
    captured = src.capture(capture_cmd())
    assert captured.total == len(SECRET_LINES) and len(captured.patterns) == len(SECRET_LINES)
    text = json.dumps(captured.to_json())
    assert [s for s in SECRETS if s in text] == []
    assert "[REDACTED]" in text and "GET /v1/pay?api_key=" in text and "postgres://app:" in text
