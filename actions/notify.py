"""Notifications: tell humans about a decision.

`daemon.bootstrap` chooses `PubSubNotifier` for the live daemon (the configured notification topic)
and `LogNotifier` for the sandbox and dry-run. A notification is the decision record as JSON, with
attributes `service`, `action` and `severity` for subscription filters, and the service as the
ordering key so one service's notifications arrive in order.

The payload is redacted (`daemon.core.redact`) and its free text capped (`MAX_TEXT_CHARS` per string):
a notification quotes reasons and captured error logs, and goes to people and chat rooms.
"""
from __future__ import annotations

import json
import random
import sys
import threading
from typing import IO, Any, Callable, Mapping

from google.cloud import pubsub_v1

from daemon.core.redact import redact, redact_json
from daemon.core.commands import Notify
from daemon.google_errors import ErrorHook, guarded
from daemon.ports import Clock
from daemon.retry import call_with_retry

SCHEMA = "rollbackd.notification/v1"
# How many recent notifications (LogNotifier) or message ids (PubSubNotifier) a notifier keeps for
# tests and debugging. Bounded: a daemon runs for months and sends one notification per finished
# rollout, so an unbounded list grew by ~1-3 KiB per rollout forever. Nothing reads more than the
# last few; the durable record of every notification is the decision log and the journal.
KEEP_RECENT = 100
# Longest string a notification carries (a reason, an error-log example); Pub/Sub refuses messages
# over 10 MB and no reader wants a 1 MB reason. Longer text is cut with a marker.
MAX_TEXT_CHARS = 16_384


def notification_payload(command: Notify) -> dict[str, Any]:
    """The JSON body of a notification (also what LogNotifier writes): capped and redacted."""
    payload = {"schema": SCHEMA, "service": command.service, "severity": command.severity,
               "subject": command.subject, "action": action_of(command), "decision": dict(command.decision)}
    return redact_json(_capped(json.loads(json.dumps(payload, default=str))))


def _capped(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
        return value[:MAX_TEXT_CHARS] + f"… [truncated: {len(value) - MAX_TEXT_CHARS} more characters]"
    if isinstance(value, dict):
        return {k: _capped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_capped(v) for v in value]
    return value


def action_of(command: Notify) -> str:
    action = command.decision.get("action") if isinstance(command.decision, Mapping) else None
    return str(action) if action else "notify"


def encode(command: Notify) -> bytes:
    # sort_keys: the same decision gives the same bytes (replay determinism, dedup by hash).
    return json.dumps(notification_payload(command), sort_keys=True, separators=(",", ":"),
                      default=str).encode("utf-8")


def make_publisher() -> pubsub_v1.PublisherClient:
    """A PublisherClient with message ordering on (honours PUBSUB_EMULATOR_HOST)."""
    return pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))


class PubSubNotifier:
    """`daemon.ports.Notifier` publishing to a Pub/Sub topic and waiting for the server's ack."""

    def __init__(self, publisher_client: pubsub_v1.PublisherClient, topic_path: str, *,
                 clock: Clock | None = None, rng: random.Random | None = None, timeout_s: float = 30.0,
                 retry_budget_s: float = 30.0, on_error: ErrorHook | None = None) -> None:
        self._publisher = publisher_client
        self.topic_path = topic_path
        self._clock = clock
        self._rng = rng or random.Random(0)
        self.timeout_s = timeout_s
        self.retry_budget_s = retry_budget_s
        self._on_error = on_error
        options = getattr(publisher_client, "publisher_options", None)
        self.ordered = bool(getattr(options, "enable_message_ordering", False))
        self.published: list[str] = []  # the last KEEP_RECENT message ids, for tests

    def notify(self, command: Notify) -> None:
        data = encode(command)
        attributes = {"service": redact(command.service), "action": redact(action_of(command)),
                      "severity": command.severity}
        location = command.decision.get("location")
        if isinstance(location, str) and location:  # same-named services in two regions
            attributes["location"] = redact(location)
        key = command.service if self.ordered else ""

        def publish_once() -> str:
            try:
                future = self._publisher.publish(self.topic_path, data, ordering_key=key, **attributes)
                return str(guarded("pubsub.Publish", lambda: future.result(timeout=self.timeout_s)))
            except Exception:
                # A failed publish pauses its ordering key; resume so the next attempt can go out.
                if key:
                    self._publisher.resume_publish(self.topic_path, key)
                raise

        if self._clock is None:
            message_id = guarded("pubsub.Publish", publish_once)
        else:
            message_id = call_with_retry(publish_once, api="pubsub.Publish", clock=self._clock, rng=self._rng,
                                         budget_s=self.retry_budget_s, max_attempts=3, on_error=self._on_error)
        self.published.append(message_id)
        if len(self.published) > KEEP_RECENT:
            del self.published[0]


class LogNotifier:
    """`daemon.ports.Notifier` for the sandbox: one JSON line per notification in Cloud Logging's
    structured format, to a stream or a callable sink (the decision log)."""

    def __init__(self, sink: Callable[[dict[str, Any]], None] | IO[str] | None = None) -> None:
        self._sink = sink if sink is not None else sys.stdout
        self._lock = threading.Lock()
        self.sent: list[dict[str, Any]] = []  # the last KEEP_RECENT records, for tests

    def notify(self, command: Notify) -> None:
        record = {"severity": command.severity if command.severity in ("INFO", "WARNING", "ERROR") else "NOTICE",
                  "message": redact(f"notify {command.service}: {command.subject}"[:MAX_TEXT_CHARS]),
                  "logging.googleapis.com/labels": {"service": command.service, "action": action_of(command)},
                  "notification": notification_payload(command)}
        with self._lock:
            self.sent.append(record)
            if len(self.sent) > KEEP_RECENT:
                del self.sent[0]
            if callable(self._sink):
                self._sink(record)
            else:
                self._sink.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                self._sink.flush()
