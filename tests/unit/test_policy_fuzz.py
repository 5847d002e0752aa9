"""Hypothesis: the policy loader never raises anything but PolicyError, whatever it is fed.

Random text, random YAML-ish text, and random mutations of the bundled default.yaml (the closest
thing to what an SRE types). The slow variant runs 2,000 examples under `make test` (each is a
full YAML parse and validation; the 100k-case bulk fuzzing of the event intakes is in
test_intake_fuzz_bulk.py).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import default_policy_path
from policies.loader import PolicyError, load_policy_text
from policies.model import Policy

DEFAULT_TEXT = default_policy_path().read_text(encoding="utf-8")
DEFAULT_LINES = DEFAULT_TEXT.splitlines(keepends=True)

# Pieces that are meaningful to YAML or to the policy's value parsers.
_TOKENS = st.sampled_from([
    ":", " ", "\n", "  ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "<<: ", "!!int ", "!!str ", "!tag ",
    "?", "'", '"', "#", "|", ">", "---", "...", "%", "ms", "s", "m", "h", "5", "0.1", "-1", "1e309", ".nan",
    ".inf", "~", "null", "true", "2020-13-45", "0x1F", "Fri 17:00", "America", "\t", "\x00", "é", "phases",
    "traffic", "duration", "overrides", "match", "policy", "labels", "service", "managed", "pay-*", "*",
    "limits", "max_rollout_age", "14d", "366d",
])
yamlish = st.lists(_TOKENS, max_size=60).map("".join)


@st.composite
def mutated_default(draw: st.DrawFn) -> str:
    lines = list(DEFAULT_LINES)
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "replace_value", "insert", "indent", "swap"]))
        line = lines[index]
        if action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, line)
        elif action == "replace_value" and ":" in line:
            key = line.split(":", 1)[0]
            lines[index] = f"{key}: {draw(yamlish)}\n"
        elif action == "insert":
            lines.insert(index, draw(yamlish) + "\n")
        elif action == "indent":
            lines[index] = " " * draw(st.integers(0, 6)) + line.lstrip(" ")
        elif action == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        if not lines:
            lines = [""]
    return "".join(lines)


inputs = st.one_of(st.text(max_size=300), yamlish, mutated_default())


def _load(text: str) -> None:
    try:
        policy = load_policy_text(text, "fuzz.yaml")
    except PolicyError as exc:
        assert exc.issues, "a PolicyError must carry at least one issue"
        for issue in exc.issues:
            assert issue.line >= 1 and issue.col >= 1
            assert issue.message
        return
    assert isinstance(policy, Policy)
    policy.for_service("some-service")  # a valid policy resolves without raising


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs)
def test_loader_only_raises_policy_error(text: str) -> None:
    _load(text)


@pytest.mark.slow
@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs)
def test_loader_only_raises_policy_error_many(text: str) -> None:
    _load(text)
