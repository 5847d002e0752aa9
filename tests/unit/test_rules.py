"""Walk the rule table of `daemon.core.rules`: for each row, a context in which it is the first row
that applies; and for each row and each row below it, a context in which both apply, where the upper
one must win. So moving a row anywhere else in the table makes a test here fail, unless the two rows
it passes can never apply together (`EXCLUSIVE`, checked too).

Contexts are built from facts directly (no rollouts, no mocks). Some combinations cannot come from a
real rollout (ready while the phase is unreadable, say); that makes the walk stricter than behaviour
needs, never looser. The expected order is written down here, independently of `RULES`.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from daemon.core import rules
from daemon.core.evaluation import Assessment
from daemon.core.events import Deploy
from daemon.core.rollout import ServiceState
from daemon.core.rules import RULES, Context, first_match
from daemon.core.step import step
from policies import load_default_policy

# A context in which only the last row ("in-phase") applies: early in a phase, nothing wrong.
QUIET = Context(
    failing=(), warnings=(), data_missing=False, gap_s=0, max_data_gap_s=600.0, on_missing_data="hold",
    gate=frozenset(), paused=False, alerts_open=0, alerts_hold=True, alerts_predate_canary=False,
    held_for=None, error=None, phase_name="canary 5%", elapsed_s=60.0, duration_s=600.0,
    max_extension_s=1200.0, min_time_reached=False, extension_spent=False, ready=False, frozen=None,
    on_extension_exhausted="hold", gating=("error_ratio",), phase_requests=10,
    waiting_for="error_ratio nodata",
)

# The expected order, most severe first, and for each row the facts that make it apply.
ORDER: list[tuple[str, dict[str, Any]]] = [
    ("failing-criteria", {"failing": ("error ratio 5% > 1%",)}),
    ("missing-data-rollback", {"data_missing": True, "on_missing_data": "rollback"}),
    ("missing-data-halt", {"data_missing": True, "on_missing_data": "halt"}),
    ("unknown-phase", {"error": IndexError("tuple index out of range")}),
    ("incident", {"gate": frozenset({"incident-1"})}),
    ("paused", {"paused": True}),
    ("alert", {"alerts_open": 1}),
    ("missing-data-hold", {"data_missing": True}),
    ("warning", {"warnings": ("p99 latency above the warning level",)}),
    ("date-out-of-range", {"error": OverflowError("date value out of range")}),
    ("still-frozen", {"held_for": "freeze", "frozen": "Fri 17:00–Mon 08:00 UTC", "ready": False,
                      "min_time_reached": True}),
    ("frozen", {"ready": True, "frozen": "Fri 17:00–Mon 08:00 UTC", "min_time_reached": True}),
    ("promote", {"ready": True, "min_time_reached": True}),
    ("extension-exhausted-rollback", {"extension_spent": True, "on_extension_exhausted": "rollback",
                                      "min_time_reached": True}),
    ("extension-exhausted-halt", {"extension_spent": True, "on_extension_exhausted": "halt",
                                  "min_time_reached": True}),
    ("extension-exhausted-hold", {"extension_spent": True, "min_time_reached": True}),
    ("wait", {"min_time_reached": True}),
    ("resume", {"held_for": "paused"}),
    ("in-phase", {}),
]
NAMES = [name for name, _ in ORDER]

# Pairs that no context can satisfy together (one fact, two values): their relative order cannot
# matter, so the walk cannot and need not pin it.
EXCLUSIVE = {
    ("still-frozen", "frozen"),  # not ready / ready
    ("still-frozen", "promote"),  # not ready / ready
    ("extension-exhausted-rollback", "extension-exhausted-halt"),  # on_extension_exhausted
}


def _context(*names: str) -> Context:
    """QUIET with these rows' facts; where two rows set one fact differently, the first named wins."""
    facts: dict[str, Any] = {}
    for name in names:
        for key, value in dict(ORDER)[name].items():
            facts.setdefault(key, value)
    return replace(QUIET, **facts)


def _rule(name: str) -> rules.Rule:
    return next(rule for rule in RULES if rule.name == name)


