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

    def __init__(self, *, dead_letter: bool = False, ordering: bool = True) -> None:
        self.ordering = ordering
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
                                   ordering=self.ordering, dead_letter_topic=self.dead_letter,
                                   max_delivery_attempts=5)

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

    def unacked_on_server(self, tries: int = 3) -> list[bytes]:
        """`_unacked_once`, repeated while empty: the emulator's seek occasionally restores nothing."""
        for _ in range(tries):
            found = self._unacked_once()
            if found:
                return found
        return []

    def _unacked_once(self) -> list[bytes]:
        """Data of every message the server still counts as unacknowledged (leases are reset).

        Emulator caveats, checked by hand: use a subscription without message ordering, and expect
        only unacked messages published after the last acked one (an older unacked message was
        not restored by the seek)."""
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
def unordered_bed(pubsub_emulator: str) -> Iterator[Bed]:
    b = Bed(ordering=False)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def dlq_bed(pubsub_emulator: str) -> Iterator[Bed]:
    b = Bed(dead_letter=True, ordering=False)
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


def test_ack_only_after_handle_returns(unordered_bed: Bed) -> None:
    bed = unordered_bed
    gate = threading.Event()
    entered = threading.Event()

    def behaviour(data: bytes, attempt: int) -> None:
        if data == b"slow":
            entered.set()
            gate.wait(15)

    handle = Recorder(behaviour)
    source = bed.source(handle)
    # "slow" goes last: the emulator's snapshot did not keep an unacked message published before
    # later acked ones (seek then delivered nothing), which would make this check vacuous.
    bed.publish_raw(b"quick-1")
    bed.publish_raw(b"quick-2")
    wait_for(lambda: source.stats.acked == 2, 10, "two quick messages acked")
    time.sleep(0.5)  # acks leave in ~0.1 s batches as unary calls: let them reach the server
    bed.publish_raw(b"slow")
    wait_for(entered.is_set, 10, "handle to start on the slow message")
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


def test_unparseable_message_is_handled_once_and_acked(unordered_bed: Bed) -> None:
    bed = unordered_bed
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


class Proxy:
    """A loopback TCP relay to the emulator that the test can cut and restore (an outage without
    killing the shared emulator), or blackhole (a partition: bytes vanish, nobody sees a FIN).

    Each relayed connection is a pair of sockets with one pump thread per direction. When one
    direction ends, both sockets are shut down before they are closed: a bare close() does not wake
    the other pump blocked in recv(), and the kernel keeps that socket open (no FIN to the emulator)
    for as long as it is blocked, which left half-open connections to the emulator behind."""

    def __init__(self, target: str) -> None:
        import socket
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._socket_mod = socket
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._blackhole = threading.Event()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: Any = None
        self.up()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> None:
        socket = self._socket_mod
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and close every relayed one on both sides (FIN to both ends)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:  # close() alone does not wake a thread blocked in accept(): the port would stay open
                listener.shutdown(self._socket_mod.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        self._cut_all()

    def blackhole(self) -> None:
        """From now on relayed bytes are dropped in both directions; connections stay open."""
        self._blackhole.set()

    def heal(self) -> None:
        """End the partition. The connections that lived through it are closed on both sides, as
        TCP does once the peers' retransmitted FIN/RST get through; new ones are relayed again."""
        self._cut_all()
        self._blackhole.clear()

    def _cut_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            _shut(conn, self._socket_mod.SHUT_RDWR)

    def _accept(self, listener: Any) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._socket_mod.create_connection(self._target)
            except OSError:
                _shut(client, self._socket_mod.SHUT_RDWR)
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                if not self._blackhole.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _shut(s, self._socket_mod.SHUT_RDWR)


def _shut(sock: Any, how: int) -> None:
    """shutdown() then close(), ignoring a socket that is already gone."""
    try:
        sock.shutdown(how)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


@pytest.mark.parametrize("outage", ["cut", "blackhole"])
def test_outage_mid_stream_is_seen_by_the_probe_and_the_source_recovers(bed: Bed, pubsub_emulator: str,
                                                                       outage: str) -> None:
    """A cut connection (both ends see it close) or a blackholed one (half-open: no FIN, no RST, the
    library sees no error at all) makes the source not ready within a probe interval plus a probe
    timeout; once the network is back, a fresh client consumes again.

    Emulator caveat (cloud-pubsub-emulator 0.8.20, checked without any relay): a StreamingPull
    that ends, whether cancelled or its connection closed, stays registered on the subscription
    (its cancel handler fails with NoSuchMethodError, see the emulator log), and the emulator
    keeps leasing it a share of new messages, which only come back after the ack deadline. A
    ghost is created by the outage itself, so which message after recovery reaches the new stream
    first is the emulator's choice: publish until one does."""
    import grpc
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    proxy = Proxy(pubsub_emulator)
    # Short gRPC reconnect backoff so the test does not wait on the channel's default (1 s and up).
    options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
               ("grpc.max_reconnect_backoff_ms", 300)]

    def factory() -> pubsub_v1.SubscriberClient:
        channel = grpc.insecure_channel(proxy.address, options=options)
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))

    handle = Recorder()
    source = PubSubEventSource(factory, bed.subscription, handle=handle, clock=SystemClock(),
                               rng=random.Random(5), backoff_base_s=0.05, backoff_cap_s=0.3,
                               probe_interval_s=0.2, probe_timeout_s=1.0)
    bed.sources.append(source)
    source.start()
    try:
        wait_for(lambda: source.ready, 10, "subscribed through the proxy")
        bed.publish_raw(b"before")
        wait_for(lambda: source.stats.acked == 1, 10, "a message before the outage")
        time.sleep(0.3)  # acks leave in ~0.1 s batches as unary calls: let this one reach the server

        if outage == "cut":
            proxy.down()
        else:
            proxy.blackhole()
        # The client library retries the stream itself and its future never fails (through a
        # blackhole it does not even see an error): only the probe can tell.
        wait_for(lambda: not source.ready, 10, "the probe to notice the outage")
        reason = source.status()[1]
        if outage == "cut":
            assert "UNAVAILABLE" in reason or "DEADLINE_EXCEEDED" in reason, reason
        else:
            assert "DEADLINE_EXCEEDED" in reason, reason
        time.sleep(0.5)  # reconnect attempts fail meanwhile
        assert not source.ready

        if outage == "cut":
            proxy.up()
        else:
            proxy.heal()
        wait_for(lambda: source.ready, 15, "ready again once the server answers")
        sent: list[bytes] = []

        def one_delivered() -> bool:
            if not any(handle.count(data) for data in sent):
                sent.append(f"after-{len(sent)}".encode())
                bed.publish_raw(sent[-1])
                time.sleep(0.3)
            return any(handle.count(data) for data in sent)

        wait_for(one_delivered, 30, "a message published after recovery to reach handle")
        assert handle.count(b"before") == 1 and source.stats.connects >= 2
    finally:
        source.stop()
        proxy.down()
