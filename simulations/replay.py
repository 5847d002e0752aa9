"""`rollbackd replay`: run recordings through the same engine and core as the live daemon.

A recording is native JSON Lines (the daemon's journal is one). Each line is parsed by the same
intake as Pub/Sub; rejected lines are reported with their line number and skipped. A virtual clock
follows the recording (a journal's `received_at`, else the event's own time) and the engine gets a
Tick at every minute boundary, exactly as the live daemon does. Traffic changes go to a simulated
Cloud Run. The output is deterministic: the same input gives byte-identical output.

This module is an adapter: it does not build the engine itself. The caller passes `build_engine`,
`daemon.bootstrap.engine_factory("replay")` (or "backtest"), so the engine is made in one place.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

from daemon.clock import VirtualClock
from daemon.core.decision import Decision
from daemon.core.events import Event, Rejected, Tick
from daemon.core.intake import parse_line
from daemon.core.timefmt import format_rfc3339, parse_rfc3339
from daemon.ports import EngineFactory, ListJournal, NullJournal
from policies.model import Policy
from simulations.sandbox_cloud import SimulatedCloudRun

# Lines the engine writes to its journal as outputs: a journal replays as a recording without them.
OUTPUT_TYPES = ("decision", "evaluation", "rejected", "ignored", "decision-logs")
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=timezone.utc)  # replay has no "now": skip the future check
MINUTE = timedelta(minutes=1)


@dataclass
class ReplayResult:
    recording: str
    decisions: list[Decision] = field(default_factory=list)
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    cloud: SimulatedCloudRun | None = None
    engine: Any = None  # daemon.engine.Engine


def read_recording(path: str) -> Iterator[tuple[int, Any]]:
    """Yield (line number, events list | Rejected | Ignored | None for output lines)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if any(f'"type":"{kind}"' in stripped or f'"type": "{kind}"' in stripped for kind in OUTPUT_TYPES):
                continue
            yield number, parse_line(stripped, now=FAR_FUTURE, where=f"line {number}", allow_internal=True), \
                _received_at(stripped)


def _received_at(line: str) -> datetime | None:
    if '"received_at"' not in line:
        return None
    try:
        value = json.loads(line).get("received_at")
        return parse_rfc3339(value) if isinstance(value, str) else None
    except (ValueError, AttributeError):
        return None


class Replayer:
    """Drives one engine over a stream of events with a virtual clock and minute ticks."""

    def __init__(self, policy: Policy, *, build_engine: EngineFactory | None = None, keep_journal: bool = False,
                 cloud: SimulatedCloudRun | None = None, engine_kwargs: dict[str, Any] | None = None,
                 engine: Any = None) -> None:
        if build_engine is None and engine is None:
            raise ValueError("Replayer needs build_engine (daemon.bootstrap.engine_factory) or an engine")
        self.policy = policy
        self.build_engine = build_engine
        self.cloud = cloud or SimulatedCloudRun()
        self.journal = ListJournal() if keep_journal else NullJournal()
        self.clock: VirtualClock | None = None
        self.engine: Any = engine  # an existing engine: recovery drives it with this clock
        self.decisions: list[Decision] = []
        self._next_tick: datetime | None = None
        self._engine_kwargs = engine_kwargs or {}

    def _ensure(self, first: datetime) -> Any:
        if self.engine is not None and self.clock is None:
            self.clock = VirtualClock(first)
            self.engine.clock = self.clock
            self._next_tick = first.replace(second=0, microsecond=0) + MINUTE
        if self.engine is None:
            assert self.build_engine is not None
            self.clock = VirtualClock(first)
            self.engine = self.build_engine(policy=lambda: self.policy, traffic=self.cloud, clock=self.clock,
                                            journal=self.journal,
                                            journal_evaluations=isinstance(self.journal, ListJournal),
                                            **self._engine_kwargs)
            self._next_tick = first.replace(second=0, microsecond=0) + MINUTE
        return self.engine

    def advance(self, to: datetime) -> None:
        """Tick every minute boundary up to `to`, then move the clock to `to`."""
        engine = self._ensure(to)
        assert self.clock is not None and self._next_tick is not None
        while self._next_tick <= to:
            self.clock.advance_to(self._next_tick)
            self.decisions.extend(engine.tick(self._next_tick).decisions)
            self._next_tick += MINUTE
        self.clock.advance_to(to)

    def feed(self, event: Event, received_at: datetime | None = None) -> None:
        if isinstance(event, Tick):  # journaled ticks: the replayer makes its own at the same boundaries
            self.advance(event.time)
            return
        self.advance(received_at or event.time)
        assert self.engine is not None
        self.decisions.extend(self.engine.submit(event, received_at=received_at).decisions)


