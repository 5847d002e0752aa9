"""The Pub/Sub event source: StreamingPull on the events subscription, one `handle()` call per message.

`daemon.bootstrap` builds a `PubSubEventSource` for `rollbackd run` (and for the sandbox when
PUBSUB_EMULATOR_HOST is set); `/readyz` reads its `status()`. `publish_events` is the matching
producer, used by `rollbackd ctl`, the sandbox and the tests; `ensure_subscription` creates the topic
and subscription when they are missing (sandbox, tests, `docs/deploy.md` gives the gcloud commands).

Acknowledgement contract
- `handle(data, attributes, message_id, publish_time, delivery_attempt)` is the engine side: it
  parses, journals, steps and acts. The message is acked only after `handle` returns normally, so
  an ack always means "the decision is journaled and the state is stored".
- If `handle` raises, the message is nacked (redelivered at once) and counted in
  `stats.handle_errors`. Redeliveries and duplicates are harmless: the core deduplicates events.
- A message that can never be parsed is not an exception: `handle` journals it as rejected, counts
  it and returns normally, so it is acked once and never loops.

Dead-letter topic
- What still loops is a message whose `handle` keeps raising (a bug, or the journal disk is full).
  Give the subscription a dead-letter policy (`ensure_subscription(..., dead_letter_topic=...,
  max_delivery_attempts=5)`, or `gcloud pubsub subscriptions update --dead-letter-topic`): after N
  failed deliveries Pub/Sub moves the message to the dead-letter topic, where a human can look at it
  and republish it. The Pub/Sub service agent needs publisher on that topic and subscriber on this
  subscription. With a dead-letter policy set, `delivery_attempt` (1, 2, ...) is passed to `handle`
  so the journal can record how often a message came back; without one it is None.

Ordering
- Events are published with ordering key = service, and the subscription has message ordering on,
  so one service's events reach `handle` in publish order and one at a time; different services run
  in parallel on the client's callback threads. After a nack the server redelivers that message and
  the key's later ones; a later message the client already held may run first, once. The core's
  deduplication makes that repeat harmless.

Reconnecting
- A supervisor thread checks the subscription (`GetSubscription`), opens the stream and then waits
  for the stream to end, probing the subscription every `probe_interval_s`. When the stream fails
  (subscription deleted: NotFound; permissions; ...) or a probe fails, it drops the client and
  reconnects with full-jitter exponential backoff (`daemon.retry.backoff_s`). The probe matters:
  while the server is unreachable the client library retries the stream by itself and the future
  never fails, and a half-open connection (a partition that delivers no FIN or RST) shows no error
  at all. A probe on the same channel fails within `probe_timeout_s` in both cases, so an outage is
  seen within `probe_interval_s + probe_timeout_s` and `ready` is False (with `last_error`) from
  then until a fresh client has the subscription again.
- A dropped client is torn down on its own thread, channel first. Its library keeps re-opening
  the stream until the channel is closed (it was seen to open a new stream on the old channel as
  soon as the network came back), and closing can take ~10 s: the library's re-open throttle
  (5 per 10 s) sleeps on the gRPC callback thread, and `close()` waits for it. So the supervisor
  neither waits for that nor lets the old client reconnect: the new client connects at once.
- Messages the server handed to a stream that then broke come back after the subscription's ack
  deadline (`ensure_subscription(ack_deadline_s=60)`): an outage delays them, never loses them.
- All waiting goes through the `clock` and an Event, so `stop()` is prompt. Pass `SystemClock`:
  backoff against a network is wall-clock business even in the sandbox (a VirtualClock without a
  speed makes every sleep instant, i.e. a busy loop).
"""
from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Mapping

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from daemon.google_errors import code_of
from daemon.ports import Clock, MessageHandler
from daemon.retry import backoff_s

LOG = logging.getLogger("rollbackd.pubsub")

API = "pubsub.StreamingPull"


@dataclass
class SourceStats:
    """Counters for telemetry and tests. Written under the source's lock (callbacks run on several
    threads); reading a single int needs no lock."""

    received: int = 0
    acked: int = 0
    nacked: int = 0
    handle_errors: int = 0
    connects: int = 0
    disconnects: int = 0


