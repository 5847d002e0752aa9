"""Humans and other writers (issue 5, item 6), at engine level: the real engine and core, the
simulated Cloud Run and its request log (tests/reliability/engine_world.py).

- A manual traffic change mid-rollout: rollbackd stands down (halted), logs why, notifies, and
  never writes the service again: no UpdateService after the change, the human's split stays.
- A new deploy supersedes the running rollout.
- pause / resume / abort / promote from an authorised principal are obeyed; from anyone else they
  are refused, logged as a `refuse` decision, notified, and change nothing at all.
The live, emulator-backed versions (including `rollbackd ctl`) are in test_live_rails.py.
"""
from __future__ import annotations

import pytest

from daemon.core.events import TrafficChanged
from tests.reliability.engine_world import STRANGER, World, at, names


def test_reference_rollout_promotes_to_100() -> None:
    world = World()
    world.until(60)
    assert [d.canary_percent_after for d in world.of() if d.action == "promote"] == [5, 25, 50, 100]
    assert [u["traffic"][names("checkout")[1]] for u in world.updates()] == [5, 25, 50, 100]


@pytest.mark.parametrize("seen", ["audit-entry", "on-next-write"])
def test_manual_traffic_change_stands_down_and_never_fights(seen: str) -> None:
    world = World()
    world.until(12)  # phase 2: 25%
    assert world.canary_percent() == 25
    base, canary = names("checkout")
    world.cloud.set_traffic_by_hand("checkout", {base: 40, canary: 60})  # a human's update-traffic
    writes_before = len(world.updates())
    if seen == "audit-entry":  # the audit log entry of the human's change arrives
        world.send(TrafficChanged(time=at(12.5), service="checkout", canary_percent=None,
                                  principal="alice@olympuscloud.ai", detail="gcloud run services update-traffic"))
    world.until(70)  # long past the point where rollbackd would have promoted twice more
    halts = [d for d in world.of() if d.action == "halt"]
    assert len(halts) == 1, [(d.time, d.action, d.reason) for d in world.of()]
    assert "standing down, never fighting a human" in halts[0].reason
    assert world.of()[-1] is halts[0]  # nothing decided after standing down
    assert len(world.updates()) == writes_before, "rollbackd wrote the service after a human changed it"
    assert world.cloud.traffic_of("checkout") == {base: 40, canary: 60}
    assert any(n.severity == "ERROR" and n.decision["decision_id"] == halts[0].decision_id for n in world.notes.sent)
    assert world.status() == "halted"


def test_new_deploy_supersedes_the_running_rollout() -> None:
    from daemon.core.events import Deploy

    world = World()
    world.until(12)
    base, canary = names("checkout")
    newer = "checkout-00043-next"
    world.cloud.deploy("checkout", newer)
    world.send(Deploy(time=at(13), service="checkout", revision=newer, baseline=None, project="shop-prod",
                      location="europe-west1", canary_percent=0, principal="ci@olympuscloud.ai"))
    superseded = [d for d in world.of() if d.action == "supersede"]
    assert len(superseded) == 1 and superseded[0].canary == canary
    started = world.of()[-1]
    assert (started.action, started.canary, started.baseline, started.canary_percent_after) == \
        ("promote", newer, base, 5)  # the new canary starts at phase 1 against the same baseline
    assert world.cloud.traffic_of("checkout") == {base: 95, newer: 5, canary: 0} or \
        {r: p for r, p in world.cloud.traffic_of("checkout").items() if p} == {base: 95, newer: 5}
    assert world.engine.state_of("checkout").rollout.canary == newer


def test_authorised_pause_holds_and_resume_continues() -> None:
    world = World()
    world.until(5)
    world.command(5.5, "pause", reason="investigating INC-1")
    world.until(20)  # phase 1 would have ended at minute 10
    assert world.canary_percent() == 5, "promoted while paused"
    pause = [d for d in world.of() if d.action == "hold"][0]
    assert "paused by sre@olympuscloud.ai (investigating INC-1)" in pause.reason
    world.command(20.5, "resume")
    world.until(60)
    assert [d for d in world.of() if d.action == "resume"]
    assert world.canary_percent() > 5


def test_authorised_abort_rolls_back_and_promote_skips_ahead() -> None:
    world = World(("checkout", "payments"))
    world.until(3)
    world.command(3.5, "promote", service="payments", reason="hotfix, verified by hand")
    world.command(3.5, "abort", service="checkout", reason="wrong build")
    assert world.canary_percent("payments") == 25
    assert world.canary_percent("checkout") == 0 and world.status("checkout") == "rolled-back"
    assert "aborted by sre@olympuscloud.ai (wrong build)" in world.of("checkout")[-1].reason


@pytest.mark.parametrize("action", ["pause", "resume", "abort", "promote"])
def test_unauthorised_command_is_refused_logged_and_changes_nothing(action: str) -> None:
    clean, world = World(), World()
    for w in (clean, world):
        w.until(4)
        if action == "resume":  # only a held rollout can be resumed: an operator paused it
            w.command(4.2, "pause")
    world.command(4.5, action, by=STRANGER, reason="let me in")
    clean.until(40)
    world.until(40)
    refused = [d for d in world.of() if d.action == "refuse"]
    assert len(refused) == 1 and not refused[0].acted
    assert f"refused '{action}' from {STRANGER}: not an authorised principal" in refused[0].reason
    assert any(n.severity == "WARNING" and "refused" in n.subject for n in world.notes.sent)
    # Apart from the refusal (and the decision numbering after it), the rollout went exactly as without it.
    strip = lambda ds: [(d.time, d.action, d.canary_percent_before, d.canary_percent_after, d.reason)  # noqa: E731
                        for d in ds if d.action != "refuse"]
    assert strip(world.of()) == strip(clean.of())
    assert [u["traffic"] for u in world.updates()] == [u["traffic"] for u in clean.updates()]
