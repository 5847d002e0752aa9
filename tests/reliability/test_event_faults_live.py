"""Event faults on the emulator (issue 5, item 2): the live daemon makes the clean decisions.

The replay variant is tests/reliability/test_event_faults.py; this one feeds the same recordings
(`tests.reliability.event_faults`: three interleaved rollouts, one promoted, two rolled back) to the
production `daemon.bootstrap.run_live` with the real google-cloud clients: every event is published to
the Pub/Sub emulator and reaches the daemon through StreamingPull, the Dispatcher and the Engine;
traffic changes go to the Cloud Run gRPC fake, error logs to the Logging fake. metrics_mode is
"pubsub" (metrics events arrive on Pub/Sub), the policy is the bundled default one, as in replay.

Time. The daemon runs on a `SteppedClock`: virtual time that moves only when the test says so, and
whose `sleep_until` blocks the daemon's tick loop until then. The test walks the recording in
delivery order: for each minute boundary up to the next delivery it moves the clock there and waits
until the daemon's tick at that boundary is done; then it moves the clock to the delivery time,
publishes every event delivered at that instant (ordering key = service) and waits until the daemon
has handled and acknowledged each of them. So each event is received at exactly the virtual time the
recording says, and ticks interleave with events exactly as in replay. Wall-clock latency of the
emulator changes nothing.

What is compared, and why against the clean *replay*. Per service, every decision field except the
trigger (as in the replay test), taken from the daemon's journal. The reference is the clean replay
of the same recording: it is deterministic and cheap, and because the stepping above makes the live
run receive each event at the recording's time, a clean live run gives the very same decisions
(`test_clean_live_run_equals_clean_replay` checks it, so a mismatch under a fault is the fault's
doing, not the harness's). Comparing every variant with one fixed reference is also stronger than
comparing two live runs: both would have to be wrong in the same way to pass.

Faults. The recording-level faults of event_faults.py are delivered as real messages: duplicates
are re-publishes, reordering and skew are publish times, events older than the rollout and events
for unknown services are published as they are. On top, real Pub/Sub redelivery: in the
`redelivery-after-ack-deadline` and `all` variants a seeded fifth of the messages lose their ack
after the daemon has handled them (the handler does all its work, journals the decision and acts,
then fails), so the source nacks and the emulator delivers the same message (same message id)
again; the test checks that it did. (An ack that is lost makes the message come back at the ack
deadline, or at once on a nack: either way the same message id again. The recording's re-publishes
at later virtual times cover the "long after its minute was evaluated" side.)
"""
from __future__ import annotations

import itertools
import json
import random
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest

from daemon.bootstrap import engine_factory
from daemon.clock import VirtualClock
from policies import load_default_policy
from simulations.replay import replay_file
from tests.integration.live_harness import (Fakes, LiveDaemon, Publisher, Topics, audit_replace_service,
                                            incident_notification, journal_records, live_settings, wait_until)
from tests.reliability.event_faults import (FAULTS, MINUTE, TIMELY, Delivery, all_faults, clean_recording)
from tests.reliability.test_event_faults import SKEW_FAULTS, decisions_by_service, write

REPLAY = engine_factory("replay")
LOSE_ACK_P = 0.2  # share of messages whose first ack is lost (real redelivery)
REAL_REDELIVERY = ("redelivery-after-ack-deadline", "all")
HANDLE_TIMEOUT_S = 30.0  # wall time for one instant's messages to be handled (a hang fails, not blocks)


class SteppedClock(VirtualClock):
    """A stopped VirtualClock whose `sleep_until` waits for the test to move time (a plain stopped
    VirtualClock jumps forward on `sleep_until`, which would let the daemon's tick loop run away)."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start, speed=None)
        self._moved = threading.Condition()

    def advance_to(self, when: datetime) -> None:
        super().advance_to(when)
        with self._moved:
            self._moved.notify_all()

    def sleep_until(self, when: datetime, stop: threading.Event | None = None) -> None:
        with self._moved:
            while self.now() < when and not (stop is not None and stop.is_set()):
                self._moved.wait(0.05)  # short: stop() sets an Event, not this condition


class LostAck(Exception):
    """The handler's work is done but the ack never reaches Pub/Sub: the source nacks the message."""