class PubSubEventSource:
    """StreamingPull with flow control; ack after `handle` returns, nack if it raises; reconnects."""

    def __init__(self, subscriber_client_factory: Callable[[], Any], subscription_path: str, *,
                 handle: MessageHandler, clock: Clock, rng: random.Random, flow_max_messages: int = 100,
                 flow_max_bytes: int = 10 * 1024 * 1024,
                 on_error: Callable[[str, str], None] | None = None,
                 backoff_base_s: float = 1.0, backoff_cap_s: float = 60.0, stable_after_s: float = 30.0,
                 probe_interval_s: float = 15.0, probe_timeout_s: float = 10.0) -> None:
        self._factory = subscriber_client_factory
        self.subscription_path = subscription_path
        self._handle = handle
        self._clock = clock
        self._rng = rng
        self._flow = pubsub_v1.types.FlowControl(max_messages=flow_max_messages, max_bytes=flow_max_bytes)
        self._on_error = on_error
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stable_after_s = stable_after_s
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.stats = SourceStats()
        self._lock = threading.Lock()
        self._ready = False
        self._reason = "not started"
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # stop(), or the stream's future finished
        self._thread: threading.Thread | None = None
        self._future: Any = None
        self._client: Any = None

    # --- state ----------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready

    def status(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz."""
        with self._lock:
            return self._ready, self._reason

    def _set(self, ready: bool, reason: str, error: str | None = None) -> None:
        with self._lock:
            self._ready = ready
            self._reason = reason
            if error is not None:
                self.last_error = error

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._set(False, f"connecting to {self.subscription_path}")
        self._thread = threading.Thread(target=self._run, name="pubsub-source", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel the stream and close the client. Messages not yet handed to `handle` are nacked by
        the client library; a `handle` still running finishes, but its ack may be lost (redelivery)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
        self._set(False, "stopped")

    # --- messages -------------------------------------------------------------------------------
    def _on_message(self, message: Any) -> None:
        """Runs on the client library's callback threads."""
        with self._lock:
            self.stats.received += 1
        try:
            self._handle(bytes(message.data), dict(message.attributes), str(message.message_id),
                         message.publish_time, message.delivery_attempt)
        except Exception as exc:  # noqa: BLE001 - nack and count; the message comes back
            with self._lock:
                self.stats.handle_errors += 1
                self.stats.nacked += 1
            LOG.error("handling message %s failed, nacked for redelivery: %s: %s",
                      message.message_id, type(exc).__name__, exc)
            message.nack()
            return
        message.ack()
        with self._lock:
            self.stats.acked += 1

    # --- supervisor -----------------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self._wake.clear()
            connected_at = self._connect()
            if connected_at is not None:
                self._watch()
                if self._stop.is_set():
                    break  # the graceful disconnect below
                self._drop()
                if self._clock.monotonic() - connected_at >= self.stable_after_s:
                    attempt = 0  # it worked for a while: start the backoff over
            attempt += 1
            delay = backoff_s(attempt, base_s=self.backoff_base_s, cap_s=self.backoff_cap_s, rng=self._rng)
            self._clock.sleep_until(self._clock.now() + timedelta(seconds=delay), self._stop)
        self._disconnect()

    def _connect(self) -> float | None:
        """Check the subscription exists, then open the stream. Returns the connect time or None."""
        try:
            self._client = self._factory()
            self._probe()
            future = self._client.subscribe(self.subscription_path, self._on_message, flow_control=self._flow)
        except Exception as exc:  # noqa: BLE001 - every failure here means: back off and retry
            self._failed(exc, "connect")
            self._close_client()
            return None
        self._future = future
        future.add_done_callback(lambda _f: self._wake.set())
        self.stats.connects += 1
        self._set(True, f"subscribed to {self.subscription_path}")
        LOG.info("subscribed to %s", self.subscription_path)
        return self._clock.monotonic()

    def _probe(self) -> None:
        # retry=None: the GAPIC default retries UNAVAILABLE for 60 s whatever the timeout says; this
        # loop has its own backoff and must notice an outage within probe_timeout_s.
        self._client.get_subscription(subscription=self.subscription_path, timeout=self.probe_timeout_s,
                                      retry=None)

    def _watch(self) -> None:
        """Wait for stop or the end of the stream; probe the subscription meanwhile."""
        future = self._future
        while not self._stop.is_set() and not future.done():
            self._clock.sleep_until(self._clock.now() + timedelta(seconds=self.probe_interval_s), self._wake)
            if self._stop.is_set() or future.done():
                break
            try:
                self._probe()
            except Exception as exc:  # noqa: BLE001 - reconnect from scratch
                # The library would resume the stream by itself, but we could not tell a resumed
                # stream from a stalled one. A fresh client and stream is what `ready` means.
                self._failed(exc, "probe")
                return
        if future.done() and not future.cancelled() and not self._stop.is_set():
            exc = future.exception()
            self._failed(exc if exc is not None else RuntimeError("stream ended"), "stream")

    def _failed(self, exc: BaseException, where: str) -> None:
        code = code_of(exc)
        text = f"{where}: {code}: {_first_line(exc)}"
        if self._on_error is not None:
            self._on_error(API, code)
        if self._ready or self.last_error != text:
            LOG.warning("pubsub source not ready (%s): %s", self.subscription_path, text)
        self._set(False, f"disconnected from {self.subscription_path}: {text}", text)

    def _disconnect(self) -> None:
        """Graceful (stop): cancel the stream, let the library nack what it holds, then close."""
        future, self._future = self._future, None
        if future is not None:
            self.stats.disconnects += 1
            _cancel(future, self.probe_timeout_s)
        self._close_client()

    def _drop(self) -> None:
        """After a failure: tear the old client down on its own thread, channel first, and return at
        once (see "Reconnecting"). Its held messages come back after the ack deadline."""
        future, self._future = self._future, None
        client, self._client = self._client, None
        if future is not None:
            self.stats.disconnects += 1
        threading.Thread(target=_teardown, args=(client, future, self.probe_timeout_s),
                         name="pubsub-source-teardown", daemon=True).start()

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken channel may complain; it is closed
                pass


def _cancel(future: Any, timeout_s: float) -> None:
    try:
        future.cancel()
        future.result(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - a cancelled or failed stream: nothing more to learn
        pass


def _teardown(client: Any, future: Any, timeout_s: float) -> None:
    """Close the channel (no new stream can start on it; may block ~10 s, see "Reconnecting"), then
    stop the library's threads."""
    if client is not None:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closing a broken channel may complain; it is closed
            pass
    if future is not None:
        _cancel(future, timeout_s)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# --- topic, subscription and publishing -----------------------------------------------------------
def make_subscriber() -> pubsub_v1.SubscriberClient:
    """A SubscriberClient (honours PUBSUB_EMULATOR_HOST); the default subscriber_client_factory."""
    return pubsub_v1.SubscriberClient()


def make_publisher() -> pubsub_v1.PublisherClient:
    """A PublisherClient with message ordering on (honours PUBSUB_EMULATOR_HOST)."""
    return pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))


