"""Crash and restart (issue 5, item 1): SIGKILL `rollbackd run --sandbox` and restart it on the same
--state-dir; it must end exactly like an uninterrupted run.

Each trial runs the default sandbox scenario (checkout: good canary, promoted; payments: bad
canary, rolled back) with the short test policy, kills the daemon, restarts it on the same state
directory, lets it finish, and checks against an uninterrupted run of the same seed:
- the final traffic of every service is the same (cloud.json);
- no traffic change is applied twice: every UpdateService in the simulated Cloud Run's request log
  carries a distinct decision id, and no service gets the same split twice in a row;
- no decision is missing from the journal: decision numbers are 1..N per rollout, and every acted
  traffic decision reached Cloud Run;
- the phase timers continue: every decision (id, time, action, traffic before/after, phase) and
  the final `rollbackd.dev/*` annotations (phase-started included) equal the uninterrupted run's.
  A reset timer would move every later promotion.

Kill points: at random (the journal grows past a random fraction of its final size, then SIGKILL),
and at deterministic crash points in the dangerous windows (between journaling a decision and
acting on it, between a traffic change and what follows it, between the world publishing an event
and saving itself). The default run has a few of each; the `slow` variant runs 50 random trials
plus every crash point.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.sandbox_procs import (REPO, RunOutcome, Zygote, check_journal_contiguous,
                                             check_no_double_action, check_traffic_matches_decisions,
                                             sandbox_argv)
from tests.reliability.zygote import CRASH_POINTS

RESTART_TIMEOUT_S = 45.0  # a restart that never finishes (a stuck rollout) fails the trial
EXPECTED_END = {"checkout": "completed", "payments": "rolled-back"}


@pytest.fixture(scope="module")
def reference(zygote: Zygote, tmp_path_factory: pytest.TempPathFactory) -> RunOutcome:
    """The uninterrupted run every trial is compared with."""
    state = str(tmp_path_factory.mktemp("uninterrupted"))
    assert zygote.run(sandbox_argv(state), state) == 0
    outcome = RunOutcome.read(state)
    statuses = {name: a.get("rollbackd.dev/status") for name, a in outcome.annotations.items()}
    assert statuses == EXPECTED_END, "the scenario itself must promote one canary and roll back the other"
    assert not check_no_double_action(outcome) and not check_journal_contiguous(outcome)
    outcome.journal_bytes = os.path.getsize(os.path.join(state, "journal.jsonl"))  # type: ignore[attr-defined]
    return outcome


def problems_after_restart(state: str, reference: RunOutcome) -> list[str]:
    outcome = RunOutcome.read(state)
    problems = check_no_double_action(outcome) + check_journal_contiguous(outcome)
    problems += check_traffic_matches_decisions(outcome)
    if outcome.final_traffic != reference.final_traffic:
        problems.append(f"final traffic {outcome.final_traffic} != uninterrupted {reference.final_traffic}")
    ours, theirs = outcome.decision_summary(), reference.decision_summary()
    if ours != theirs:
        extra = [d for d in ours if d not in theirs]
        missing = [d for d in theirs if d not in ours]
        problems.append(f"decisions differ from the uninterrupted run: extra {extra}, missing {missing}")
    if outcome.annotations != reference.annotations:
        problems.append(f"annotations differ: {outcome.annotations} != {reference.annotations}")
    return problems


def restart_to_end(zygote: Zygote, state: str) -> None:
    rc = zygote.run(sandbox_argv(state), state, timeout_s=RESTART_TIMEOUT_S)
    assert rc == 0, f"restart exited {rc}: {Path(state, 'stderr.txt').read_text()[-2000:]}"


def random_trial(zygote: Zygote, reference: RunOutcome, state: str, seed: int) -> tuple[str, list[str]]:
    fraction = random.Random(seed).uniform(0.02, 0.98)
    threshold = int(fraction * reference.journal_bytes)  # type: ignore[attr-defined]
    rc, size = zygote.run_and_kill_when(sandbox_argv(state), state, journal_bytes=threshold)
    restart_to_end(zygote, state)
    killed = "killed" if rc == -signal.SIGKILL else f"finished first (rc {rc})"
    return f"seed {seed}: {killed} at {size} journal bytes ({fraction:.0%})", problems_after_restart(state, reference)


def crash_point_trial(zygote: Zygote, reference: RunOutcome, state: str, point: str) -> list[str]:
    rc = zygote.run(sandbox_argv(state), state, crash_at=point)
    assert rc == -signal.SIGKILL, f"crash point {point} was never reached (exit {rc})"
    restart_to_end(zygote, state)
    return problems_after_restart(state, reference)


# --- default run: a handful ---------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_sigkill_at_random_point_then_restart_ends_like_uninterrupted(zygote: Zygote, reference: RunOutcome,
                                                                      tmp_path: Path, seed: int) -> None:
    where, problems = random_trial(zygote, reference, str(tmp_path), seed)
    assert not problems, f"{where}: {problems}"


@pytest.mark.parametrize("point", ["decision-journaled:1", "before-apply:3", "after-apply:2",
                                   "world-published:1", "world-saved:3"])
def test_sigkill_at_crash_point_then_restart_ends_like_uninterrupted(zygote: Zygote, reference: RunOutcome,
                                                                     tmp_path: Path, point: str) -> None:
    problems = crash_point_trial(zygote, reference, str(tmp_path), point)
    assert not problems, f"crash at {point}: {problems}"


def test_two_crashes_in_a_row_then_restart(zygote: Zygote, reference: RunOutcome, tmp_path: Path) -> None:
    """Killed, restarted, killed again before the restart finished: still ends the same."""
    state = str(tmp_path)
    assert zygote.run(sandbox_argv(state), state, crash_at="decision-journaled:2") == -signal.SIGKILL
    assert zygote.run(sandbox_argv(state), state, crash_at="before-apply:2") == -signal.SIGKILL
    restart_to_end(zygote, state)
    assert not problems_after_restart(state, reference)


def test_real_cli_process_sigkill_and_restart(reference: RunOutcome, tmp_path: Path) -> None:
    """The same through the `rollbackd` entry point as a user starts it (no zygote)."""
    state = str(tmp_path / "state")
    command = [sys.executable, "-m", "daemon.cli", *sandbox_argv(state)]
    env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
    journal = Path(state, "journal.jsonl")
    with open(tmp_path / "out1.txt", "wb") as out:
        proc = subprocess.Popen(command, cwd=str(REPO), env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        half = reference.journal_bytes // 2  # type: ignore[attr-defined]
        while proc.poll() is None and time.monotonic() < deadline:
            if journal.exists() and journal.stat().st_size >= half:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the daemon finished before it could be killed"
    done = subprocess.run(command, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr
    assert not problems_after_restart(state, reference)


# --- slow: 50 seeded random trials and every crash point -----------------------------------------

@pytest.mark.slow
def test_fifty_seeded_sigkill_trials(zygote: Zygote, reference: RunOutcome, tmp_path: Path) -> None:
    failures, killed = [], 0
    for seed in range(100, 150):
        state = str(tmp_path / f"trial-{seed}")
        where, problems = random_trial(zygote, reference, state, seed)
        killed += "killed" in where
        if problems:
            failures.append(f"{where}: {problems}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    assert not failures, f"{len(failures)}/50 trials failed:\n" + "\n".join(failures)
    assert killed >= 45, f"only {killed}/50 trials were killed before the run ended"


@pytest.mark.slow
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_every_crash_point(zygote: Zygote, reference: RunOutcome, tmp_path: Path, point: str) -> None:
    failures = []
    for count in range(1, 8):
        state = str(tmp_path / f"{count}")
        rc = zygote.run(sandbox_argv(state), state, crash_at=f"{point}:{count}")
        if rc != -signal.SIGKILL:
            break  # the run has fewer such points
        restart_to_end(zygote, state)
        problems = problems_after_restart(state, reference)
        if problems:
            failures.append(f"{point}:{count}: {problems}")
    assert not failures, "\n".join(failures)