PAIRS = [(upper, lower) for i, upper in enumerate(NAMES) for lower in NAMES[i + 1:]]


def test_the_walk_covers_every_row() -> None:
    assert sorted(NAMES) == sorted(rule.name for rule in RULES)
    assert len(set(NAMES)) == len(NAMES)


def test_quiet_context_only_the_last_row_applies() -> None:
    assert [rule.name for rule in RULES if rule.applies(QUIET)] == ["in-phase"]


@pytest.mark.parametrize("name", NAMES)
def test_row_applies_first_on_its_own_facts(name: str) -> None:
    context = _context(name)
    assert next(rule.name for rule in RULES if rule.applies(context)) == name
    assert first_match(context).name == name


@pytest.mark.parametrize("upper,lower", PAIRS, ids=[f"{u}>{l}" for u, l in PAIRS])
def test_row_wins_over_every_row_below_it(upper: str, lower: str) -> None:
    context = _context(upper, lower)
    assert _rule(upper).applies(context)
    if (upper, lower) in EXCLUSIVE:
        assert not _rule(lower).applies(context)  # really exclusive: the order of the two is free
    else:
        assert _rule(lower).applies(context), f"{lower} should apply together with {upper}"
    assert first_match(context).name == upper


def test_the_table_ends_with_a_row_that_always_applies() -> None:
    # first_match never runs off the end of the table.
    last = RULES[-1]
    assert last.applies(QUIET) and last.action.kind == rules.UNCHANGED


@pytest.mark.parametrize("name,reason", [
    ("failing-criteria", "error ratio 5% > 1%"),
    ("missing-data-rollback", "metrics missing for 10m (limit 10m)"),
    ("incident", "blocking incident(s) open (incident-1): no promotion while a P0/P1 incident is active"),
    ("alert", "1 alert(s) open"),
    ("missing-data-hold", "metrics missing for 10m; never promoting without evidence"),
    ("frozen", "ready for the next phase, but promotions are frozen (Fri 17:00–Mon 08:00 UTC)"),
    ("promote", "canary 5% passed after 10m (error_ratio; 10 canary requests)"),
    ("extension-exhausted-hold", "canary 5% still lacks evidence after 30m (duration 10m + extension 20m)"),
    ("wait", "minimum time reached; waiting for evidence: error_ratio nodata"),
    ("resume", "hold (paused) cleared"),
])
def test_reasons_read_the_context(name: str, reason: str) -> None:
    context = replace(_context(name), gap_s=600,
                      elapsed_s=1800.0 if name.startswith("extension") else 600.0)
    assert first_match(context).name == name
    assert _rule(name).reason(context) == reason


def test_context_of_a_fresh_rollout_decides_nothing() -> None:
    # From real values: one minute into phase 1 of the default policy, on a Tuesday (no freeze).
    policy = load_default_policy()
    t0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
    rollout = step(_empty(), Deploy(time=t0, service="api", revision="api-2", baseline="api-1"),
                   policy).state.rollout
    assert rollout is not None
    context = Context.of(rollout, policy, Assessment(results=(), phase_requests=0), t0 + timedelta(minutes=1))
    assert context.error is None and context.frozen is None and not context.min_time_reached
    assert context.phase_name == policy.phase_name(0)
    assert first_match(context).name == "in-phase"


def test_context_of_a_phase_the_policy_lacks_sets_the_error() -> None:
    policy = load_default_policy()
    t0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
    rollout = step(_empty(), Deploy(time=t0, service="api", revision="api-2", baseline="api-1"),
                   policy).state.rollout
    assert rollout is not None
    lost = replace(rollout, phase_index=len(policy.phases))
    context = Context.of(lost, policy, Assessment(results=(), phase_requests=0), t0 + timedelta(minutes=1))
    assert isinstance(context.error, IndexError)
    assert first_match(context).name == "unknown-phase"
    assert first_match(replace(context, failing=("bad",))).name == "failing-criteria"


def _empty() -> ServiceState:
    return ServiceState(service="api")
