"""Replicas (issue 5, item 7): two and three live daemons share ONE Pub/Sub subscription on the
emulator and ONE Cloud Run fake managing 60 services, each with a canary rollout.

Each replica is `run_live` in its own process (tests/integration/live_harness.py `LiveProcess`, on
the test's shared virtual clock) with the real google-cloud clients, its own journal and /metrics
port. Deploys arrive once on the shared subscription, so each reaches one replica; the others adopt
the rollout from the service's `rollbackd.dev/*` annotations (`daemon.live.resync`). Every replica
evaluates the same Cloud Monitoring data, and the etag-guarded, idempotent update makes a change
land once however many replicas decide it.

Checked from the Cloud Run fake's own log of accepted updates: every rollout finishes where it
should (healthy canaries at 100%, bad ones back on their baseline), and no service ever gets the
same split twice in a row (a change applied twice). The kill variant SIGKILLs one replica in the
middle of the run; the others must finish every rollout, its own included.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from daemon.core.commands import ANNOTATION_PREFIX as P
from tests.integration.live_harness import (SHORT_POLICY, START, Fakes, LiveProcess, Publisher, RevisionProfile, SharedClock,
                                            Topics, TrafficFeeder, audit_replace_service, live_settings,
                                            monitoring_sink, wait_until, write_config)

pytestmark = pytest.mark.slow

SERVICES = 60
BAD_EVERY = 10  # every tenth service deploys a bad canary
SPEED = 20.0  # a virtual minute = 3 wall seconds: three replicas of 60 rollouts each keep up on a loaded 2-core machine
HEALTHY = RevisionProfile(error_ratio=0.0005, latency_median_ms=90)
BROKEN = RevisionProfile(error_ratio=0.08, latency_median_ms=90)
FINISH_S = 480.0


def name(index: int) -> str:
    return f"svc-{index:03d}"


def revisions(service: str) -> tuple[str, str]:
    return f"{service}-00041-base", f"{service}-00042-cnry"


def expected_end(index: int) -> str:
    return "rolled-back" if index % BAD_EVERY == 0 else "completed"


def run_replicas(replicas: int, tmp: Path, *, kill_one_after_updates: int | None = None) -> list[str]:
    clock = SharedClock(START, speed=SPEED)
    problems: list[str] = []
    with Fakes(clock) as fakes:
        for index in range(SERVICES):
            fakes.add_managed_service(name(index), revisions(name(index))[0])
        topics = Topics.create(f"replicas{replicas}")
        feeder = TrafficFeeder(clock, fakes.cloud_run, monitoring_sink(fakes.monitoring))
        processes: list[LiveProcess] = []
        try:
            # The test policy allows 500 changes per project and hour; 60 rollouts make 240 in
            # about 20 virtual minutes, which is exactly what that rail is for. Raise it here.
            policy = tmp / "replicas-policy.yaml"
            policy.write_text(Path(SHORT_POLICY).read_text(encoding="utf-8").replace(
                "max_actions_per_project_per_hour: 500", "max_actions_per_project_per_hour: 2000"), encoding="utf-8")
            for replica in range(replicas):
                settings = live_settings(fakes, topics, tmp / f"journal-{replica}.jsonl", policy=str(policy))
                config = write_config(settings, tmp / f"rollbackd-{replica}.yaml")
                processes.append(LiveProcess(config, tmp / f"replica-{replica}.log", clock).start())
            for process in processes:
                process.port(60)
            publisher = Publisher(topics.events)
            for index in range(SERVICES):
                service = name(index)
                base, canary = revisions(service)
                fakes.deploy_canary(service, canary)
                feeder.add(service, {base: HEALTHY, canary: BROKEN if expected_end(index) == "rolled-back" else HEALTHY})
            feeder.start()
            futures = [publisher.publish_json(audit_replace_service(name(i), revisions(name(i))[1],
                                                                    revisions(name(i))[0], clock.now()),
                                              key=name(i), wait=False) for i in range(SERVICES)]
            for future in futures:
                future.result(timeout=60)
            if kill_one_after_updates is not None:
                wait_until(lambda: len(fakes.cloud_run.accepted_updates) >= kill_one_after_updates, FINISH_S,
                           "the run to be under way")
                processes[0].kill()  # SIGKILL: no goodbye, unacked messages go back to the others

            def statuses() -> list[str]:
                return [fakes.cloud_run.annotations_of(name(i)).get(f"{P}status", "") for i in range(SERVICES)]

            def finished() -> bool:
                return all(s == expected_end(i) for i, s in enumerate(statuses()))

            try:
                wait_until(finished, FINISH_S, "every rollout to finish", interval_s=0.5)
            except AssertionError:
                late = [(name(i), s) for i, s in enumerate(statuses()) if s != expected_end(i)]
                problems.append(f"{len(late)} rollouts did not finish as expected: {late[:10]}")
        finally:
            feeder.stop()
            for process in processes:
                process.kill()
        by_service: dict[str, list[int]] = {}
        notes: dict[str, list[dict[str, str]]] = {}
        for service, split, annotations in fakes.cloud_run.traffic_changes:
            by_service.setdefault(service, []).append(split.get(revisions(service)[1], 0))
            notes.setdefault(service, []).append(annotations)
        for index in range(SERVICES):
            service = name(index)
            splits = by_service.get(service, [])
            repeated = [a for a, b in zip(splits, splits[1:]) if a == b]
            if repeated:
                at = next(k for k, (a, b) in enumerate(zip(splits, splits[1:])) if a == b)
                first, second = notes[service][at], notes[service][at + 1]
                differ = {k: (first.get(k), second.get(k)) for k in set(first) | set(second)
                          if first.get(k) != second.get(k)}
                problems.append(f"{service}: split {repeated[0]}% applied twice: {splits}; annotations differ: {differ}")
            if expected_end(index) == "completed" and splits != [5, 25, 50, 100]:
                problems.append(f"{service}: accepted updates {splits}")
            if expected_end(index) == "rolled-back" and (not splits or splits[-1] != 0):
                problems.append(f"{service}: accepted updates {splits} do not end in a rollback")
    return problems


def test_two_replicas_share_one_subscription_and_act_once(pubsub_emulator: str, tmp_path: Path) -> None:
    problems = run_replicas(2, tmp_path)
    assert not problems, "\n".join(problems[:20])


def test_three_replicas_one_killed_mid_run_lose_nothing(pubsub_emulator: str, tmp_path: Path) -> None:
    """Three replicas; one is SIGKILLed once the run is under way (every canary at 5% and some
    promoted). The survivors finish every rollout, the dead one's included, each change once."""
    problems = run_replicas(3, tmp_path, kill_one_after_updates=SERVICES + 15)
    assert not problems, "\n".join(problems[:20])
