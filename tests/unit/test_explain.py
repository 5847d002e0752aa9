"""`rollbackd explain`: the state, the evidence and the rule behind one decision, in words."""
from __future__ import annotations

import os

import pytest

from daemon.bootstrap import engine_factory
from policies import load_default_policy
from simulations.explain import ExplainError, explain_file

REPLAY = engine_factory("replay")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "simulations", "recordings")


@pytest.fixture(scope="module")
def policy():
    return load_default_policy()


def test_rollback_names_the_failing_criterion_and_the_policy_rule(policy):
    # decision 2: with r0 = 1 the x5 canary is rolled back at 5% without the hold it needed before
    text = explain_file(os.path.join(CORPUS, "errors-x5.jsonl"), policy, number=2, build_engine=REPLAY)
    assert "ROLLBACK (traffic 5% → 0%)" in text
    assert "*G error_ratio: FAIL" in text  # the deciding, gating criterion
    assert "trail of error_ratio" in text
    assert "comparison.error_rate.on_fail = rollback" in text
    assert "before: " in text and "after:  rolling-back" in text


def test_at_picks_the_last_decision_at_or_before(policy):
    path = os.path.join(CORPUS, "freeze-friday.jsonl")
    text = explain_file(path, policy, at="2025-03-07T23:30:00Z", build_engine=REPLAY)
    assert "HOLD" in text and "freeze" in text.lower() and "America/Chicago" in text
    assert explain_file(path, policy, at="23:30", build_engine=REPLAY) == text


def test_memory_levels_name_their_policy_keys(policy):
    path = os.path.join(CORPUS, "memory-past-95.jsonl")
    assert "key_metrics.memory_utilization.on_warning = hold" in explain_file(path, policy, number=2, build_engine=REPLAY)
    assert "key_metrics.memory_utilization.on_critical = rollback" in explain_file(path, policy, number=3, build_engine=REPLAY)


def test_promotion_explains_the_gate(policy):
    text = explain_file(os.path.join(CORPUS, "healthy-promoted.jsonl"), policy, number=2, build_engine=REPLAY)
    assert "PROMOTE" in text and "PASSED" in text and "minimum time (10m)" in text


def test_errors_are_one_line(policy):
    path = os.path.join(CORPUS, "healthy-promoted.jsonl")
    with pytest.raises(ExplainError, match="decisions 1 to 4"):
        explain_file(path, policy, number=9, build_engine=REPLAY)
    with pytest.raises(ExplainError, match="no decision at or before"):
        explain_file(path, policy, at="2025-03-03T13:00:00Z", build_engine=REPLAY)
    with pytest.raises(ExplainError, match="RFC 3339"):
        explain_file(path, policy, at="yesterday", build_engine=REPLAY)


def test_cli(capsys):
    from daemon import cli
    cli._EXTRA_COMMANDS.clear()
    assert cli.main(["explain", os.path.join(CORPUS, "operator-abort.jsonl"), "--decision", "3"]) == 0
    assert "aborted by sre@olympuscloud.ai" in capsys.readouterr().out
    cli._EXTRA_COMMANDS.clear()
    assert cli.main(["explain", os.path.join(CORPUS, "operator-abort.jsonl")]) == 2
    assert "exactly one of --at TIME or --decision N" in capsys.readouterr().err
