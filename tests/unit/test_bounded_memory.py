"""Memory that must not grow with the events, decisions or rollouts a daemon has seen (issue 5: it runs
for months). Size assertions on the structures, never RSS or timing: each test runs many cycles and
checks the structure stays within its bound; the unbounded versions fail them.

- `ServiceState.recent_keys` (the core's de-duplication keys): one deploy key per rollout used to
  pile up to 256 per service; now only keys of the current rollout are kept.
- `LogNotifier.sent` (the live daemon's notifier when no topic is set): one record per notification,
  forever; now the last `KEEP_RECENT`.
- The whole engine on the benchmark's world (`benchmarks.memory_cycles.CycleWorld`): every
  structure that can grow stays bounded by the number of services after many rollouts each.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from actions.notify import KEEP_RECENT, LogNotifier
from daemon.core.commands import Notify
from daemon.core.events import Alert, Deploy
from daemon.core.rollout import DEDUP_LIMIT, ServiceState
from daemon.core.step import step
from policies import load_default_policy

START = datetime.fromisoformat("2026-11-24T14:00:00+00:00")  # a Tuesday: no freeze window


def _deploy(n: int, minute: int) -> Deploy:
    return Deploy(time=START + timedelta(minutes=minute), service="checkout", revision=f"checkout-{n:05d}-can",
                  baseline="checkout-00001-base", project="p", location="l", canary_percent=0,
                  principal="ci@example.com")


def test_dedup_keys_do_not_grow_with_rollouts() -> None:
    policy = load_default_policy()
    state = ServiceState(service="checkout")
    for n in range(2, 402):  # 400 rollouts, each superseded by the next deploy
        state = step(state, _deploy(n, n * 10), policy).state
        assert state.rollout is not None and state.rollout.canary == f"checkout-{n:05d}-can"
    # Only the current rollout's deploy (and at most the previous one's) is remembered.
    assert len(state.recent_keys) <= 2 < DEDUP_LIMIT


def test_dedup_still_catches_redeliveries() -> None:
    policy = load_default_policy()
    state = ServiceState(service="checkout")
    for n in range(2, 40):
        state = step(state, _deploy(n, n * 10), policy).state
    current = state.rollout
    again = step(state, _deploy(39, 390), policy)  # the current rollout's deploy, redelivered
    assert again.note == "duplicate event" and again.state.rollout == current and not again.decisions
    old = step(state, _deploy(3, 30), policy)  # an old deploy whose key was dropped: still ignored
    assert old.state.rollout is not None and old.state.rollout.rollout_id == current.rollout_id
    assert not old.decisions and not old.commands
    alert = Alert(time=START + timedelta(minutes=391), service="checkout", revision=None, incident_id="i-1",
                  state="open", policy_name="5xx")
    opened = step(state, alert, policy)
    assert opened.decisions  # the policy rolls back on an open alert
    assert step(opened.state, alert, policy).note == "duplicate event"


def test_dedup_keys_capped_without_a_rollout() -> None:
    policy = load_default_policy()
    state = ServiceState(service="checkout", stable_revision="checkout-00001-base")
    for n in range(2, 600):  # deploys with all the traffic: never a rollout, nothing to prune by
        deploy = Deploy(time=START + timedelta(minutes=n), service="checkout", revision=f"checkout-{n:05d}",
                        baseline=None, project="p", location="l", canary_percent=100, principal="ci@example.com")
        state = step(state, deploy, policy).state
    assert state.rollout is None and len(state.recent_keys) == DEDUP_LIMIT


def test_log_notifier_keeps_only_recent_records() -> None:
    seen: list[dict] = []
    notifier = LogNotifier(sink=seen.append)
    for n in range(KEEP_RECENT * 5):
        notifier.notify(Notify(service=f"svc-{n}", severity="INFO", subject="promoted",
                               decision={"action": "promote", "n": n}))
    assert len(seen) == KEEP_RECENT * 5  # every notification still goes out
    assert len(notifier.sent) == KEEP_RECENT
    assert notifier.sent[-1]["notification"]["decision"]["n"] == KEEP_RECENT * 5 - 1


def test_engine_structures_stay_bounded_over_many_rollouts() -> None:
    from benchmarks.memory_cycles import CycleWorld

    services = 4
    world = CycleWorld(services, phase_minutes=1, rps=20.0)
    try:
        sizes = []
        for hour in range(4):
            for _ in range(60):
                world.minute()
            sizes.append(world.sizes())
        assert world.finished_rollouts() >= services * 25  # many rollouts each: a leak would show
        last = sizes[-1]
        assert last["recent_keys"] <= 2 * services
        assert last["slots"] <= 5 * services
        assert last["notifier.sent"] <= KEEP_RECENT
        assert last["known_decisions"] == 0
        # A sliding hour of traffic changes and one series set per service: the same after hour 2 as
        # after hour 4, whatever the number of rollouts in between.
        assert last["rate_limiter"] <= 2 * 120 * services
        assert last["prometheus_series"] <= sizes[1]["prometheus_series"] + 10
    finally:
        world.close()
