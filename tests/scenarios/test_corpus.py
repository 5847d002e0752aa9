"""The curated corpus (simulations/recordings) replays to its expected outcomes.

Every recording against expected.json; determinism (in-process for every file, and byte for byte
through the CLI for one); delivery quirks (duplicated, reordered and garbage-laced variants make
the same decisions as their clean source); the corpus regenerates byte-identically from its seeds;
and `rollbackd backtest simulations/recordings` passes (this is how `make test` backtests it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from daemon.bootstrap import engine_factory
from policies import load_default_policy
from simulations.backtest import rows_from_result, run_backtest
from simulations.corpus_lines import GARBAGE
from simulations.replay import decision_line, replay_file

BACKTEST = engine_factory("backtest")
REPLAY = engine_factory("replay")
# The console-script entry point (`rollbackd` = daemon.cli:main), not `python -m daemon.cli`.
CLI = [sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main())"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "simulations", "recordings")
with open(os.path.join(CORPUS, "expected.json"), encoding="utf-8") as _handle:
    EXPECTED = {k: v for k, v in json.load(_handle).items() if not k.startswith("_")}

# Expectations the current core does not meet. Each is reported to the core's owner; the
# expectation stays what it should be (never edited to match), and the test is a strict xfail so
# it starts failing the day the behaviour is fixed and the entry must be removed.
KNOWN_ISSUES: dict[str, str] = {}


@pytest.fixture(scope="module")
def policy():
    return load_default_policy()


def _decisions(path: str, policy) -> list[str]:
    result = replay_file(path, policy, build_engine=REPLAY)
    return [decision_line(d, "x") for d in result.decisions]


def test_corpus_is_big_enough():
    files = [f for f in os.listdir(CORPUS) if f.endswith(".jsonl")]
    assert len(files) >= 20
    assert sorted(files) == sorted(EXPECTED), "every recording has an expectation and vice versa"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_reaches_expected_outcome(name, policy, request):
    if name in KNOWN_ISSUES:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_ISSUES[name], strict=True))
    result = replay_file(os.path.join(CORPUS, name), policy, build_engine=REPLAY)
    got = {row.service: row.outcome for row in rows_from_result(result)}
    assert got == EXPECTED[name]


def test_replay_is_deterministic_in_process(policy):
    for name in sorted(EXPECTED)[:8]:
        path = os.path.join(CORPUS, name)
        assert _decisions(path, policy) == _decisions(path, policy)


def test_replay_json_is_byte_identical_through_the_cli():
    path = os.path.join(CORPUS, "multi-service.jsonl")
    command = [*CLI, "replay", "--json", path]
    first = subprocess.run(command, capture_output=True, check=True, cwd=ROOT)
    second = subprocess.run(command, capture_output=True, check=True, cwd=ROOT)
    assert first.stdout and first.stdout == second.stdout
    services = {json.loads(line)["service"] for line in first.stdout.decode().splitlines()}
    assert services == {"checkout", "payments", "search"}


@pytest.mark.parametrize("clean,variant", [
    ("healthy-promoted.jsonl", "healthy-dup-reordered.jsonl"),
    ("errors-x5.jsonl", "errors-dup-reordered.jsonl"),
    ("errors-x5.jsonl", "errors-garbage.jsonl"),
])
def test_delivery_quirks_change_no_decision(clean, variant, policy):
    clean_lines = _decisions(os.path.join(CORPUS, clean), policy)
    assert clean_lines, "the clean recording makes decisions"
    assert _decisions(os.path.join(CORPUS, variant), policy) == clean_lines


def test_variants_really_are_quirky(policy):
    """Guard against a transform that silently did nothing."""
    with open(os.path.join(CORPUS, "healthy-dup-reordered.jsonl"), encoding="utf-8") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    assert len(lines) > len(set(lines)), "some lines are delivered twice"
    times = [json.loads(line)["time"] for line in lines if '"type":"metrics"' in line]
    assert times != sorted(times), "some metrics arrive out of order"
    garbage = replay_file(os.path.join(CORPUS, "errors-garbage.jsonl"), policy, build_engine=REPLAY)
    assert len(garbage.rejected) >= len(GARBAGE) - 1  # the revision-less deploy is refused by the core
    assert all(number > 2 for number, _ in garbage.rejected)


def test_corpus_regenerates_byte_identically():
    done = subprocess.run([sys.executable, "-m", "simulations.corpus", "--check"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_backtest_of_the_corpus_passes_through_the_cli():
    files = [os.path.join(CORPUS, name) for name in sorted(EXPECTED) if name not in KNOWN_ISSUES]
    done = subprocess.run([*CLI, "backtest", "--workers", "2", *files],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "expectation(s) broken" not in done.stdout


def test_backtest_of_the_whole_corpus_breaks_only_known_issues(policy):
    report = run_backtest([CORPUS], policy, workers=2, build_engine=BACKTEST)
    broken = {problem.split(" ", 1)[0] for problem in report.problems}
    assert broken == set(KNOWN_ISSUES)
    assert not report.errors