def replay_events(events: Iterable[Event], policy: Policy, *, build_engine: EngineFactory, recording: str = "",
                  keep_journal: bool = False) -> ReplayResult:
    """Replay already-parsed events (used by the benchmark, backtests and tests)."""
    replayer = Replayer(policy, build_engine=build_engine, keep_journal=keep_journal)
    for event in events:
        replayer.feed(event)
    return ReplayResult(recording=recording, decisions=replayer.decisions, cloud=replayer.cloud,
                        engine=replayer.engine,
                        journal=getattr(replayer.journal, "records", []))


def replay_file(path: str, policy: Policy, *, build_engine: EngineFactory,
                keep_journal: bool = False) -> ReplayResult:
    name = os.path.basename(path)
    replayer = Replayer(policy, build_engine=build_engine, keep_journal=keep_journal)
    result = ReplayResult(recording=name)
    for number, parsed, received_at in read_recording(path):
        if isinstance(parsed, Rejected):
            result.rejected.append((number, parsed))
            continue
        if not isinstance(parsed, list):  # Ignored: valid input rollbackd does not act on
            continue
        for event in parsed:
            replayer.feed(event, received_at)
    result.decisions = replayer.decisions
    result.cloud = replayer.cloud
    result.engine = replayer.engine
    result.journal = getattr(replayer.journal, "records", [])
    return result


def recover_engine(engine: Any, lines: Iterable[str]) -> tuple[int, datetime | None]:
    """Rebuild an engine's state from its own journal (sandbox restart). Decisions already in the
    journal are not repeated; one the crash cut off before it was journaled is made, journaled and
    acted on now. Returns (events replayed, time of the last one)."""
    import json as _json

    records = list(lines)
    known = set()
    for line in records:
        if '"type":"decision"' in line:
            try:
                known.add(_json.loads(line).get("decision_id"))
            except ValueError:
                continue
    saved_clock = engine.clock
    engine.recovering, engine.known_decisions = True, known
    replayer = Replayer(None, engine=engine)  # type: ignore[arg-type]  # the engine has its policy
    count, last = 0, None
    try:
        for number, line in enumerate(records, start=1):
            stripped = line.strip()
            if not stripped or any(f'"type":"{kind}"' in stripped for kind in OUTPUT_TYPES):
                continue
            parsed = parse_line(stripped, now=FAR_FUTURE, where=f"journal line {number}", allow_internal=True)
            if not isinstance(parsed, list):
                continue
            received = _received_at(stripped)
            for event in parsed:
                replayer.feed(event, received)
                count += 1
                last = received or event.time
        engine.recovering, engine.known_decisions = False, set()
        engine.reapply_recovered()  # on the journal's clock: a journaled change the crash cut off
    finally:
        engine.recovering, engine.known_decisions = False, set()
        engine.clock = saved_clock
    return count, last


def decision_line(decision: Decision, recording: str) -> str:
    record = decision.to_json()
    record["recording"] = recording
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def timeline_line(decision: Decision) -> str:
    traffic = (f"{decision.canary_percent_before:>3}% → {decision.canary_percent_after:>3}%"
               if decision.changes_traffic else f"{decision.canary_percent_after:>3}%       ")
    phase = f"phase {decision.phase}" if decision.phase else "-"
    return (f"{format_rfc3339(decision.time)}  {decision.service:<18} {decision.action:<9} {traffic}  "
            f"{phase:<8} {decision.reason}")
