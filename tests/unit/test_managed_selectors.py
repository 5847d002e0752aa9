"""Which services rollbackd manages (issue 5 item 8): the policy's `managed` selectors in the model,
the loader (errors at their line), `policy validate|schema|diff`, the pure predicate in
`policies.managed`, and the sandbox's simulated Cloud Run listing by the same predicate."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from policies import cli, default_policy_path, load_default_policy
from policies.diff import describe_changes
from policies.loader import PolicyError, load_policy_text
from policies.managed import ManagedPredicate, is_managed, managed_because, not_managed_because
from policies.model import ManagedSelector, Policy
from simulations.sandbox_cloud import SimulatedCloudRun

DEFAULT_TEXT = default_policy_path().read_text(encoding="utf-8")
LABEL = ("rollbackd", "enabled")


def with_managed(block: str, text: str = DEFAULT_TEXT) -> str:
    """The default policy with its `managed: []` replaced by `block` (YAML lines under `managed:`)."""
    assert text.count("\nmanaged: []\n") == 1
    return text.replace("\nmanaged: []\n", "\nmanaged:\n" + block, 1)


def errors_of(text: str) -> list:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.yaml")
    return caught.value.issues


def marked_line(text: str) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if "# <-" in line]
    assert len(lines) == 1
    return lines[0]


# --- model and loader --------------------------------------------------------------------------

def test_default_policy_manages_by_label_only() -> None:
    assert load_default_policy().managed == ()


def test_valid_selectors_load_and_survive_overrides() -> None:
    text = with_managed("  - service: checkout\n  - service: payments-*\n  - labels: {team: payments}\n"
                        "  - service: api-*\n    labels: {tier: frontend}\n")
    text = text.replace("overrides: []", "overrides:\n  - match: {service: checkout}\n"
                        "    policy: {evidence: {min_requests: 50}}")
    policy = load_policy_text(text, "p.yaml")
    assert [(s.service, s.labels) for s in policy.managed] == [
        ("checkout", {}), ("payments-*", {}), (None, {"team": "payments"}), ("api-*", {"tier": "frontend"})]
    # The effective per-service policy keeps the selectors (the managed decision reads the base one).
    assert policy.for_service("checkout").managed == policy.managed
    assert policy.for_service("checkout").evidence.min_requests == 50


@pytest.mark.parametrize("item, path, words", [
    ("  - {}  # <-\n", "managed.0", "must match a service name or labels"),
    ("  - labels: {}  # <-\n", "managed.0", "must match a service name or labels"),
    ("  - service: checkout\n    colour: red  # <-\n", "managed.0.colour", "unknown key 'colour'"),
    ("  - service: 'pay*ments'  # <-\n", "managed.0.service", "only at the end"),
    ("  - service: '*'  # <-\n", "managed.0.service", "would manage every service"),
    ("  - service: ''  # <-\n", "managed.0.service", "must not be empty"),
    ("  - checkout  # <-\n", "managed.0", "expected a mapping"),
])
def test_bad_selector_reported_at_its_line(item: str, path: str, words: str) -> None:
    text = with_managed(item)
    issues = errors_of(text)
    assert [(i.line, i.path) for i in issues] == [(marked_line(text), path)]
    assert words in issues[0].message


def test_managed_is_top_level_only() -> None:
    text = DEFAULT_TEXT.replace("overrides: []", "overrides:\n  - match: {service: checkout}\n"
                                "    policy: {managed: [{service: cart}]}  # <-")
    [issue] = errors_of(text)
    assert (issue.line, issue.path) == (marked_line(text), "overrides.0.policy.managed")
    assert "top-level only" in issue.message


def test_model_rejects_an_empty_selector_without_the_loader() -> None:
    with pytest.raises(ValidationError):
        ManagedSelector()
    data = load_default_policy().model_dump(mode="json")
    data["managed"] = [{"labels": {}}]
    with pytest.raises(ValidationError):
        Policy.model_validate(data)


def test_validate_schema_and_diff_show_the_section(tmp_path: Path) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(with_managed("  - service: payments-*\n  - labels: {team: web}\n"), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert cli.validate([str(new)], out, err) == 0
    assert out.getvalue().rstrip().endswith("0 overrides, 2 managed selectors")
    schema_out = io.StringIO()
    cli.schema(schema_out)
    schema = json.loads(schema_out.getvalue())
    assert "managed" in schema["properties"]
    assert schema["$defs"]["ManagedSelector"]["additionalProperties"] is False
    old = load_default_policy()
    changes = describe_changes(old, load_policy_text(new.read_text(encoding="utf-8")))
    assert changes == ["added managed selector service payments-*", "added managed selector labels team=web"]
    assert describe_changes(load_policy_text(new.read_text(encoding="utf-8")), old) == [
        "removed managed selector service payments-*", "removed managed selector labels team=web"]


# --- the predicate -----------------------------------------------------------------------------

SELECTORS = (ManagedSelector(service="checkout"), ManagedSelector(service="payments-*"),
             ManagedSelector(labels={"team": "web", "tier": "frontend"}))


@pytest.mark.parametrize("service, labels, managed", [
    ("anything", {"rollbackd": "enabled"}, True),                    # the label
    ("checkout", {}, True),                                          # selector by exact name
    ("checkout-v2", {}, False),                                      # an exact name is not a prefix
    ("payments-api", {}, True),                                      # selector by name prefix
    ("payments", {}, False),                                         # the prefix includes the '-'
    ("frontend", {"team": "web", "tier": "frontend"}, True),         # selector by labels (all of them)
    ("frontend", {"team": "web"}, False),                            # only some of its labels
    ("legacy", {}, False),                                           # nothing matches
    ("legacy", {"rollbackd": "yes"}, False),                         # another value of the label key
    ("checkout", {"rollbackd": "disabled"}, False),                  # opt-out beats a name selector
    ("payments-api", {"rollbackd": "disabled"}, False),              # ... a prefix selector
    ("frontend", {"team": "web", "tier": "frontend", "rollbackd": "disabled"}, False),  # ... labels
])
def test_predicate(service: str, labels: dict[str, str], managed: bool) -> None:
    assert is_managed(service, labels, label=LABEL, selectors=SELECTORS) is managed
    assert (managed_because(service, labels, label=LABEL, selectors=SELECTORS) is not None) is managed


def test_without_selectors_only_the_label_counts() -> None:
    assert is_managed("checkout", {"rollbackd": "enabled"}, label=LABEL)
    assert not is_managed("checkout", {}, label=LABEL)
    assert is_managed("c", {"deploy": "auto"}, label=("deploy", "auto"))
    assert not is_managed("c", {"rollbackd": "enabled"}, label=("deploy", "auto"))


def test_reasons_name_the_rule() -> None:
    assert managed_because("x", {"rollbackd": "enabled"}, label=LABEL, selectors=SELECTORS) == "label rollbackd=enabled"
    assert managed_because("payments-api", {}, label=LABEL, selectors=SELECTORS) == \
        "managed selector 2 (service payments-*)"
    assert "opt-out label rollbackd=disabled" in not_managed_because(
        "checkout", {"rollbackd": "disabled"}, label=LABEL, selectors=SELECTORS)
    assert "none of the policy's 3 managed selectors" in not_managed_because("legacy", {}, label=LABEL,
                                                                             selectors=SELECTORS)


def test_predicate_follows_the_current_policy() -> None:
    base = load_default_policy()
    current = {"policy": base}
    predicate = ManagedPredicate(LABEL, lambda: current["policy"])
    assert not predicate("payments-api", {})
    current["policy"] = load_policy_text(with_managed("  - service: payments-*\n"))  # a reload
    assert predicate("payments-api", {})
    assert predicate.describe() == "label rollbackd=enabled or 1 managed selector of the policy"
    with pytest.raises(ValueError):
        ManagedPredicate(("rollbackd", "disabled"))


# --- the sandbox's simulated Cloud Run ---------------------------------------------------------

def test_sandbox_lists_by_the_same_predicate() -> None:
    policy = load_policy_text(with_managed("  - service: payments-*\n"))
    cloud = SimulatedCloudRun(managed=ManagedPredicate(LABEL, lambda: policy))
    cloud.ensure_service("checkout")  # the sandbox's default label rollbackd=enabled
    cloud.ensure_service("payments-api", labels={})
    cloud.ensure_service("payments-legacy", labels={"rollbackd": "disabled"})
    cloud.ensure_service("legacy", labels={})
    assert sorted(v.name for v in cloud.list_services()) == ["checkout", "payments-api"]
    assert sorted(v.name for v in SimulatedCloudRun().list_services()) == []  # default: label only
    plain = SimulatedCloudRun()
    plain.ensure_service("checkout")
    plain.ensure_service("payments-api", labels={})
    assert [v.name for v in plain.list_services()] == ["checkout"]


# --- the live dispatcher's managed(): cached, but a policy reload decides again ----------------

def test_live_managed_check_follows_a_policy_reload_despite_its_cache() -> None:
    from datetime import datetime, timedelta, timezone

    from daemon.clock import VirtualClock
    from daemon.live import ManagedServices

    clock = VirtualClock(datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc))
    current = {"policy": load_default_policy()}
    cloud = SimulatedCloudRun()
    cloud.ensure_service("payments-api", project="p", location="eu", labels={})
    managed = ManagedServices(ManagedPredicate(LABEL, lambda: current["policy"]), cloud, clock=clock,
                              locations=("eu",), policy=lambda: current["policy"])
    assert not managed("p", "eu", "payments-api")
    reads = cloud.count("GetService")
    assert not managed("p", "eu", "payments-api") and cloud.count("GetService") == reads  # cached
    current["policy"] = load_policy_text(with_managed("  - service: payments-*\n"))  # reloaded
    assert managed("p", "eu", "payments-api")
    assert not managed("p", "other", "payments-api")  # a location rollbackd does not watch
    # Within the same policy, a label change is seen once the entry is 5 minutes old.
    cloud.ensure_service("payments-api", labels={"rollbackd": "disabled"})
    assert managed("p", "eu", "payments-api")
    clock.advance_to(clock.now() + timedelta(minutes=5))
    assert not managed("p", "eu", "payments-api")


def test_the_opt_out_value_cannot_be_the_managed_label() -> None:
    from daemon.settings import SettingsError, load_settings

    base = {"project": "p", "locations": ["eu"], "audit_subscription": "s", "principal": "rb@p.iam"}
    assert load_settings(None, env={}, overrides={**base, "managed_label": "deploy=auto"}).label == ("deploy", "auto")
    with pytest.raises(SettingsError, match="opt-out"):
        load_settings(None, env={}, overrides={**base, "managed_label": "rollbackd=disabled"})