@dataclass
class Tracker:
    """Wraps the Pub/Sub source's handler: knows which published messages (by a `test-seq`
    attribute the daemon ignores) were handled and acknowledged, and loses the first ack of the
    messages in `lose_ack`."""

    handle: Any
    lose_ack: set[str] = field(default_factory=set)
    calls: dict[str, list[str]] = field(default_factory=dict)  # seq -> message id of every delivery
    acked: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, data: bytes, attributes: dict[str, str], message_id: str, publish_time: Any,
                 delivery_attempt: int | None) -> None:
        seq = attributes.get("test-seq", "")
        try:
            self.handle(data, attributes, message_id, publish_time, delivery_attempt)
        finally:
            with self.cond:
                self.calls.setdefault(seq, []).append(message_id)
        with self.cond:
            if seq in self.lose_ack and seq not in self.lost:
                self.lost.add(seq)
                self.cond.notify_all()
                raise LostAck(f"test: the ack of message {message_id} was lost")
            self.acked.add(seq)
            self.cond.notify_all()

    def wait_acked(self, seqs: list[str], timeout_s: float = HANDLE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not self.acked.issuperset(seqs):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(set(seqs) - self.acked)
                    nacked = [seq for seq in missing if seq in self.lost]
                    raise AssertionError(f"messages {missing[:5]} not handled within {timeout_s:.0f}s"
                                         + (f"; {nacked[:5]} were nacked and never came back" if nacked else ""))
                self.cond.wait(left)

    def redelivered(self) -> dict[str, list[str]]:
        """Messages handled more than once under the same Pub/Sub message id: real redeliveries."""
        with self.cond:
            return {seq: ids for seq, ids in self.calls.items() if len(ids) > 1 and len(set(ids)) == 1}


@dataclass
class LiveRun:
    decisions: dict[str, list[str]]
    tracker: Tracker
    published: int
    stats: Any


@pytest.fixture(scope="module")
def policy() -> Any:
    return load_default_policy()


def services_of(deliveries: list[Delivery]) -> list[str]:
    return sorted({d.record["service"] for d in deliveries if d.record["type"] == "deploy"
                   and d.record["revision"].endswith("-cnry")})


def run_live_recording(deliveries: list[Delivery], tmp: Path, *, lose_ack: float = 0.0, seed: int = 0
                       ) -> LiveRun:
    """Feed `deliveries` to a fresh live daemon through the emulator, on the recording's clock;
    `lose_ack` is the share of messages whose first ack is lost (seeded by `seed`)."""
    rng = random.Random(seed)
    events = [d for d in deliveries if d.record["type"] != "tick"]
    end = max(d.at for d in deliveries)
    start = min(d.at for d in deliveries)
    clock = SteppedClock(start)
    with Fakes(clock) as fakes:
        for service in services_of(deliveries):
            fakes.add_managed_service(service, f"{service}-00041-base")
            fakes.deploy_canary(service, f"{service}-00042-cnry")
        topics = Topics.create("evfault")
        settings = live_settings(fakes, topics, tmp / "journal.jsonl", policy="", notify_topic="",
                                 metrics_mode="pubsub")
        publishers = {topic: Publisher(topic) for topic in (topics.events, topics.incidents, topics.metrics)}
        live = LiveDaemon(settings, clock).start()
        try:
            sources = live.daemon.sources
            tracker = Tracker(sources[0]._handle)  # noqa: SLF001 - the test's hook between Pub/Sub and the daemon
            for source in sources:  # one tracker's state for the three subscriptions, each its own handler
                source._handle = replace(tracker, handle=source._handle)  # noqa: SLF001 - before Daemon.run starts it
            tracker = sources[0]._handle  # noqa: SLF001
            for source in sources:
                wait_until(lambda: source.ready, HANDLE_TIMEOUT_S, "the daemon to subscribe")
            seqs = [str(n) for n in range(len(events))]
            tracker.lose_ack.update(s for s in seqs if rng.random() < lose_ack)  # shared by the three
            next_tick = start.replace(second=0, microsecond=0) + MINUTE

            def tick_through(when: datetime) -> None:
                nonlocal next_tick
                while next_tick <= when:
                    clock.advance_to(next_tick)
                    boundary = next_tick
                    wait_until(lambda: live.daemon.last_tick_at == boundary, HANDLE_TIMEOUT_S,
                               f"the tick at {boundary}", interval_s=0.002)
                    next_tick += MINUTE

            numbered = list(zip(seqs, events))
            for at, group in itertools.groupby(numbered, key=lambda item: item[1].at):
                batch = list(group)
                tick_through(at)
                clock.advance_to(at)
                futures = []
                for seq, d in batch:
                    topic, body = as_published(d, topics)
                    futures.append(publishers[topic].publish_json(body, key=d.record.get("service", ""), wait=False,
                                                                  attributes={"test-seq": seq}))
                for future in futures:
                    future.result(timeout=30)
                tracker.wait_acked([seq for seq, _ in batch])
            tick_through(end)
            stats = sources[0].stats
            for source in sources[1:]:
                stats.nacked += source.stats.nacked
        finally:
            live.stop()
        journal = [r for r in journal_records(settings.journal) if r.get("type") == "decision"]
    by_service: dict[str, list[str]] = {}
    for record in journal:
        record.pop("trigger", None)
        # The recording names no region; the live daemon knows its one location and says so. The
        # decisions are compared without it (the replay's services have the empty placeholder).
        record.pop("project", None)
        record.pop("location", None)
        by_service.setdefault(record["service"], []).append(json.dumps(record, sort_keys=True))
    return LiveRun(by_service, tracker, len(events), stats)


def as_published(delivery: Delivery, topics: Topics) -> tuple[str, dict[str, Any]]:
    """Where and how production would receive this recorded event: a deploy as the sink's audit
    entry, an alert as Monitoring's notification, metrics as themselves on the metrics topic. A
    native command or traffic change has no producer any more: it goes to the audit topic as it is,
    where it is refused as the wrong format (in the recording none of them makes a decision)."""
    record = delivery.record
    if record["type"] == "deploy":
        return topics.events, audit_replace_service(record["service"], record["revision"], record["baseline"],
                                                    delivery.time)
    if record["type"] == "alert":
        body = incident_notification(record["service"], record["incident_id"], record["state"], delivery.time,
                                     revision=record.get("revision", ""), policy_name=record.get("policy_name", ""))
        body["incident"]["started_at"] = body["incident"]["ended_at"] = delivery.time.timestamp()
        return topics.incidents, body
    if record["type"] == "metrics":
        return topics.metrics, record
    return topics.events, record


_EXPECTED: dict[str, dict[str, list[str]]] = {}


def clean_for(fault: str) -> tuple[list[Delivery], str]:
    timely = fault in SKEW_FAULTS or fault == "all"
    return (clean_recording(services=TIMELY), "timely") if timely else (clean_recording(), "all")


def expected(clean: list[Delivery], kind: str, tmp: Path, policy: Any) -> dict[str, list[str]]:
    """The clean replay's decisions (per service, trigger dropped), computed once per recording."""
    if kind not in _EXPECTED:
        _EXPECTED[kind] = decisions_by_service(replay_file(write(tmp / f"clean-{kind}.jsonl", clean), policy, build_engine=REPLAY))
    return _EXPECTED[kind]


def check_fault_live(fault: str, seed: int, tmp: Path, policy: Any) -> LiveRun:
    clean, kind = clean_for(fault)
    want = expected(clean, kind, tmp, policy)
    faulty = (all_faults if fault == "all" else FAULTS[fault])(clean, random.Random(seed))
    assert faulty != clean, "the fault changed nothing: the test would prove nothing"
    lose = LOSE_ACK_P if fault in REAL_REDELIVERY else 0.0
    run = run_live_recording(faulty, tmp, lose_ack=lose, seed=seed)
    if lose:
        assert run.tracker.lost, "no ack was lost: no real redelivery was tested"
        assert set(run.tracker.redelivered()) >= run.tracker.lost, "a nacked message never came back"
        assert run.stats.nacked >= len(run.tracker.lost)
    assert run.decisions == want, f"{fault} (seed {seed}) changed the decisions on the emulator:\n" + \
        _diff(want, run.decisions)
    return run


def _diff(want: dict[str, list[str]], got: dict[str, list[str]]) -> str:
    lines = []
    for service in sorted(set(want) | set(got)):
        a, b = want.get(service, []), got.get(service, [])
        if a == b:
            continue
        lines.append(f"{service}: {len(a)} decisions expected, {len(b)} made")
        for x, y in itertools.zip_longest(a, b):
            if x != y:
                lines.append(f"  expected {_short(x)}\n  got      {_short(y)}")
                break
    return "\n".join(lines)


def _short(line: str | None) -> str:
    if line is None:
        return "(none)"
    r = json.loads(line)
    return f"{r['time']} {r['action']} {r['canary_percent_before']}->{r['canary_percent']} {r['reason'][:90]}"


@pytest.fixture
def tmp(pubsub_emulator: str, tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


# --- default run: the harness is exact, and real redelivery changes nothing ------------------------

def test_clean_live_run_equals_clean_replay(tmp: Path, policy: Any) -> None:
    clean, kind = clean_for("duplicates")
    run = run_live_recording(clean, tmp)
    assert run.decisions == expected(clean, kind, tmp, policy), _diff(expected(clean, kind, tmp, policy),
                                                                      run.decisions)
    finals = {s: json.loads(ds[-1]) for s, ds in run.decisions.items()}
    assert {s: (r["action"], r["canary_percent"]) for s, r in finals.items()} == {
        "checkout": ("promote", 100), "payments": ("rollback", 0), "search": ("rollback", 0)}
    assert not run.tracker.redelivered()


def test_real_redelivery_and_late_redelivery_give_clean_decisions_live(tmp: Path, policy: Any) -> None:
    check_fault_live("redelivery-after-ack-deadline", 0, tmp, policy)


# --- slow: the full matrix ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fault", [f for f in [*FAULTS, "all"] if f != "redelivery-after-ack-deadline"])
def test_event_fault_gives_same_decisions_live(fault: str, tmp: Path, policy: Any) -> None:
    check_fault_live(fault, 0, tmp, policy)

# More seeds run in replay (tests/reliability/test_event_faults.py, 30 per fault): the live run is
# about the delivery path, and a second live seed of "all" cost 32 s of make test for no new path.

