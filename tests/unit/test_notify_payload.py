"""Notification payloads (`actions.notify`, both notifiers): credentials redacted and free text
capped, whatever the decision quotes."""
from __future__ import annotations

import json

from actions.notify import MAX_TEXT_CHARS, LogNotifier, encode, notification_payload
from daemon.core.commands import Notify


def rollback(reason: str, example: str) -> Notify:
    return Notify(service="checkout", severity="ERROR", subject="checkout rolled back",
                  decision={"action": "rollback", "decision_id": "d1", "reason": reason,
                            "error_logs": {"patterns": [{"count": 2, "pattern": "x", "example": example}]}})


def test_payload_is_redacted_and_capped() -> None:
    command = rollback("aborted by sre@example.com (password=hunter22hunter) " + "y" * 1_000_000,
                       "GET /pay?api_key=sk9Secret1 -> 500")
    payload = notification_payload(command)
    reason = payload["decision"]["reason"]
    assert len(reason) < MAX_TEXT_CHARS + 100 and reason.endswith("more characters]")
    data = encode(command).decode()
    assert len(data) < 2 * MAX_TEXT_CHARS
    for secret in ("hunter22hunter", "sk9Secret1"):
        assert secret not in data
    assert json.loads(data)["decision"]["error_logs"]["patterns"][0]["example"] == "GET /pay?api_key=[REDACTED] -> 500"


def test_log_notifier_line_is_redacted() -> None:
    lines: list[dict] = []
    LogNotifier(sink=lines.append).notify(rollback("token=tok-1234567890", "ok"))
    assert "tok-1234567890" not in json.dumps(lines)
