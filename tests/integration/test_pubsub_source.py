"""PubSubEventSource against the real Pub/Sub emulator, with the real google-cloud-pubsub clients.

What is checked on the server, not on our own counters: whether a message is still unacknowledged is
read back by snapshotting the subscription and seeking it to that snapshot, which makes every
unacked message deliverable again to a synchronous Pull.
"""
from __future__ import annotations

import itertools
import random
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from daemon.adapters.pubsub_source import (PubSubEventSource, ensure_subscription, make_publisher,
                                           make_subscriber, publish_events)
from daemon.clock import SystemClock
from daemon.core.events import Ignored, Rejected
from daemon.core.intake import parse_message

PROJECT = "rollbackd-test"
_names = itertools.count()


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


class Bed:
    """A fresh topic and subscription on the emulator, a publisher and an admin subscriber client."""

    def __init__(self, *, dead_letter: bool = False) -> None:
        n = next(_names)
        stamp = int(time.monotonic() * 1000)
        self.topic = f"projects/{PROJECT}/topics/events-{stamp}-{n}"
        self.subscription = f"projects/{PROJECT}/subscriptions/rollbackd-{stamp}-{n}"
        self.dead_letter = f"projects/{PROJECT}/topics/dead-{stamp}-{n}" if dead_letter else None
        self.publisher = make_publisher()
        self.admin = make_subscriber()
        self.sources: list[PubSubEventSource] = []
        self.create()

    def create(self) -> Any:
        return ensure_subscription(self.publisher, self.admin, self.topic, self.subscription,
                                   dead_letter_topic=self.dead_letter, max_delivery_attempts=5)

    def source(self, handle: Callable[..., None], **kwargs: Any) -> PubSubEventSource:
        settings = dict(backoff_base_s=0.05, backoff_cap_s=0.3, probe_interval_s=0.2, probe_timeout_s=2.0)
        settings.update(kwargs)
        source = PubSubEventSource(make_subscriber, self.subscription, handle=handle, clock=SystemClock(),
                                   rng=random.Random(7), **settings)
        self.sources.append(source)
        source.start()
        wait_for(lambda: source.ready, 10, "the source to subscribe")
        return source

    def publish(self, events: list[dict[str, Any]]) -> list[str]:
        return publish_events(self.publisher, self.topic, events)

    def publish_raw(self, data: bytes, key: str = "") -> str:
        return str(self.publisher.publish(self.topic, data, ordering_key=key).result(timeout=10))

    def unacked_on_server(self) -> list[bytes]:
        """Data of every message the server still counts as unacknowledged (leases are reset).

        Only messages without an ordering key show up: after a seek the emulator keeps an ordered
        key blocked behind its old lease, so a Pull returns nothing for it (checked by hand)."""
        snapshot = self.subscription.replace("/subscriptions/", "/snapshots/") + f"-{next(_names)}"
        self.admin.create_snapshot(name=snapshot, subscription=self.subscription)
        try:
            self.admin.seek(request={"subscription": self.subscription, "snapshot": snapshot})
            found: list[bytes] = []
            while True:
                try:
                    response = self.admin.pull(subscription=self.subscription, max_messages=100, timeout=2.0)
                except (gexc.DeadlineExceeded, gexc.RetryError):
                    break
                if not response.received_messages:
                    break
                found += [bytes(m.message.data) for m in response.received_messages]
            return found
        finally:
            self.admin.delete_snapshot(snapshot=snapshot)

    def close(self) -> None:
        for source in self.sources:
            source.stop()
        for call in (lambda: self.admin.delete_subscription(subscription=self.subscription),
                     lambda: self.publisher.delete_topic(topic=self.topic)):
            try:
                call()
            except gexc.GoogleAPICallError:
                pass
        self.admin.close()


@pytest.fixture
def bed(pubsub_emulator: str) -> Iterator[Bed]:
    b = Bed()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def dlq_bed(pubsub_emulator: str) -> Iterator[Bed]:
    b = Bed(dead_letter=True)
    try:
        yield b
    finally:
        b.close()


class Recorder:
    """A handle that records its calls; `behaviour(data, attempt_no)` may block or raise."""

    def __init__(self, behaviour: Callable[[bytes, int], None] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._behaviour = behaviour

    def __call__(self, data: bytes, attributes: dict[str, str], message_id: str, publish_time: datetime,
                 delivery_attempt: int | None) -> None:
        with self._lock:
            seen = sum(1 for c in self.calls if c["message_id"] == message_id)
            self.calls.append({"data": data, "attributes": attributes, "message_id": message_id,
                               "publish_time": publish_time, "delivery_attempt": delivery_attempt})
        if self._behaviour is not None:
            self._behaviour(data, seen + 1)

    def count(self, data: bytes) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c["data"] == data)


def test_ack_only_after_handle_returns(bed: Bed) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def behaviour(data: bytes, attempt: int) -> None:
        if data == b"slow":
            entered.set()
            gate.wait(15)

    handle = Recorder(behaviour)
    source = bed.source(handle)
    bed.publish_raw(b"slow", key="")  # see unacked_on_server: no ordering key on checked messages
    bed.publish_raw(b"quick-1", key="b")
    bed.publish_raw(b"quick-2", key="c")
    wait_for(lambda: entered.is_set() and source.stats.acked == 2, 10, "two quick messages acked")
    time.sleep(0.5)  # acks leave in ~0.1 s batches as unary calls: let them reach the server
    # Close the stream (so the server cannot hand "slow" back to it) while "slow" is still inside
    # handle, and read the server's view: only that message may be unacknowledged.
    source.stop()
    assert entered.is_set() and not gate.is_set()
    assert bed.unacked_on_server() == [b"slow"]
    gate.set()
    call = next(c for c in handle.calls if c["data"] == b"slow")
    assert call["publish_time"].tzinfo is not None and call["message_id"]
    assert call["delivery_attempt"] is None  # no dead-letter policy on this subscription


