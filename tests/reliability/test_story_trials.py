"""SIGKILL and replica trials with pauses, an incident's hold, a human's halt, the kill switch and a
redeploy mid-rollout (issue 11): after a restart, every service ends exactly as an uninterrupted run
ends. The scenario, the kill points and the checks are in tests/reliability/story_trials.py.

Default run: one SIGKILL trial of one daemon, and one of two replicas, each command, alert and
deploy reaching one of them (each replica reads its own topic: see `run_trial` for why). `slow`: the uninterrupted run itself (it must end as EXPECTED says),
two more seeds with two kills each.

The last test is a bug the replica design exposed (now fixed in `Engine.read_back`): a replica that
learned the kill switch from another replica's records must also learn that it is off.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.story_trials import EXPECTED, differences, run_trial
from tests.reliability.test_live_rails import world  # noqa: F401 - the fixture


def _assert_clean(tmp: Path, seed: int, **kwargs: int) -> None:
    trial = run_trial(tmp, seed=seed, **kwargs)
    assert trial.kills or not kwargs.get("kills", 1), "no daemon was killed"
    assert not trial.problems, f"seed {seed}, killed {trial.kills}:\n" + "\n".join(trial.problems)


def test_sigkill_amid_pause_hold_halt_kill_switch_and_redeploy(pubsub_emulator: str, tmp_path: Path) -> None:
    _assert_clean(tmp_path, seed=1)


def test_two_replicas_one_killed_amid_the_same_stories(pubsub_emulator: str, tmp_path: Path) -> None:
    _assert_clean(tmp_path, seed=2, replicas=2)


@pytest.mark.slow
def test_uninterrupted_run_ends_as_expected(pubsub_emulator: str, tmp_path: Path) -> None:
    """What the trials compare with is what a run that nobody kills ends with."""
    trial = run_trial(tmp_path, seed=0, kills=0)
    assert not differences(trial.outcome, EXPECTED) and not trial.problems, "\n".join(trial.problems)


@pytest.mark.slow
@pytest.mark.parametrize("seed,replicas,kills", [(3, 1, 2), (5, 2, 2)])
def test_more_seeds(pubsub_emulator: str, tmp_path: Path, seed: int, replicas: int, kills: int) -> None:
    _assert_clean(tmp_path, seed=seed, replicas=replicas, kills=kills)


# --- found by the replica trials: the kill switch learned from another replica's records ---------

def test_a_replica_that_learned_the_kill_switch_from_the_records_also_learns_it_is_off(world: Any) -> None:
    from daemon.core.commands import ANNOTATION_PREFIX as P
    from tests.integration.live_harness import LiveDaemon, Topics, live_settings, wait_until
    from tests.reliability.test_live_rails import WAIT_S, start_rollout

    other = Topics.create("ks")
    feeder = start_rollout(world)  # the deploy reaches replica A
    try:
        b_settings = live_settings(world.fakes, other, world.tmp / "journal-b.jsonl")
        with LiveDaemon(world.settings(), world.clock) as a, LiveDaemon(b_settings, world.clock) as b:
            wait_until(lambda: world.splits() == [5], WAIT_S, "phase 1")
            _ctl(world, world.topics.events, "kill-switch-on")  # reaches A only
            wait_until(lambda: not b.engine.actions_enabled, WAIT_S, "B to read the switch from the records")
            _ctl(world, world.topics.events, "kill-switch-off")  # reaches A only
            wait_until(lambda: world.run.annotations_of("checkout").get(f"{P}kill-switch", "") == "",
                       WAIT_S, "the switch cleared on the service")
            a.stop()  # the replica that was told goes away; B must carry on alone
            # Three 2-minute phases are left: 40 virtual minutes (20 s) is ample; the bug waits forever.
            wait_until(lambda: world.run.annotations_of("checkout").get(f"{P}status") == "completed", 20,
                       "B to finish the rollout")
    finally:
        feeder.stop()


def _ctl(world: Any, topic: str, action: str) -> None:
    """`rollbackd ctl` as alice: the annotation on the service; the fake's audit entry goes to the
    world's audit topic (replica A's), so only A hears it."""
    from tests.integration.live_harness import ctl_as

    code, _, err = ctl_as("token-alice", [action, "checkout", "--reason", "test"], world.fakes, world.clock)
    assert code == 0, err
