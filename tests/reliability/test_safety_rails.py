"""Safety rails (issue 5, item 8), at engine level: the real engine, core and dispatcher on the
simulated Cloud Run, whose request log (`calls`) shows every UpdateService that was sent.

- Only managed services are touched: a deploy of a service without the label is ignored.
- rollbackd's own audit entries are ignored (the same entry from anyone else would stop it).
- The kill switch (the `kill_switch` setting, and the `kill-switch-on` command from an authorised
  principal) stops every action while decisions are still made and logged.
- The rate limits per service and per project hold: an action over the limit is not sent; the
  rollout halts and a human is told.
- Dry-run never sends an UpdateService.
Live (emulator + Cloud Run fake) versions of these are in test_live_rails.py.
"""
from __future__ import annotations

import json
from typing import Any

from actions.dry_run import DryRunTrafficController
from daemon.core.events import Command
from daemon.dispatch import Dispatcher
from daemon.engine import RateLimiter
from daemon.sandbox import audit_deploy_entry
from policies import load_default_policy
from tests.reliability.engine_world import OPERATOR, OWN, PROJECT, STRANGER, World, at, names, v2_update_entry


def dispatcher(world: World) -> Dispatcher:
    cloud = world.cloud
    return Dispatcher(world.engine, clock=world.replayer.clock, traffic=cloud, own_principals=frozenset({OWN}),
                      managed=lambda p, l, s: cloud.get_service(p, l, s).labels.get("rollbackd") == "enabled",
                      default_project="shop-prod", default_location="europe-west1")


def rate_limited(per_service: int, per_project: int) -> Any:
    """The default policy with other rate limits (read when the engine starts)."""
    policy = load_default_policy()
    limits = policy.rate_limits.model_copy(update={"max_actions_per_service_per_hour": per_service,
                                                   "max_actions_per_project_per_hour": per_project})
    return policy.model_copy(update={"rate_limits": limits})


# --- managed services and rollbackd's own writes -------------------------------------------------

def test_unmanaged_service_is_never_touched() -> None:
    world = World()
    world.cloud.ensure_service("billing", project="shop-prod", location="europe-west1", labels={"team": "pay"})
    world.cloud.deploy("billing", "billing-00002-new", baseline="billing-00001-old")
    world.until(2)
    dispatcher(world).handle(json.dumps(audit_deploy_entry("billing", "billing-00002-new", "billing-00001-old",
                                                           at(2))).encode())
    world.until(60)
    assert world.engine.state_of("billing") is None
    assert not world.updates("billing")
    assert [d for d in world.decisions if d.service == "billing"] == []
    assert world.of()[-1].canary_percent_after == 100  # the managed one carried on


def test_own_audit_entries_are_ignored_but_a_humans_stops_the_rollout() -> None:
    base, canary = names("checkout")
    ours, theirs = World(), World()
    for world, principal in ((ours, OWN), (theirs, "alice@olympuscloud.ai")):
        world.until(21)  # promoted to 25% at minute 10, 50% at 25; an entry saying 50% arrives early
        dispatcher(world).handle(v2_update_entry("checkout", canary, base, 50, at(20.5), principal=principal))
        world.until(60)
    assert [d.canary_percent_after for d in ours.of() if d.action == "promote"] == [5, 25, 50, 100]
    assert [d for d in theirs.of() if d.action == "halt"], "the same entry from a human must stop it"


# --- kill switch ---------------------------------------------------------------------------------

def test_kill_switch_setting_stops_all_actions_but_decisions_are_logged() -> None:
    world = World(("checkout", "payments"), actions_enabled=False)
    world.until(60)
    assert world.updates() == []
    assert world.cloud.traffic_of("checkout") == {names("checkout")[0]: 100, names("checkout")[1]: 0}
    for service in ("checkout", "payments"):
        logged = world.of(service)
        assert logged and all(not d.acted for d in logged)
        assert all("kill switch on, not acted: would" in d.reason for d in logged)


def test_kill_switch_command_stops_then_releases_actions() -> None:
    world = World()
    world.until(12)  # 25%
    sent = len(world.updates())
    world.send(Command(time=at(12.5), service="*", action="kill-switch-on", by=OPERATOR, reason="incident"))
    world.until(45)
    assert len(world.updates()) == sent, "an action was taken with the kill switch on"
    held = [d for d in world.of() if "kill switch on, not acted: would promote to 50%" in d.reason]
    assert held and not held[0].acted
    switch = [d for d in world.decisions if d.action == "kill-switch"]
    assert switch and "all actions stopped by sre@olympuscloud.ai" in switch[0].reason
    world.send(Command(time=at(45.5), service="*", action="kill-switch-off", by=OPERATOR, reason="over"))
    world.until(90)
    assert len(world.updates()) > sent and world.canary_percent() > 25


def test_kill_switch_command_from_a_stranger_is_refused() -> None:
    world = World()
    world.until(5)
    world.send(Command(time=at(5.5), service="*", action="kill-switch-on", by=STRANGER, reason="haha"))
    world.until(60)
    refused = [d for d in world.decisions if d.action == "refuse" and d.service == "*"]
    assert refused and "not an authorised principal" in refused[0].reason
    assert world.canary_percent() == 100


# --- rate limits ---------------------------------------------------------------------------------

def test_rate_limit_per_service_stops_the_action_over_the_limit() -> None:
    world = World(policy=rate_limited(per_service=2, per_project=100))
    world.until(60)
    assert [u["traffic"][names("checkout")[1]] for u in world.updates()] == [5, 25]
    halt = world.of()[-1]
    assert halt.action == "halt" and "rate limit" in halt.reason
    assert world.canary_percent() == 25
    assert any(n.severity == "ERROR" and n.decision["decision_id"] == halt.decision_id for n in world.notes.sent)


def test_rate_limit_per_project_counts_all_services() -> None:
    world = World(("checkout", "payments"), policy=rate_limited(per_service=100, per_project=3))
    world.until(60)
    assert len(world.updates()) == 3  # 5% twice, then one 25%: the fourth change is over the limit
    halted = [d for d in world.decisions if d.action == "halt"]
    assert halted and all("rate limit" in d.reason for d in halted)


def test_rate_limit_counts_only_changes_that_moved_traffic() -> None:
    """A change that found the service already as wanted (another replica, or a restart re-applying
    its journal, got there first) gives its slot back; without the refund, replicas sharing the
    work would each use up the project's budget on changes the other one made."""
    limiter = RateLimiter(per_service=1, per_project=10)
    assert limiter.allow("checkout", PROJECT, at(0))
    limiter.refund("checkout", PROJECT, at(0))
    assert limiter.allow("checkout", PROJECT, at(1))
    assert not limiter.allow("checkout", PROJECT, at(2))


# --- dry run -------------------------------------------------------------------------------------

def test_dry_run_never_sends_update_service() -> None:
    world = World(("checkout", "payments"), traffic=DryRunTrafficController, dry_run=True)
    dry = world.engine.traffic
    world.until(60)
    assert world.updates() == [], "dry run sent an UpdateService"
    decided = [d for d in world.decisions if d.changes_traffic]
    assert decided and not any(d.acted for d in decided)
    assert len(dry.would_have) >= len(decided)
