"""CloudRunTrafficController with the real run_v2 clients against the Cloud Run gRPC fake:
promotion steps with annotations, rollback keeping the canary tag, idempotence, stale etags,
manual changes, unmanaged services, revision deletion."""
from __future__ import annotations

import pytest

from actions.cloud_run import CloudRunTrafficController
from daemon.core.commands import DeleteRevision, SetTraffic
from daemon.ports import ConflictError, ManualChangeError, PermanentError

pytestmark = pytest.mark.integration

BASE, CANARY = "checkout-00041-mib", "checkout-00042-vux"


@pytest.fixture
def service(cloud_run_fake):
    cloud_run_fake.add_service("checkout", "shop", "europe-west1", revisions=[BASE],
                               labels={"rollbackd": "enabled", "team": "payments"},
                               annotations={"owner": "payments"}, max_instances=20)
    cloud_run_fake.deploy_revision("checkout", CANARY)
    return "checkout"


@pytest.fixture
def controller(run_clients, virtual_clock, rng):
    services, revisions = run_clients
    errors: list[tuple[str, str]] = []
    ctl = CloudRunTrafficController(services, revisions, clock=virtual_clock, rng=rng,
                                    projects_locations=[("shop", "europe-west1")],
                                    on_error=lambda api, code: errors.append((api, code)))
    ctl.errors = errors  # type: ignore[attr-defined]
    return ctl


def cmd(percent: int, expected: int | None, *, phase: str = "", decision: str = "d1") -> SetTraffic:
    return SetTraffic(service="checkout", project="shop", location="europe-west1", canary=CANARY, baseline=BASE,
                      canary_percent=percent, expected_canary_percent=expected,
                      annotations={"rollbackd.dev/phase": phase or f"p{percent}",
                                   "rollbackd.dev/last-decision": decision},
                      reason="test", decision_id=decision)


def test_promotes_through_every_step_with_annotations(cloud_run_fake, service, controller):
    previous = 0
    for step, pct in enumerate([5, 25, 50, 100]):
        result = controller.apply(cmd(pct, previous, decision=f"d{step}"))
        assert result.changed
        expected = {BASE: 100 - pct, CANARY: pct} if pct < 100 else {CANARY: 100}
        assert {r: p for r, p in cloud_run_fake.traffic_of(service).items() if p} == expected
        assert {r: p for r, p in cloud_run_fake.status_traffic_of(service).items() if p} == expected
        assert cloud_run_fake.tags_of(service) == {"canary": CANARY}
        annotations = cloud_run_fake.annotations_of(service)
        assert annotations["rollbackd.dev/phase"] == f"p{pct}"
        assert annotations["rollbackd.dev/last-decision"] == f"d{step}"
        assert annotations["owner"] == "payments"  # merged, not replaced
        assert result.service is not None and result.service.percent_of(CANARY) == pct
        previous = pct
    assert len(cloud_run_fake.accepted_updates) == 4
    # Every update carried the etag of the read just before it and the full traffic list.
    for request in cloud_run_fake.traffic_updates(service):
        assert request.service.etag
        assert sum(t.percent for t in request.service.traffic) == 100
        assert all(t.type_ == 2 for t in request.service.traffic)  # REVISION, never LATEST
    assert cloud_run_fake.requests.count("GetOperation") >= 4  # the LRO was really polled


def test_rollback_keeps_canary_tagged_at_zero(cloud_run_fake, service, controller):
    controller.apply(cmd(25, 0))
    result = controller.apply(cmd(0, 25, phase="rolled-back"))
    assert result.changed
    assert cloud_run_fake.traffic_of(service) == {BASE: 100, CANARY: 0}
    assert cloud_run_fake.tags_of(service) == {"canary": CANARY}
    assert cloud_run_fake.annotations_of(service)["rollbackd.dev/phase"] == "rolled-back"


def test_other_tags_are_preserved(cloud_run_fake, controller):
    cloud_run_fake.add_service("checkout", "shop", "europe-west1", revisions=["old-1", BASE],
                               traffic=[(BASE, 100, "stable"), ("old-1", 0, "blue")],
                               labels={"rollbackd": "enabled"})
    cloud_run_fake.deploy_revision("checkout", CANARY)
    controller.apply(cmd(5, 0))
    assert cloud_run_fake.tags_of("checkout") == {"canary": CANARY, "stable": BASE, "blue": "old-1"}
    assert {r: p for r, p in cloud_run_fake.traffic_of("checkout").items() if p} == {BASE: 95, CANARY: 5}


