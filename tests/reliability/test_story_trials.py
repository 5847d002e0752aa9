"""SIGKILL and replica trials with pauses, an incident's hold, a human's halt, the kill switch and a
redeploy mid-rollout (issue 11): after a restart, every service ends exactly as an uninterrupted run
ends. The scenario, the kill points and the checks are in tests/reliability/story_trials.py.

Default run: one SIGKILL trial of one daemon, and one of two replicas sharing the subscription (a
command reaches one of them). `slow`: the uninterrupted run itself (it must end as EXPECTED says),
more seeds, and two kills in a row.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.story_trials import EXPECTED, differences, run_trial


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