def ensure_subscription(publisher: Any, subscriber: Any, topic_path: str, subscription_path: str, *,
                        ordering: bool = True, dead_letter_topic: str | None = None,
                        max_delivery_attempts: int = 5, ack_deadline_s: int = 60) -> Any:
    """Create the topic (and dead-letter topic) and the subscription when missing; return the
    subscription. An existing subscription is returned as it is (its settings are not changed)."""
    for topic in [topic_path] + ([dead_letter_topic] if dead_letter_topic else []):
        try:
            publisher.create_topic(name=topic)
        except gexc.AlreadyExists:
            pass
    request: dict[str, Any] = {"name": subscription_path, "topic": topic_path,
                               "enable_message_ordering": ordering, "ack_deadline_seconds": ack_deadline_s}
    if dead_letter_topic:
        request["dead_letter_policy"] = {"dead_letter_topic": dead_letter_topic,
                                         "max_delivery_attempts": max_delivery_attempts}
    try:
        return subscriber.create_subscription(request=request)
    except gexc.AlreadyExists:
        return subscriber.get_subscription(subscription=subscription_path)


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the same event gives the same bytes."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def publish_events(publisher_client: Any, topic_path: str, events_json: Iterable[Mapping[str, Any]], *,
                   timeout_s: float = 30.0) -> list[str]:
    """Publish native events (ordering key = the event's service) and wait for every server ack.
    Returns the message ids in order. Raises the first publish error (after resuming its key, so
    the caller may publish on that key again)."""
    options = getattr(publisher_client, "publisher_options", None)
    ordered = bool(getattr(options, "enable_message_ordering", False))
    pending: list[tuple[str, Any]] = []
    for event in events_json:
        service = event.get("service")
        key = service if ordered and isinstance(service, str) else ""
        attributes = {"type": str(event.get("type", ""))}
        pending.append((key, publisher_client.publish(topic_path, encode_event(event), ordering_key=key,
                                                      **attributes)))
    ids: list[str] = []
    for key, future in pending:
        try:
            ids.append(str(future.result(timeout=timeout_s)))
        except Exception:
            if key:
                try:  # a failed publish pauses its key; a timeout does not, and resuming it then raises
                    publisher_client.resume_publish(topic_path, key)
                except Exception:  # noqa: BLE001 - the original error is the one worth reporting
                    pass
            raise
    return ids


__all__ = ["PubSubEventSource", "SourceStats", "ensure_subscription", "encode_event", "make_publisher",
           "make_subscriber", "publish_events"]
