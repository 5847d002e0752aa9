"""The policy's `limits` section: its defaults are the sane ranges `daemon.core.sanity` applies
without a policy, it is top level only, and it cannot be set so that a restarted daemon would
refuse its own rollouts."""
from __future__ import annotations

import pytest

from daemon.core import sanity
from policies import default_policy_path
from policies.diff import describe_changes
from policies.loader import PolicyError, load_policy, load_policy_text
from policies.model import Limits

DEFAULT_TEXT = default_policy_path().read_text(encoding="utf-8")


def _issues(text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.yaml")
    return "\n".join(str(issue) for issue in caught.value.issues)


def test_defaults_match_the_sanity_module() -> None:
    assert sanity.ranges_from(Limits()) == sanity.Ranges()
    assert sanity.ranges_from(load_policy(default_policy_path()).limits) == sanity.Ranges()
    assert sanity.INTAKE_DEFAULT == sanity.Ranges(max_age_s=None)


def test_a_policy_without_the_section_gets_the_defaults() -> None:
    start = DEFAULT_TEXT.index("\nlimits:\n") + 1
    end = DEFAULT_TEXT.index("# Which services rollbackd manages.")
    policy = load_policy_text(DEFAULT_TEXT[:start] + DEFAULT_TEXT[end:])
    assert policy.limits == Limits()
    assert policy.for_service("checkout").limits == Limits()


def test_an_override_cannot_change_the_limits() -> None:
    text = DEFAULT_TEXT.replace("overrides: []", "overrides:\n  - match: {service: x}\n"
                                "    policy: {limits: {max_text_chars: 300}}")
    assert "'limits' is top-level only" in _issues(text)


def test_the_age_limit_must_outlast_the_phases() -> None:
    # The default phases take at most 10+15+15 minutes plus 3 x 20 minutes of extension: 100m.
    message = _issues(DEFAULT_TEXT.replace("max_rollout_age: 14d", "max_rollout_age: 1h"))
    assert "limits.max_rollout_age" in message and "1h is not longer than" in message and "(100m)" in message
    assert load_policy_text(DEFAULT_TEXT.replace("max_rollout_age: 14d", "max_rollout_age: 2h")).limits.max_rollout_age == 7200


@pytest.mark.parametrize("line, fragment", [
    ("max_future_skew: 2d", "max_future_skew must be between 0s and 1d"),
    ("max_rollout_age: 400d", "max_rollout_age must be between 1h and 366d"),
    ("max_metrics_interval: 1500ms", "whole seconds"),
    ("max_metrics_interval: 2d", "whole seconds between 1s and 1d"),
    ("max_text_chars: 10", "greater than or equal to 200"),
    ("max_text_chars: 1d", "integer"),
])
def test_limits_out_of_range_are_refused_with_their_line(line: str, fragment: str) -> None:
    key = line.split(":")[0]
    original = next(row for row in DEFAULT_TEXT.splitlines() if row.strip().startswith(key + ":"))
    indent = original[: len(original) - len(original.lstrip())]
    message = _issues(DEFAULT_TEXT.replace(original, indent + line))
    assert f"limits.{key}" in message and fragment in message, message


def test_policy_diff_names_limit_changes() -> None:
    old = load_policy(default_policy_path())
    new = load_policy_text(DEFAULT_TEXT.replace("max_rollout_age: 14d", "max_rollout_age: 7d"))
    assert describe_changes(old, new) == ["input limit: rollout age 14d → 7d"]