def test_newer_deploy_keeps_its_canary_tag(cloud_run_fake, service, controller):
    controller.apply(cmd(5, 0))
    cloud_run_fake.deploy_revision(service, "checkout-00043-new")  # the tag moves to the new revision
    assert controller.apply(cmd(0, 5, phase="rolled-back")).changed
    assert cloud_run_fake.traffic_of(service) == {BASE: 100, CANARY: 0, "checkout-00043-new": 0}
    assert cloud_run_fake.tags_of(service) == {"canary": "checkout-00043-new"}


def test_idempotent_apply_makes_no_update(cloud_run_fake, service, controller):
    assert controller.apply(cmd(5, 0)).changed
    updates = cloud_run_fake.requests.count("UpdateService")
    again = controller.apply(cmd(5, 0))
    assert not again.changed
    assert cloud_run_fake.requests.count("UpdateService") == updates
    # Same traffic but new annotations is a change (the state must be stored).
    assert controller.apply(cmd(5, 5, phase="p5-hold", decision="d9")).changed
    assert cloud_run_fake.annotations_of(service)["rollbackd.dev/phase"] == "p5-hold"


def test_same_step_decided_by_another_replica_is_not_written_again(cloud_run_fake, service, controller):
    """Two replicas promote the same step a minute apart, worded differently: the second finds the
    traffic and the rollout's state as wanted and makes no call (the first writer's phase start stands)."""
    assert controller.apply(cmd(5, 0, phase="1")).changed
    first = cmd(25, 5, phase="2")
    first.annotations.update({"rollbackd.dev/phase-started": "2026-11-24T15:06:00Z",
                              "rollbackd.dev/last-decision": "promote after 193s", "rollbackd.dev/decisions": "2"})
    assert controller.apply(first).changed
    updates = cloud_run_fake.requests.count("UpdateService")
    second = cmd(25, 5, phase="2")
    second.annotations.update({"rollbackd.dev/phase-started": "2026-11-24T15:07:00Z",
                               "rollbackd.dev/last-decision": "promote after 253s", "rollbackd.dev/decisions": "3"})
    assert not controller.apply(second).changed
    assert cloud_run_fake.requests.count("UpdateService") == updates
    assert cloud_run_fake.annotations_of(service)["rollbackd.dev/phase-started"] == "2026-11-24T15:06:00Z"


def test_stale_etag_rereads_and_succeeds(cloud_run_fake, service, controller):
    # Someone else's write (labels only) lands between our read and our write: the first
    # UpdateService carries a stale etag, is refused with ABORTED, and the controller re-reads.
    original_read = controller._read
    calls = {"n": 0}

    def read_then_race(name):
        svc = original_read(name)
        calls["n"] += 1
        if calls["n"] == 1:
            cloud_run_fake.set_labels_by_hand(service, {"rollbackd": "enabled", "team": "other"})
        return svc

    controller._read = read_then_race
    assert controller.apply(cmd(5, 0)).changed
    assert cloud_run_fake.requests.count("UpdateService") == 2
    assert len(cloud_run_fake.accepted_updates) == 1
    assert ("run.UpdateService", "ABORTED") in controller.errors
    assert cloud_run_fake.traffic_of(service)[CANARY] == 5


def test_conflict_from_a_human_rereads_and_stands_down(cloud_run_fake, service, controller):
    # A human moves traffic between our read and our write: our update is refused (stale etag),
    # the re-read sees the human's split, and we stand down instead of overwriting it.
    original_read = controller._read
    calls = {"n": 0}

    def read_then_human(name):
        svc = original_read(name)
        calls["n"] += 1
        if calls["n"] == 1:
            cloud_run_fake.set_traffic_by_hand(service, {BASE: 50, CANARY: 50})
        return svc

    controller._read = read_then_human
    with pytest.raises(ManualChangeError) as info:
        controller.apply(cmd(5, 0))
    assert info.value.observed_canary_percent == 50
    assert cloud_run_fake.requests.count("UpdateService") == 1
    assert cloud_run_fake.accepted_updates == []
    assert cloud_run_fake.traffic_of(service)[CANARY] == 50


