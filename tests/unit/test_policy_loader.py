"""The policy loader: default.yaml validates; each kind of broken file is reported at its line.

Each broken case marks the line the error must point at with a `# <-` comment, so the expected
line is found in the text itself rather than hard-coded.
"""
from __future__ import annotations

import textwrap

import pytest

from policies import default_policy_path, load_default_policy
from policies.loader import PolicyError, load_policy, load_policy_text

BASE = textwrap.dedent("""\
    version: 1
    name: test
    phases:
      - traffic: 5%
        duration: 10m
        criteria: [error_rate]
      - traffic: 25%
        duration: 15m
        criteria: [error_rate, latency_p99]
      - traffic: 50%
        duration: 15m
        criteria: [error_rate, no_alerts]
      - traffic: 100%
    key_metrics:
      error_rate:
        normal: 0.1%
        warning: 0.5%
        critical: 1%
      latency_p99:
        normal: 500ms
        warning: 1s
        critical: 2s
      memory_utilization:
        normal: 80%
        warning: 85%
        critical: 95%
    comparison:
      alpha: 1%
      error_rate: {max_ratio: 2.0}
      latency: {max_ratio: 1.5}
      memory: {allowed_increase: 10%}
    evidence:
      min_requests: 200
    freeze:
      timezone: Europe/London
      windows:
        - start: Fri 17:00
          end: Mon 08:00
    overrides:
      - match: {service: checkout}
        policy:
          evidence: {min_requests: 50}
    """)


def _errors(text: str) -> list:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.yaml")
    return caught.value.issues


def _marked_line(text: str) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if "# <-" in line]
    assert len(lines) == 1, "each case marks exactly one line"
    return lines[0]


