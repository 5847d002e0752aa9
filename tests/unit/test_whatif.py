"""What-if: two policies on one recording, side by side, with the deciding criteria and thresholds."""
from __future__ import annotations

import json
import os

import pytest

from daemon.bootstrap import engine_factory
from policies import default_policy_path, load_default_policy
from policies.loader import load_policy
from simulations.replay import replay_file
from simulations.whatif import compare_replays, deciding_criteria

REPLAY = engine_factory("replay")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDING = os.path.join(ROOT, "simulations", "recordings", "errors-x5.jsonl")
TUNED = os.path.join(ROOT, "policies", "examples", "tuned.yaml")


@pytest.fixture(scope="module")
def pair():
    return replay_file(RECORDING, load_policy(TUNED), build_engine=REPLAY), replay_file(RECORDING, load_default_policy(), build_engine=REPLAY)


def test_same_policy_has_no_differences():
    policy = load_default_policy()
    a, b = replay_file(RECORDING, policy, build_engine=REPLAY), replay_file(RECORDING, policy, build_engine=REPLAY)
    text = compare_replays(a, b, new_name="a", old_name="b")
    assert "same decisions" in text and "*" not in text
    row = json.loads(compare_replays(a, b, new_name="a", old_name="b", as_json=True))
    assert row["same"] is True and row["differences"] == []


def test_differences_show_criterion_values_and_thresholds(pair):
    new, old = pair
    text = compare_replays(new, old, new_name="tuned", old_name="default")
    assert "why they differ:" in text
    # The tuned policy's error-ratio limit (1.1x) and the default's (1x) both appear with the
    # e-value against its threshold (1/0.45%: the ratio test's weighted share of alpha = 1%).
    assert "allowed ratio 1.1x" in text and "allowed ratio 1x" in text
    assert "error_ratio: FAIL" in text and "vs threshold 222.2" in text
    rows = [line for line in text.splitlines() if line.lstrip().startswith("*")]
    assert rows, "differing decisions are marked"


def test_json_form(pair):
    new, old = pair
    row = json.loads(compare_replays(new, old, new_name="tuned", old_name="default", as_json=True))
    assert row["service"] == "checkout" and row["same"] is False
    assert row["new"]["outcome"] == row["old"]["outcome"] == "rolled_back"
    criteria = [c for d in row["differences"] for side in ("new", "old") if d[side]
                for c in d[side]["criteria"]]
    assert any(c["name"] == "error_ratio" and c["outcome"] == "fail" and c["threshold"] == pytest.approx(1 / 0.0045)
               for c in criteria)


def test_deciding_criteria_of_a_rollback_are_the_failing_ones(pair):
    _, old = pair
    rollback = [d for d in old.decisions if d.action == "rollback"][0]
    names = [c.name for c in deciding_criteria(rollback)]
    assert names == ["error_ratio"]


def test_cli_compare_policy(capsys):
    from daemon import cli
    cli._EXTRA_COMMANDS.clear()
    code = cli.main(["replay", RECORDING, "--policy", TUNED, "--compare-policy", str(default_policy_path())])
    out = capsys.readouterr().out
    assert code == 0 and "NEW" in out and "OLD" in out and "why they differ" in out
