"""The decision log's lines: no credential, and never over Cloud Logging's 256 KB entry limit
(a line over it is dropped by the agent, so the decision would be lost from Cloud Logging)."""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone

from daemon.adapters.decision_log import MAX_LINE_BYTES, DecisionLog, fit_line
from daemon.core.decision import Decision

LIMIT = 256 * 1024
AT = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)


def decision(reason: str, **details: object) -> Decision:
    return Decision(decision_id="checkout/rev-2#3", time=AT, service="checkout", canary="rev-2", baseline="rev-1",
                    phase=2, phase_name="25%", action="hold", status_before="phase", status_after="held",
                    canary_percent_before=25, canary_percent_after=25, reason=reason, trigger="command:pause",
                    details=details)


def lines(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line.strip() and "diagnostic" not in line]


def test_a_10_mb_reason_gives_one_line_under_the_limit_with_a_marker() -> None:
    out = io.StringIO()
    log = DecisionLog(out, project="shop")
    log.decision(decision("paused by sre@example.com: " + "x" * 10_000_000, note="y" * 300_000))
    [line] = lines(out)
    assert len(line.encode("utf-8")) < LIMIT
    record = json.loads(line)
    assert record["decision_id"] == "checkout/rev-2#3" and record["action"] == "hold"  # the entry is kept
    assert record["reason"].startswith("paused by sre@example.com: xxx")
    assert "[truncated: " in record["reason"] and "[truncated: " in record["message"]
    dropped = int(record["reason"].rsplit("[truncated: ", 1)[1].split()[0])
    assert len(record["reason"].split("… [truncated")[0]) + dropped == len("paused by sre@example.com: ") + 10_000_000
    labels = record["logging.googleapis.com/labels"]
    assert labels["service"] == "checkout" and labels["action"] == "hold"


def test_multibyte_text_is_measured_in_bytes() -> None:
    out = io.StringIO()
    DecisionLog(out).decision(decision("€" * 200_000))
    [line] = lines(out)
    assert len(line.encode("utf-8")) < LIMIT


def test_a_huge_list_falls_back_to_the_short_fields() -> None:
    message, fields = fit_line("m", {"decision_id": "d", "n": 1, "items": ["abc"] * 100_000})
    assert fields["decision_id"] == "d" and fields["n"] == 1 and "items" not in fields
    assert len(json.dumps({"message": message, **fields})) <= MAX_LINE_BYTES


def test_short_lines_are_unchanged() -> None:
    out = io.StringIO()
    DecisionLog(out).decision(decision("warning level: p99 latency 310ms > normal 300ms"))
    [line] = lines(out)
    assert json.loads(line)["reason"] == "warning level: p99 latency 310ms > normal 300ms"


def test_credentials_are_redacted_in_decisions_errors_and_info() -> None:
    out = io.StringIO()
    log = DecisionLog(out)
    log.decision(decision("paused by sre: rotate password=hunter22hunter", url="https://u:pa55word@db/x"))
    log.error("cannot parse annotation: Authorization: Bearer tok-1234567890", service="checkout")
    log.info("notify", notification={"reason": "api_key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"})
    text = out.getvalue()
    for secret in ("hunter22hunter", "pa55word", "tok-1234567890", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"):
        assert secret not in text
    assert text.count("[REDACTED]") >= 4