def test_persistent_conflict_gives_up_as_conflict(cloud_run_fake, service, controller):
    cloud_run_fake.faults.inject("UpdateService", "ABORTED", times=-1)
    with pytest.raises(ConflictError):
        controller.apply(cmd(5, 0))
    assert cloud_run_fake.requests.count("UpdateService") == controller.max_conflicts + 1
    assert cloud_run_fake.accepted_updates == []


def test_manual_change_stands_down(cloud_run_fake, service, controller):
    controller.apply(cmd(5, 0))
    cloud_run_fake.set_traffic_by_hand(service, {BASE: 80, CANARY: 20})
    updates = cloud_run_fake.requests.count("UpdateService")
    with pytest.raises(ManualChangeError) as info:
        controller.apply(cmd(25, 5))
    assert info.value.observed_canary_percent == 20
    assert cloud_run_fake.requests.count("UpdateService") == updates
    assert cloud_run_fake.traffic_of(service)[CANARY] == 20


def test_manual_change_to_a_third_revision_stands_down(cloud_run_fake, service, controller):
    cloud_run_fake.deploy_revision(service, "checkout-00043-hot", tag="hotfix")
    cloud_run_fake.set_traffic_by_hand(service, {BASE: 90, "checkout-00043-hot": 10})
    with pytest.raises(ManualChangeError):
        controller.apply(cmd(5, 0))
    assert cloud_run_fake.accepted_updates == []


def test_no_expectation_means_no_manual_check(cloud_run_fake, service, controller):
    # A command forced by an operator (expected None) is applied whatever the current split.
    cloud_run_fake.set_traffic_by_hand(service, {BASE: 70, CANARY: 30})
    assert controller.apply(cmd(0, None)).changed
    assert cloud_run_fake.traffic_of(service) == {BASE: 100, CANARY: 0}


def test_unmanaged_service_is_never_touched(cloud_run_fake, controller):
    cloud_run_fake.add_service("checkout", "shop", "europe-west1", revisions=[BASE, CANARY],
                               traffic={BASE: 100}, labels={"team": "payments"})
    with pytest.raises(PermanentError) as info:
        controller.apply(cmd(5, 0))
    assert info.value.code == "UNMANAGED"
    assert cloud_run_fake.requests.count("UpdateService") == 0
    with pytest.raises(PermanentError):
        controller.delete_revision(DeleteRevision("checkout", "shop", "europe-west1", CANARY))
    assert cloud_run_fake.requests.count("DeleteRevision") == 0


def test_list_services_only_managed_with_short_names(cloud_run_fake, service, controller):
    cloud_run_fake.add_service("other", "shop", "europe-west1", labels={"rollbackd": "disabled"})
    cloud_run_fake.add_service("cart", "shop", "europe-west1", labels={"rollbackd": "enabled"})
    cloud_run_fake.add_service("elsewhere", "shop", "us-central1", labels={"rollbackd": "enabled"})
    views = {v.name: v for v in controller.list_services()}
    assert sorted(views) == ["cart", "checkout"]
    view = views["checkout"]
    assert (view.project, view.location) == ("shop", "europe-west1")
    assert view.latest_created_revision == CANARY and view.latest_ready_revision == CANARY
    assert {(t.revision, t.percent, t.tag) for t in view.traffic} == {(BASE, 100, ""), (CANARY, 0, "canary")}
    assert view.max_instances == 20 and view.etag
    assert controller.get_service("shop", "europe-west1", "checkout").labels["team"] == "payments"


def test_delete_revision_untags_then_deletes(cloud_run_fake, service, controller):
    controller.apply(cmd(25, 0))
    with pytest.raises(PermanentError) as info:  # it still serves 25%
        controller.delete_revision(DeleteRevision("checkout", "shop", "europe-west1", CANARY))
    assert info.value.code == "SERVING"
    controller.apply(cmd(0, 25))
    controller.delete_revision(DeleteRevision("checkout", "shop", "europe-west1", CANARY))
    assert CANARY not in cloud_run_fake.revisions_of(service)
    assert cloud_run_fake.traffic_of(service) == {BASE: 100}
    # Deleting again is a no-op, not an error (NOT_FOUND means already done).
    controller.delete_revision(DeleteRevision("checkout", "shop", "europe-west1", CANARY))


