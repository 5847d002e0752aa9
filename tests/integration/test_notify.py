"""PubSubNotifier through the real Pub/Sub emulator (started by the `pubsub_emulator` fixture), and
LogNotifier's structured lines."""
from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from google.cloud import pubsub_v1

from actions.notify import LogNotifier, PubSubNotifier, make_publisher
from daemon.core.commands import Notify
from daemon.ports import PermanentError

pytestmark = pytest.mark.integration

PROJECT = "rollbackd-test"


def rollback(service: str, n: int = 0) -> Notify:
    return Notify(service=service, severity="ERROR", subject=f"{service} rolled back ({n})",
                  decision={"action": "rollback", "decision_id": f"d{n}", "canary": f"{service}-00042-vux",
                            "reason": "5xx ratio 9.1% > 2%", "evidence": {"error_ratio": 0.091}})


@pytest.fixture
def topic_and_subscription(pubsub_emulator):
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    suffix = uuid.uuid4().hex[:8]
    topic = publisher.topic_path(PROJECT, f"notifications-{suffix}")
    subscription = subscriber.subscription_path(PROJECT, f"notifications-{suffix}")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(request={"name": subscription, "topic": topic,
                                            "enable_message_ordering": True})
    yield topic, subscription, subscriber
    subscriber.close()


def pull_all(subscriber, subscription: str, want: int, timeout_s: float = 20.0) -> list:
    received: list = []
    deadline = time.monotonic() + timeout_s
    while len(received) < want and time.monotonic() < deadline:
        response = subscriber.pull(request={"subscription": subscription, "max_messages": 100}, timeout=5)
        if response.received_messages:
            subscriber.acknowledge(request={"subscription": subscription,
                                            "ack_ids": [m.ack_id for m in response.received_messages]})
        received.extend(m.message for m in response.received_messages)
    return received


def test_notifications_arrive_with_attributes_and_order(topic_and_subscription, virtual_clock, rng):
    topic, subscription, subscriber = topic_and_subscription
    notifier = PubSubNotifier(make_publisher(), topic, clock=virtual_clock, rng=rng)
    assert notifier.ordered
    for n in range(5):
        notifier.notify(rollback("checkout", n))
    notifier.notify(Notify(service="cart", severity="INFO", subject="cart promoted",
                           decision={"action": "promote", "decision_id": "c1"}))
    assert len(notifier.published) == 6

    messages = pull_all(subscriber, subscription, 6)
    assert len(messages) == 6
    checkout = [m for m in messages if m.ordering_key == "checkout"]
    assert [json.loads(m.data)["decision"]["decision_id"] for m in checkout] == [f"d{n}" for n in range(5)]
    first = checkout[0]
    assert dict(first.attributes) == {"service": "checkout", "action": "rollback", "severity": "ERROR"}
    body = json.loads(first.data)
    assert body["schema"] == "rollbackd.notification/v1" and body["subject"] == "checkout rolled back (0)"
    assert body["decision"]["evidence"] == {"error_ratio": 0.091}
    cart = [m for m in messages if m.ordering_key == "cart"]
    assert dict(cart[0].attributes)["action"] == "promote"


def test_missing_topic_is_a_permanent_error(pubsub_emulator, virtual_clock, rng):
    notifier = PubSubNotifier(make_publisher(), f"projects/{PROJECT}/topics/no-such-{uuid.uuid4().hex[:6]}",
                              clock=virtual_clock, rng=rng, timeout_s=10)
    with pytest.raises(PermanentError) as info:
        notifier.notify(rollback("checkout"))
    assert info.value.code == "NOT_FOUND" and info.value.api == "pubsub.Publish"
    assert notifier.published == []


def test_missing_emulator_fails_under_ci_and_skips_elsewhere(monkeypatch):
    from tests.integration.conftest import _missing
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        _missing("not installed")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        _missing("not installed")


def test_log_notifier_writes_structured_lines():
    stream = io.StringIO()
    notifier = LogNotifier(stream)
    notifier.notify(rollback("checkout", 3))
    line = json.loads(stream.getvalue().strip())
    assert line["severity"] == "ERROR"
    assert line["logging.googleapis.com/labels"] == {"service": "checkout", "action": "rollback"}
    assert line["notification"]["decision"]["decision_id"] == "d3"
    records: list[dict] = []
    LogNotifier(records.append).notify(rollback("cart", 1))
    assert records[0]["notification"]["service"] == "cart"
