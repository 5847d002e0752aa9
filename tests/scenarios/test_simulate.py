"""`rollbackd simulate`: closed loop, request counts follow the engine's own traffic decisions."""
from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from daemon.bootstrap import engine_factory
from daemon.core.timefmt import parse_rfc3339

from daemon import cli
from policies import load_default_policy
from simulations.replay import decision_line, replay_file
from simulations.simulate import simulate_file

REPLAY = engine_factory("replay")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIOS = os.path.join(ROOT, "simulations", "scenarios")
FRIDAY = """name: friday-evening
service: checkout
seed: 3
duration: 60m
start: "2025-03-07T22:50:00Z"
traffic: {rps: 100}
baseline: {revision: checkout-00041-base, error_rate: 0.05%}
canary: {revision: checkout-00042-good, error_rate: 0.05%}
"""


@pytest.fixture(scope="module")
def policy():
    return load_default_policy()


def _outcome(result, service="checkout"):
    return result.engine.state_of(service).rollout.status.value


def _canary_share(lines, after):
    canary = baseline = 0
    for line in lines:
        record = json.loads(line)
        if record.get("type") != "metrics" or record["time"] <= after:
            continue
        n = sum(record["request_count"].values())
        if record["revision"].endswith("good") or record["revision"].endswith("bad"):
            canary += n
        else:
            baseline += n
    return canary / max(1, canary + baseline)


def test_good_and_bad_canaries(policy):
    assert _outcome(simulate_file(os.path.join(SCENARIOS, "good-canary.yaml"), policy, build_engine=REPLAY)) == "completed"
    bad = simulate_file(os.path.join(SCENARIOS, "bad-canary.yaml"), policy, build_engine=REPLAY)
    assert _outcome(bad) == "rolled-back"
    rollback = [d for d in bad.decisions if d.action == "rollback"][0]
    # Closed loop: once rolled back, the canary gets no traffic, so no canary point is written.
    canary_times = [parse_rfc3339(r["time"]) for r in map(json.loads, bad.lines)
                    if r.get("type") == "metrics" and r["revision"] == rollback.canary]
    assert canary_times and max(canary_times) <= rollback.time + timedelta(minutes=1)

def test_requests_follow_a_held_rollout(policy, tmp_path):
    scenario = tmp_path / "friday.yaml"
    scenario.write_text(FRIDAY)
    result = simulate_file(str(scenario), policy, build_engine=REPLAY)
    assert [d.action for d in result.decisions] == ["promote", "hold"]
    # Held at 5% by the weekend freeze: the canary keeps getting ~5% of requests, not the schedule's 50%.
    assert 0.03 < _canary_share(result.lines, "2025-03-07T23:10:00Z") < 0.07


def test_recording_replays_to_the_same_decisions(policy, tmp_path):
    out = tmp_path / "sim.jsonl"
    result = simulate_file(os.path.join(SCENARIOS, "slow-leak.yaml"), policy, record=str(out), build_engine=REPLAY)
    replayed = replay_file(str(out), policy, build_engine=REPLAY)
    expected = [decision_line(d, "x") for d in result.decisions]
    assert [decision_line(d, "x") for d in replayed.decisions] == expected


def test_seed_changes_data_and_is_deterministic(policy):
    path = os.path.join(SCENARIOS, "good-canary.yaml")
    assert simulate_file(path, policy, seed=7, build_engine=REPLAY).lines == simulate_file(path, policy, seed=7, build_engine=REPLAY).lines
    assert simulate_file(path, policy, seed=7, build_engine=REPLAY).lines != simulate_file(path, policy, seed=8, build_engine=REPLAY).lines


def test_cli(capsys, tmp_path):
    cli._EXTRA_COMMANDS.clear()
    assert cli.main(["simulate", os.path.join(SCENARIOS, "bad-canary.yaml"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[-1]["action"] == "rollback" and rows[-1]["recording"] == "bad-canary.yaml"
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ntraffic: {rps: -1}\nbaseline: {revision: a}\ncanary: {revision: b}\n")
    cli._EXTRA_COMMANDS.clear()
    assert cli.main(["simulate", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml:2" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
