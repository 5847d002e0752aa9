"""Event faults and bad input in replay (issue 5, items 2 and 3): the same decisions as clean delivery.

A recording of three interleaved rollouts (a good canary promoted to 100%, a bad one rolled back,
one whose data arrives 1-4 minutes late; built by `tests.reliability.event_faults`) is replayed
clean, then with each delivery fault: duplicates, redelivery after an ack deadline, reordering
within the grace period, events for unknown services, events older than the rollout (including the
deploy that made the baseline, redelivered a day late), a clock skewed by ±2 minutes, and all of
them at once. Every variant must give exactly the decisions of the clean replay (compared per
service, every field but the trigger, which says whether a tick or a metric arrival made it).

Replay goes through the same intake, engine and core as the live daemon (`simulations.replay`).
The emulator variant is tests/reliability/test_event_faults_live.py.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from daemon.bootstrap import engine_factory
from policies import load_default_policy
from simulations.replay import replay_file
from tests.reliability.event_faults import (FAULTS, TIMELY, Delivery, all_faults, clean_recording,
                                            laced_with_garbage)

REPLAY = engine_factory("replay")
SKEW_FAULTS = ("clock-skew-plus-2m", "clock-skew-minus-2m")
DEFAULT_SEEDS = range(3)
SLOW_SEEDS = range(100, 130)
_EXPECTED: dict[str, dict[str, list[str]]] = {}  # clean decisions, per recording kind (replayed once)


@pytest.fixture(scope="module")
def policy():
    return load_default_policy()


def write(path: Path, deliveries: list[Delivery]) -> str:
    path.write_text("".join(d.line() + "\n" for d in deliveries), encoding="utf-8")
    return str(path)


def decisions_by_service(result) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for decision in result.decisions:
        record = decision.to_json()
        record.pop("trigger", None)
        out.setdefault(decision.service, []).append(json.dumps(record, sort_keys=True))
    return out


def expected_for(clean: list[Delivery], kind: str, tmp_path: Path, policy) -> dict[str, list[str]]:
    if kind not in _EXPECTED:
        _EXPECTED[kind] = decisions_by_service(replay_file(write(tmp_path / f"clean-{kind}.jsonl", clean), policy, build_engine=REPLAY))
    return _EXPECTED[kind]


def check_fault(fault: str, seed: int, tmp_path: Path, policy) -> None:
    timely = fault in SKEW_FAULTS or fault == "all"
    clean = clean_recording(services=TIMELY) if timely else clean_recording()
    expected = expected_for(clean, "timely" if timely else "all", tmp_path, policy)
    faulty = (all_faults if fault == "all" else FAULTS[fault])(clean, random.Random(seed))
    assert faulty != clean, "the fault changed nothing: the test would prove nothing"
    result = replay_file(write(tmp_path / f"{fault}-{seed}.jsonl", faulty), policy, build_engine=REPLAY)
    got = decisions_by_service(result)
    assert got == expected, f"{fault} (seed {seed}) changed the decisions"


def test_clean_recording_has_a_story(tmp_path: Path, policy) -> None:
    """Sanity: the clean recording promotes one canary to 100% and rolls back the bad ones."""
    for services in (None, TIMELY):
        clean = clean_recording() if services is None else clean_recording(services=services)
        result = replay_file(write(tmp_path / "clean.jsonl", clean), policy, build_engine=REPLAY)
        final = {d.service: (d.action, d.canary_percent_after) for d in result.decisions}
        assert final["checkout"] == ("promote", 100)
        assert final["payments"] == ("rollback", 0)
        assert final["search"] == ("rollback", 0)
        assert not result.rejected


@pytest.mark.parametrize("seed", DEFAULT_SEEDS)
@pytest.mark.parametrize("fault", [*FAULTS, "all"])
def test_event_fault_gives_same_decisions_in_replay(fault: str, seed: int, tmp_path: Path, policy) -> None:
    check_fault(fault, seed, tmp_path, policy)


@pytest.mark.slow
@pytest.mark.parametrize("fault", [*FAULTS, "all"])
def test_event_fault_thirty_seeds_in_replay(fault: str, tmp_path: Path, policy) -> None:
    for seed in SLOW_SEEDS:
        check_fault(fault, seed, tmp_path, policy)


def test_skew_beyond_the_grace_period_is_never_a_promotion(tmp_path: Path, policy) -> None:
    """The bound of the skew guarantee, measured: data already 1-4 minutes late plus a clock 2 minutes
    ahead can pass the 5-minute grace, and such a minute is evaluated as missing. That may delay a
    decision, but never adds a promotion or a traffic increase."""
    clean = clean_recording()
    expected = replay_file(write(tmp_path / "clean.jsonl", clean), policy, build_engine=REPLAY)
    skewed = replay_file(write(tmp_path / "skewed.jsonl", FAULTS["clock-skew-plus-2m"](clean, random.Random(1))),
                         policy, build_engine=REPLAY)
    for service in ("checkout", "payments", "search"):
        before = [d for d in expected.decisions if d.service == service]
        after = [d for d in skewed.decisions if d.service == service]
        promotions = lambda ds: [d.canary_percent_after for d in ds if d.action == "promote"]  # noqa: E731
        assert promotions(after) == promotions(before)[: len(promotions(after))]
        assert after[-1].canary_percent_after == before[-1].canary_percent_after


# --- bad input: garbage lines ---------------------------------------------------------------------

def check_garbage(seed: int, tmp_path: Path, policy) -> int:
    clean = clean_recording()
    lines = [d.line() for d in clean]
    expected = expected_for(clean, "all", tmp_path, policy)
    laced = laced_with_garbage(lines, random.Random(seed))
    garbage = len(laced) - len(lines)
    assert garbage > 0
    path = tmp_path / f"garbage-{seed}.jsonl"
    path.write_text("\n".join(laced) + "\n", encoding="utf-8")
    result = replay_file(str(path), policy, build_engine=REPLAY)
    assert decisions_by_service(result) == expected, f"garbage (seed {seed}) changed the decisions"
    assert all(rejected.reason for _, rejected in result.rejected), "a rejection without a reason"
    blank = sum(1 for line in laced if not line.strip())
    assert len(result.rejected) == garbage - blank, "a garbage line was accepted, or a good one rejected"
    return garbage


@pytest.mark.parametrize("seed", DEFAULT_SEEDS)
def test_recording_laced_with_garbage_replays_to_same_decisions(seed: int, tmp_path: Path, policy) -> None:
    check_garbage(seed, tmp_path, policy)


@pytest.mark.slow
def test_garbage_thirty_seeds(tmp_path: Path, policy) -> None:
    assert sum(check_garbage(seed, tmp_path, policy) for seed in SLOW_SEEDS) > 3000