def test_invalid_command_is_permanent(service, controller, cloud_run_fake):
    with pytest.raises(PermanentError):
        controller.apply(cmd(130, 0))
    assert cloud_run_fake.requests.count("GetService") == 0


# --- managed by the policy's selectors (issue 5 item 8) -----------------------------------------

def _policy_with_managed(block: str):
    from policies import default_policy_path
    from policies.loader import load_policy_text

    text = default_policy_path().read_text(encoding="utf-8")
    assert "\nmanaged: []\n" in text
    return load_policy_text(text.replace("\nmanaged: []\n", "\nmanaged:\n" + block, 1))


@pytest.fixture
def policy_holder() -> dict:
    """The daemon's current policy, as PolicyReloader holds it: selectors for checkout by name,
    'web-*' by prefix, and anything labelled team=search."""
    return {"policy": _policy_with_managed("  - service: checkout\n  - service: web-*\n"
                                           "  - labels: {team: search}\n")}


@pytest.fixture
def selector_controller(run_clients, virtual_clock, rng, policy_holder):
    from policies.managed import ManagedPredicate

    services, revisions = run_clients
    return CloudRunTrafficController(services, revisions, clock=virtual_clock, rng=rng,
                                     managed=ManagedPredicate(("rollbackd", "enabled"), lambda: policy_holder["policy"]),
                                     projects_locations=[("shop", "europe-west1")])


def test_selector_managed_service_without_the_label_is_written_to(cloud_run_fake, selector_controller,
                                                                   policy_holder):
    cloud_run_fake.add_service("checkout", "shop", "europe-west1", revisions=[BASE], labels={"team": "payments"})
    cloud_run_fake.deploy_revision("checkout", CANARY)
    assert selector_controller.apply(cmd(5, 0)).changed
    assert {r: p for r, p in cloud_run_fake.traffic_of("checkout").items() if p} == {BASE: 95, CANARY: 5}
    # The policy is reloaded without the selector: the next write is refused, nothing is sent.
    policy_holder["policy"] = _policy_with_managed("  - service: web-*\n")
    updates = cloud_run_fake.requests.count("UpdateService")
    with pytest.raises(PermanentError) as info:
        selector_controller.apply(cmd(25, 5))
    assert info.value.code == "UNMANAGED" and "matches none of the policy's 1 managed selector" in str(info.value)
    assert cloud_run_fake.requests.count("UpdateService") == updates


def test_opted_out_service_is_refused_although_a_selector_matches(cloud_run_fake, selector_controller):
    cloud_run_fake.add_service("checkout", "shop", "europe-west1", revisions=[BASE, CANARY],
                               traffic={BASE: 100}, labels={"rollbackd": "disabled", "team": "search"})
    with pytest.raises(PermanentError) as info:
        selector_controller.apply(cmd(5, 0))
    assert info.value.code == "UNMANAGED" and "opt-out label rollbackd=disabled" in str(info.value)
    with pytest.raises(PermanentError):
        selector_controller.delete_revision(DeleteRevision("checkout", "shop", "europe-west1", CANARY))
    assert cloud_run_fake.requests.count("UpdateService") == 0
    assert cloud_run_fake.requests.count("DeleteRevision") == 0
    assert cloud_run_fake.traffic_of("checkout") == {BASE: 100}


def test_list_services_returns_exactly_the_managed_ones(cloud_run_fake, selector_controller):
    add = lambda name, labels, location="europe-west1": cloud_run_fake.add_service(  # noqa: E731
        name, "shop", location, labels=labels)
    add("checkout", {})                                          # by name
    add("web-shop", {"team": "payments"})                        # by prefix
    add("indexer", {"team": "search", "tier": "batch"})          # by labels
    add("labelled", {"rollbackd": "enabled"})                    # by the label
    add("web-legacy", {"rollbackd": "disabled"})                 # prefix, but opted out
    add("ranker", {"team": "search", "rollbackd": "disabled"})   # labels, but opted out
    add("checkout-v2", {})                                       # an exact name is not a prefix
    add("legacy", {"team": "payments"})                          # nothing matches
    add("web-eu", {}, location="us-central1")                    # a location rollbackd does not watch
    assert sorted(v.name for v in selector_controller.list_services()) == [
        "checkout", "indexer", "labelled", "web-shop"]
