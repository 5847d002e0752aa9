"""Crash and restart of the live daemon (issue 5, item 1, second setup): `run_live` in a subprocess
with the real google-cloud clients, the Pub/Sub emulator and the Cloud Run / Monitoring / Logging
fakes, SIGKILLed at a seeded random point and restarted on the same config and journal.

The world keeps going while the daemon is dead (the traffic feeder writes Monitoring minutes that
follow the Cloud Run fake's split), as production would. After the restart:
- every rollout reaches the traffic an uninterrupted run reaches (healthy canaries 100%, the bad
  one back on its baseline);
- no traffic change is applied twice: the Cloud Run fake's accepted updates per service are the
  plain walk 5 → 25 → 50 → 100 (or 5 … → 0), with no split repeated;
- no decision is missing from the journal: each rollout's decision numbers are 1..N;
- the phase timers continue: the restored rollout keeps its `phase-started` annotation, and every
  promotion's "passed after X" equals the time since the previous promotion, not since the restart.
"""
from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.core.commands import ANNOTATION_PREFIX as P
from tests.integration.live_harness import (START, Fakes, LiveProcess, Publisher, RevisionProfile, SharedClock,
                                            Topics, TrafficFeeder, audit_replace_service, journal_records,
                                            live_settings, monitoring_sink, wait_until, write_config)

SPEED = 120.0
HEALTHY = RevisionProfile(error_ratio=0.0005, latency_median_ms=90)
BROKEN = RevisionProfile(error_ratio=0.08, latency_median_ms=90)
SERVICES = {"checkout": HEALTHY, "payments": BROKEN, "search": HEALTHY}
EXPECTED_END = {"checkout": "completed", "payments": "rolled-back", "search": "completed"}


def revisions(service: str) -> tuple[str, str]:
    return f"{service}-00041-base", f"{service}-00042-cnry"


def statuses(fakes: Fakes) -> dict[str, str]:
    return {s: fakes.cloud_run.annotations_of(s).get(f"{P}status", "") for s in SERVICES}


def minutes_of(text: str) -> float:
    """'2m' / '2m30s' / '90s' from a decision reason, in minutes."""
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)([hms])", text):
        total += float(value) * {"h": 60, "m": 1, "s": 1 / 60}[unit]
    return total


def trial(seed: int, pubsub_emulator: str, tmp: Path) -> list[str]:
    rng = random.Random(seed)
    clock = SharedClock(START, speed=SPEED)
    problems: list[str] = []
    with Fakes(clock) as fakes:
        for service in SERVICES:
            fakes.add_managed_service(service, revisions(service)[0])
        topics = Topics.create(f"crash{seed}")
        settings = live_settings(fakes, topics, tmp / "journal.jsonl")
        config = write_config(settings, tmp / "rollbackd.yaml")
        feeder = TrafficFeeder(clock, fakes.cloud_run, monitoring_sink(fakes.monitoring), seed=seed)
        first = LiveProcess(config, tmp / "daemon.log", clock).start()
        try:
            first.port()  # started: subscribed, restored
            publisher = Publisher(topics.events)
            for service, profile in SERVICES.items():
                base, canary = revisions(service)
                fakes.deploy_canary(service, canary)
                feeder.add(service, {base: HEALTHY, canary: profile})
            feeder.start()
            for service in SERVICES:
                base, canary = revisions(service)
                publisher.publish_deploy(audit_replace_service(service, canary, base, clock.now()))
            # Kill after a random number of accepted traffic changes, plus a random extra moment.
            kill_after = rng.randint(1, 7)
            wait_until(lambda: len(fakes.cloud_run.accepted_updates) >= kill_after, 60, f"{kill_after} updates")
            time.sleep(rng.uniform(0.0, 1.5))
            first.kill()
            before = {s: fakes.cloud_run.annotations_of(s).get(f"{P}phase-started") for s in SERVICES}
            time.sleep(rng.uniform(0.0, 1.0))  # the world moves on while the daemon is down
            second = LiveProcess(config, tmp / "daemon.log", clock).start()
            try:
                second.port()
                after = {s: fakes.cloud_run.annotations_of(s).get(f"{P}phase-started") for s in SERVICES}
                wait_until(lambda: statuses(fakes) == EXPECTED_END, 90, "every rollout to finish")
            finally:
                second.kill()
        finally:
            feeder.stop()
            first.kill()
        # --- the checks -------------------------------------------------------------------------
        for service in SERVICES:
            base, canary = revisions(service)
            splits = [split.get(canary, 0) for name, split, _ in fakes.cloud_run.traffic_changes if name == service]
            if any(a == b for a, b in zip(splits, splits[1:])):
                problems.append(f"{service}: a split applied twice: {splits}")
            want = [5, 25, 50, 100] if EXPECTED_END[service] == "completed" else None
            if want is not None and splits != want:
                problems.append(f"{service}: accepted updates {splits}, expected {want}")
            if want is None and (not splits or splits[-1] != 0 or splits[0] != 5):
                problems.append(f"{service}: accepted updates {splits} do not end in a rollback")
            final = {r: p for r, p in fakes.cloud_run.traffic_of(service).items() if p}
            expected = {canary: 100} if EXPECTED_END[service] == "completed" else {base: 100}
            if final != expected:
                problems.append(f"{service}: final traffic {final}, expected {expected}")
            if before[service] != after[service]:
                problems.append(f"{service}: phase-started changed by the restart: {before[service]} -> {after[service]}")
        journal = journal_records(settings.journal)
        decisions = [r for r in journal if r.get("type") == "decision" and r.get("service") in SERVICES]
        by_rollout: dict[str, list[dict[str, Any]]] = {}
        for d in decisions:
            by_rollout.setdefault(d["decision_id"].rpartition("#")[0], []).append(d)
        for rollout, ds in by_rollout.items():
            numbers = sorted({int(d["decision_id"].rpartition("#")[2]) for d in ds})
            if numbers != list(range(1, len(numbers) + 1)):
                problems.append(f"{rollout}: decision numbers {numbers} have a gap")
            promotions = [d for d in ds if d["action"] == "promote"]
            for previous, current in zip(promotions, promotions[1:]):
                said = re.search(r"passed after (\S+)", current["reason"])
                if said is None:
                    continue
                gap = (_t(current["time"]) - _t(previous["time"])) / 60
                if abs(minutes_of(said.group(1)) - gap) > 0.02:
                    problems.append(f"{rollout}: '{said.group(0)}' but {gap:.2f} minutes since the last promotion")
    return problems


def _t(stamp: str) -> float:
    from daemon.core.timefmt import parse_rfc3339

    return parse_rfc3339(stamp).timestamp()


def test_live_daemon_sigkill_and_restart(pubsub_emulator: str, tmp_path: Path) -> None:
    problems = trial(1, pubsub_emulator, tmp_path)
    assert not problems, problems


@pytest.mark.slow
def test_live_daemon_sigkill_trials(pubsub_emulator: str, tmp_path: Path) -> None:
    failures = []
    for seed in range(2, 6):
        trial_dir = tmp_path / f"trial-{seed}"
        trial_dir.mkdir()
        problems = trial(seed, pubsub_emulator, trial_dir)
        if problems:
            failures.append(f"seed {seed}: {problems}")
    assert not failures, "\n".join(failures)