def _replace(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


def test_base_and_default_policies_load() -> None:
    policy = load_policy_text(BASE, "p.yaml")
    assert [p.percent for p in policy.phases] == [5, 25, 50, 100]
    default = load_default_policy()
    assert load_policy(default_policy_path()) == default


def test_default_policy_encodes_the_runbook_tables() -> None:
    policy = load_default_policy()
    # Traffic Splitting Strategy: 5% 10 min, 25% 15 min, 50% 15 min, then 100%.
    schedule = [(p.percent, p.duration) for p in policy.phases]
    assert schedule == [(5, 600.0), (25, 900.0), (50, 900.0), (100, None)]
    first, second, third, _ = policy.phases
    assert "error_rate" in first.criteria and "latency_p99" not in first.criteria
    assert {"error_rate", "latency_p99"} <= set(second.criteria)
    assert {"error_rate", "no_alerts"} <= set(third.criteria) and "latency_p99" not in third.criteria
    # Key Metrics to Watch.
    km = policy.key_metrics
    errors = km.error_rate
    assert (errors.normal, errors.warning, errors.critical) == pytest.approx((0.001, 0.005, 0.01))
    assert (km.latency_p99.normal, km.latency_p99.warning, km.latency_p99.critical) == (500.0, 1000.0, 2000.0)
    mem = km.memory_utilization
    assert (mem.normal, mem.warning, mem.critical) == pytest.approx((0.80, 0.85, 0.95))
    assert km.error_rate.on_critical == "rollback" and km.error_rate.on_warning == "hold"
    assert policy.comparison.alpha == pytest.approx(0.01)
    assert [(w.start, w.end) for w in policy.freeze.windows] == [("Fri 17:00", "Mon 08:00")]


CASES = {
    "unknown key": ("    duration: 10m\n", "    duration: 10m\n    colour: red  # <-\n", "phases.0.colour"),
    "wrong unit": ("    duration: 15m\n", "    duration: 15 minutes  # <-\n", "phases.1.duration"),
    "missing unit": ("    normal: 500ms\n", "    normal: 500  # <-\n", "key_metrics.latency_p99.normal"),
    "missing percent sign": ("  alpha: 1%\n", "  alpha: 0.01  # <-\n", "comparison.alpha"),
    "phases not ascending": ("  - traffic: 50%\n", "  - traffic: 20%  # <-\n", "phases.2.traffic"),
    "percent above 100": ("  - traffic: 100%\n", "  - traffic: 101%  # <-\n", "phases.3.traffic"),
    "percent below 1": ("  - traffic: 5%\n", "  - traffic: 0.5%  # <-\n", "phases.0.traffic"),
    "warning above critical": ("    warning: 85%\n", "    warning: 97%  # <-\n",
                               "key_metrics.memory_utilization.warning"),
    "unknown criterion": ("criteria: [error_rate]", "criteria: [eror_rate]  # <-", "phases.0.criteria.0"),
    "bad time zone": ("timezone: Europe/London", "timezone: Mars/Olympus  # <-", "freeze.timezone"),
    "bad freeze time": ("start: Fri 17:00", "start: Fri 25:00  # <-", "freeze.windows.0.start"),
    "last phase not 100": ("  - traffic: 100%\n", "  - traffic: 75%  # <-\n", "phases.3.traffic"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_field_reported_at_its_line(case: str) -> None:
    old, new, path = CASES[case]
    text = _replace(old, new)
    issues = _errors(text)
    assert [(i.line, i.path) for i in issues] == [(_marked_line(text), path)]
    assert all(i.file == "p.yaml" for i in issues)


def test_missing_key_points_at_parent_mapping() -> None:
    text = _replace("  error_rate:\n    normal: 0.1%\n", "  error_rate:  # <-\n")
    [issue] = _errors(text)
    assert (issue.line, issue.path) == (_marked_line(text), "key_metrics.error_rate.normal")
    assert "missing" in issue.message


def test_ambiguous_overrides_point_at_second_match() -> None:
    text = BASE + "  - match:  # <-\n      labels: {tier: web}\n    policy: {evidence: {min_requests: 10}}\n"
    [issue] = _errors(text)
    assert (issue.line, issue.path) == (_marked_line(text), "overrides.1.match")
    assert "overrides 1 and 2" in issue.message


def test_exclusive_overrides_are_fine() -> None:
    text = BASE + "  - match: {service: search}\n    policy: {evidence: {min_requests: 10}}\n"
    assert len(load_policy_text(text).overrides) == 2


def test_error_inside_override_fragment_points_into_fragment() -> None:
    text = _replace("evidence: {min_requests: 50}", "evidence: {min_requests: 50, late_data_grace: 5}  # <-")
    [issue] = _errors(text)
    assert (issue.line, issue.path) == (_marked_line(text), "overrides.0.policy.evidence.late_data_grace")


def test_override_that_breaks_the_merged_policy_is_reported() -> None:
    # Warning 0.5% (base) is above the override's critical 0.2%: only wrong once merged.
    text = _replace("    policy:\n", "    policy:\n      key_metrics: {error_rate: {critical: 0.2%}}  # <-\n")
    [issue] = _errors(text)
    assert issue.line == _marked_line(text)
    assert issue.path.startswith("overrides.0.policy.key_metrics.error_rate")
    assert "above the critical" in issue.message


def test_unknown_key_in_fragment() -> None:
    text = _replace("    policy:\n", "    policy:\n      phasez: []  # <-\n")
    [issue] = _errors(text)
    assert (issue.line, issue.path) == (_marked_line(text), "overrides.0.policy.phasez")
    assert "did you mean 'phases'" in issue.message


def test_yaml_syntax_error_has_its_line() -> None:
    text = _replace("    duration: 15m\n", "    duration: 15m\n   criteria: [oops  # <-\n")
    [issue] = _errors(text)
    assert issue.line == _marked_line(text)
    assert "YAML syntax error" in issue.message


def test_duplicate_key_reported_at_second_occurrence() -> None:
    text = _replace("  min_requests: 200\n", "  min_requests: 200\n  min_requests: 300  # <-\n")
    [issue] = _errors(text)
    assert issue.line == _marked_line(text)
    assert "duplicate key 'min_requests'" in issue.message and "line" in issue.message


def test_order_errors_reported_alongside_field_errors() -> None:
    text = _replace("    duration: 10m\n", "    duration: 10\n")
    text = _replace("  - traffic: 50%\n", "  - traffic: 20%\n", text)
    text = _replace("    warning: 0.5%\n", "    warning: 1.5%\n", text)
    text = _replace("    normal: 0.1%\n", "    normal: 0.1\n", text)
    found = {(i.path, i.message.split(":")[0]) for i in _errors(text)}
    assert ("phases.2.traffic", "phases must ascend") in found
    assert ("key_metrics.error_rate.warning", "warning level 1.5% is above the critical level 1%") in found
    assert len(found) == 4


def test_all_errors_are_collected() -> None:
    text = _replace("    duration: 10m\n", "    duration: 10\n")
    text = _replace("    warning: 85%\n", "    warning: 97%\n", text)
    text = _replace("  min_requests: 200\n", "  min_requests: many\n", text)
    paths = {i.path for i in _errors(text)}
    assert {"phases.0.duration", "key_metrics.memory_utilization.warning", "evidence.min_requests"} <= paths


@pytest.mark.parametrize("text,expect", [
    ("", "empty file"),
    ("- 5%\n- 10%\n", "found a list"),
    ("just words\n", "found the text 'just words'"),
])
def test_top_level_must_be_a_mapping(text: str, expect: str) -> None:
    [issue] = _errors(text)
    assert expect in issue.message and issue.line == 1


def test_unreadable_files(tmp_path) -> None:
    for path, expect in ((tmp_path / "missing.yaml", "No such file"), (tmp_path, "directory")):
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        [issue] = caught.value.issues
        assert expect in issue.message and issue.file == str(path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PolicyError):
        load_policy(binary)


def test_alias_bomb_and_self_reference_are_errors_not_crashes() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    assert any("too large" in i.message for i in _errors(bomb))
    assert any("refers to the node" in i.message for i in _errors("a: &x [*x]\n"))


def test_anchors_and_merge_keys_work() -> None:
    text = _replace("  memory_utilization:\n    normal: 80%\n    warning: 85%\n    critical: 95%\n",
                    "  memory_utilization:\n    <<: {normal: 80%, warning: 85%, critical: 99%}\n"
                    "    critical: 95%\n")
    text = _replace("criteria: [error_rate]", "criteria: &first [error_rate]", text)
    text = _replace("criteria: [error_rate, no_alerts]", "criteria: *first", text)
    policy = load_policy_text(text, "p.yaml")
    memory = policy.key_metrics.memory_utilization
    assert (memory.normal, memory.critical) == pytest.approx((0.80, 0.95))  # explicit key beats merged
    assert policy.phases[2].criteria == ("error_rate",)
