"""Missing data (issue 5, item 5): no metrics, or one arm only, never promotes; past the policy's
`evidence.max_data_gap` the rollout does what `evidence.on_missing_data` says, and says why.

Drives the real engine and core through `simulations.replay.Replayer` (virtual clock, minute
ticks, the simulated Cloud Run), with a healthy A/A rollout from the scenario generator whose
metrics are removed for a stretch of minutes: both arms, the canary only, or the baseline only.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest

from daemon.bootstrap import engine_factory
from daemon.core.events import Deploy, Metrics, Tick
from policies import load_default_policy
from simulations.replay import Replayer
from simulations.scenarios import generate, get_scenario

REPLAY = engine_factory("replay")
START = datetime.fromisoformat("2026-11-24T14:00:00+00:00")
# Healthy A/A; open loop, so the split stays at 50% after phase 3 (both arms keep reporting however
# long a gap delays the rollout).
SCENARIO = replace(get_scenario("S0-aa-clean"), schedule=((5, 10), (25, 15), (50, None)))


class Notes:
    """A Notifier that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def notify(self, command: Any) -> None:
        self.sent.append(command)


def with_evidence(policy: Any, **changes: Any) -> Any:
    return policy.model_copy(update={"evidence": policy.evidence.model_copy(update=changes)})


def run(policy: Any, gap: tuple[int, int] | None, arms: tuple[str, ...] = ("canary", "baseline"),
        minutes: int = 90) -> tuple[Replayer, Notes]:
    """Replay the healthy rollout with the arms' metrics removed for minutes [gap[0], gap[1])."""
    notes = Notes()
    replayer = Replayer(policy, engine_kwargs={"notifier": notes}, build_engine=REPLAY)
    records = generate(SCENARIO, np.random.default_rng(11), minutes, START)
    replayer.feed(Deploy(time=START, service=SCENARIO.service, revision=SCENARIO.canary_revision,
                         baseline=SCENARIO.baseline_revision, canary_percent=0, principal="ci@example.com"))
    for record in records:
        missing = gap is not None and gap[0] <= record.minute < gap[1]
        for arm in ("baseline", "canary"):
            metrics: Metrics | None = getattr(record, arm)
            if metrics is not None and not (missing and arm in arms):
                replayer.feed(metrics)
    replayer.feed(Tick(time=START + timedelta(minutes=minutes + 10)))
    return replayer, notes


def gap_window(gap: tuple[int, int]) -> tuple[datetime, datetime]:
    """The data-time span of the missing minutes (minute m covers (START+m-1, START+m])."""
    return START + timedelta(minutes=gap[0]), START + timedelta(minutes=gap[1] - 1)


def promotions_in(replayer: Replayer, window: tuple[datetime, datetime]) -> list[Any]:
    return [d for d in replayer.decisions if d.action == "promote" and d.canary_percent_before > 0
            and window[0] <= d.time <= window[1]]


def test_clean_run_promotes_to_100() -> None:
    replayer, _ = run(load_default_policy(), None)
    assert [d.canary_percent_after for d in replayer.decisions if d.action == "promote"] == [5, 25, 50, 100]


@pytest.mark.parametrize("arms", [("canary", "baseline"), ("canary",), ("baseline",)],
                         ids=["no-metrics", "canary-missing", "baseline-missing"])
@pytest.mark.parametrize("gap", [(5, 12), (8, 30), (20, 45)], ids=["7m-at-phase-end", "22m", "25m-phase-2"])
def test_never_promotes_while_data_is_missing(arms: tuple[str, ...], gap: tuple[int, int]) -> None:
    replayer, _ = run(load_default_policy(), gap, arms)
    assert not promotions_in(replayer, gap_window(gap)), [
        (d.time, d.reason) for d in promotions_in(replayer, gap_window(gap))]
    # Evidence that arrives afterwards moves the rollout on again: nothing got stuck on the gap.
    after = [d for d in replayer.decisions if d.action == "promote" and d.time > gap_window(gap)[1]]
    assert after, [(d.time, d.action, d.reason) for d in replayer.decisions]


@pytest.mark.parametrize("arms", [("canary", "baseline"), ("canary",), ("baseline",)],
                         ids=["no-metrics", "canary-missing", "baseline-missing"])
def test_past_the_limit_hold_notifies_and_says_why(arms: tuple[str, ...]) -> None:
    policy = load_default_policy()
    assert policy.evidence.on_missing_data == "hold" and policy.evidence.max_data_gap == 600
    gap = (3, 25)
    replayer, notes = run(policy, gap, arms)
    holds = [d for d in replayer.decisions if d.action == "hold" and "metrics missing" in d.reason]
    assert holds, [(d.time, d.action, d.reason) for d in replayer.decisions]
    hold = holds[0]
    # Held once the gap reached the limit: ten missing minutes after the gap began.
    assert hold.time == START + timedelta(minutes=gap[0] + 9)
    assert "never promoting without evidence" in hold.reason and "10m" in hold.reason
    assert hold.canary_percent_after == hold.canary_percent_before  # no traffic change
    warned = [n for n in notes.sent if n.severity == "WARNING" and "missing-data" in n.subject]
    assert warned and warned[0].decision["decision_id"] == hold.decision_id
    assert not promotions_in(replayer, gap_window(gap))


@pytest.mark.parametrize("action,final_percent", [("rollback", 0), ("halt", 5)])
def test_past_the_limit_rollback_or_halt_when_the_policy_says_so(action: str, final_percent: int) -> None:
    policy = with_evidence(load_default_policy(), on_missing_data=action)
    gap = (3, 25)
    replayer, notes = run(policy, gap)
    acted = [d for d in replayer.decisions if d.action == action]
    assert len(acted) == 1, [(d.time, d.action, d.reason) for d in replayer.decisions]
    decision = acted[0]
    assert decision.time == START + timedelta(minutes=gap[0] + 9)
    assert "metrics missing for 10m (limit 10m)" in decision.reason
    assert replayer.decisions[-1] is decision  # the rollout ended there
    assert replayer.cloud.traffic_of(SCENARIO.service).get(SCENARIO.canary_revision, 0) == final_percent
    assert any(n.severity == "ERROR" and n.decision["decision_id"] == decision.decision_id for n in notes.sent)


def test_short_gap_below_the_limit_only_delays() -> None:
    """A gap shorter than max_data_gap holds nothing and rolls back nothing: the phase just waits for
    evidence and promotes once the minutes are back."""
    clean, _ = run(load_default_policy(), None)
    gappy, notes = run(load_default_policy(), (8, 13))
    assert not [d for d in gappy.decisions if d.action in ("rollback", "halt")]
    assert [d.canary_percent_after for d in gappy.decisions if d.action == "promote"] == [5, 25, 50, 100]
    first_promotion = lambda r: next(d.time for d in r.decisions if d.action == "promote" and d.canary_percent_after == 25)  # noqa: E731
    assert first_promotion(gappy) >= first_promotion(clean)