def test_handle_that_raises_is_nacked_and_redelivered_with_attempt_numbers(dlq_bed: Bed) -> None:
    def behaviour(data: bytes, attempt: int) -> None:
        if data == b"flaky" and attempt <= 2:
            raise OSError("journal disk full")

    handle = Recorder(behaviour)
    source = dlq_bed.source(handle)
    dlq_bed.publish_raw(b"flaky")
    wait_for(lambda: source.stats.acked == 1, 15, "the third delivery to be acked")
    time.sleep(1.0)  # an acked message must not come back
    attempts = [c["delivery_attempt"] for c in handle.calls]
    assert attempts == [1, 2, 3]
    assert len({c["message_id"] for c in handle.calls}) == 1
    assert (source.stats.handle_errors, source.stats.nacked, source.stats.acked) == (2, 2, 1)
    source.stop()
    assert dlq_bed.unacked_on_server() == []


def test_unparseable_message_is_handled_once_and_acked(bed: Bed) -> None:
    outcomes: list[Any] = []
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

    def engine_side(data: bytes, attributes: dict[str, str], message_id: str, publish_time: datetime,
                    delivery_attempt: int | None) -> None:
        # What the lead's handle does with bad input: a Rejected is journaled and counted, and the
        # function returns normally so the message is acked.
        outcomes.append(parse_message(data, attributes, now=now, where=f"pubsub:{message_id}"))

    source = bed.source(engine_side)
    bed.publish_raw(b"\xff\xfe not json at all")
    bed.publish_raw(b'{"type":"deploy"}')
    wait_for(lambda: source.stats.acked == 2, 10, "both bad messages acked")
    time.sleep(1.5)  # a poison loop would redeliver within this time
    assert len(outcomes) == 2 and all(isinstance(o, (Rejected, Ignored)) for o in outcomes)
    assert "not UTF-8" in outcomes[0].reason
    assert source.stats.received == 2 and source.stats.nacked == 0
    source.stop()
    assert bed.unacked_on_server() == []


def test_per_key_order_is_kept_for_100_messages_over_4_keys(bed: Bed) -> None:
    jitter = random.Random(3)
    delays = [jitter.uniform(0, 0.004) for _ in range(100)]

    def behaviour(data: bytes, attempt: int) -> None:
        time.sleep(delays[int(data.split(b'"seq":')[1].split(b",")[0].rstrip(b"}"))])

    handle = Recorder(behaviour)
    source = bed.source(handle, flow_max_messages=20)
    keys = ["checkout", "search", "cart", "payments"]
    events = [{"type": "probe", "service": keys[i % 4], "seq": i} for i in range(100)]
    ids = bed.publish(events)
    assert len(set(ids)) == 100
    wait_for(lambda: source.stats.acked == 100, 15, "100 messages acked")
    import json
    seen: dict[str, list[int]] = {key: [] for key in keys}
    for call in handle.calls:
        body = json.loads(call["data"])
        seen[body["service"]].append(body["seq"])
        assert call["attributes"] == {"type": "probe"}
    for key in keys:
        expected = [i for i in range(100) if keys[i % 4] == key]
        assert seen[key] == expected, f"{key} out of order"
    assert source.stats.nacked == 0


def test_lost_subscription_makes_source_unready_then_it_reconnects(bed: Bed) -> None:
    errors: list[tuple[str, str]] = []
    handle = Recorder()
    source = bed.source(handle, on_error=lambda api, code: errors.append((api, code)))
    assert source.status()[0] is True and bed.subscription in source.status()[1]

    bed.admin.delete_subscription(subscription=bed.subscription)
    wait_for(lambda: not source.ready, 10, "ready to go False")
    ready, reason = source.status()
    assert not ready and "NOT_FOUND" in reason and "NOT_FOUND" in (source.last_error or "")
    assert ("pubsub.StreamingPull", "NOT_FOUND") in errors
    time.sleep(0.5)  # several reconnect attempts fail meanwhile, with backoff
    assert not source.ready

    bed.create()
    wait_for(lambda: source.ready, 10, "the source to reconnect")
    assert source.stats.connects >= 2
    bed.publish_raw(b"after-reconnect", key="checkout")
    wait_for(lambda: handle.count(b"after-reconnect") == 1 and source.stats.acked == 1, 10,
             "a message through the new stream")
    source.stop()
    assert source.status() == (False, "stopped")


def test_unreachable_server_keeps_source_unready_and_stop_is_prompt(pubsub_emulator: str) -> None:
    # A port with nothing listening: GetSubscription fails with UNAVAILABLE on every attempt.
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
    import grpc

    def factory() -> pubsub_v1.SubscriberClient:
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(dead)))

    source = PubSubEventSource(factory, f"projects/{PROJECT}/subscriptions/nowhere", handle=Recorder(),
                               clock=SystemClock(), rng=random.Random(1), backoff_base_s=0.05,
                               backoff_cap_s=0.2, probe_timeout_s=0.5)
    source.start()
    wait_for(lambda: source.last_error is not None, 10, "a connection error")
    ready, reason = source.status()
    assert not ready and "UNAVAILABLE" in reason and "UNAVAILABLE" in (source.last_error or "")
    assert source.stats.connects == 0
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 5.0, "stop() should not wait for the backoff"
    assert source.status() == (False, "stopped")
