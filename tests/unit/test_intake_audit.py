"""Cloud Run audit-log entries: deploys, traffic-only changes, what is ignored and what is rejected.

Cases start from the gcp-formats.md examples (v1 ReplaceService from gcloud, v2 UpdateService) and
change what the heuristic in `daemon.core.intake_audit` looks at.
"""
from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from daemon.core.events import Deploy, Ignored, Rejected, TrafficChanged
from daemon.core.intake import parse_message
from tests.unit.test_intake_examples import NOW, V1_REPLACE, V2_UPDATE

V1 = json.loads(V1_REPLACE)
V2 = json.loads(V2_UPDATE)


def v1() -> dict[str, Any]:
    return copy.deepcopy(V1)


def v2() -> dict[str, Any]:
    return copy.deepcopy(V2)


def _parse(entry: Any, **kwargs: Any) -> Any:
    return parse_message(json.dumps(entry), kwargs.pop("attributes", None), now=NOW, where="msg 9", **kwargs)


def _one(entry: Any, **kwargs: Any) -> Any:
    result = _parse(entry, **kwargs)
    assert isinstance(result, list) and len(result) == 1, result
    return result[0]


def _ignored(entry: Any, fragment: str, **kwargs: Any) -> None:
    result = _parse(entry, **kwargs)
    assert isinstance(result, Ignored), result
    assert fragment in result.reason and result.where == "msg 9"


def _rejected(entry: Any, fragment: str) -> None:
    result = _parse(entry)
    assert isinstance(result, Rejected), result
    assert fragment in result.reason, result.reason
    assert result.kind_hint == "audit" and result.where == "msg 9"


# --- v1 (gcloud) --------------------------------------------------------------------------------
def test_v1_tagged_traffic_entry_names_the_revision_when_the_template_does_not() -> None:
    entry = v1()
    del entry["protoPayload"]["request"]["service"]["spec"]["template"]["metadata"]["name"]
    event = _one(entry)
    assert isinstance(event, Deploy)
    assert (event.revision, event.baseline, event.canary_percent) == ("checkout-00042-vux", "checkout-00041-mib", 0)


def test_v1_deploy_without_any_revision_name_needs_resolution() -> None:
    entry = v1()
    service = entry["protoPayload"]["request"]["service"]
    del service["spec"]["template"]["metadata"]["name"]
    service["spec"]["traffic"] = [{"latestRevision": True, "percent": 100}]
    event = _one(entry)  # the user agent says gcloud run deploy: a deploy, not a traffic change
    assert isinstance(event, Deploy) and event.needs_resolution and event.revision is None
    assert event.canary_percent == 100  # the new revision becomes "latest", which gets 100%
    assert event.baseline == "checkout-00041-mib"  # from the (pre-reconcile) response status
    del service["spec"]["traffic"]
    event = _one(entry)
    assert event.needs_resolution and event.canary_percent is None  # no traffic list: unknown


def test_v1_update_traffic_is_a_traffic_change() -> None:
    entry = v1()
    payload = entry["protoPayload"]
    payload["requestMetadata"]["callerSuppliedUserAgent"] = \
        "google-cloud-sdk gcloud/528.0.0 command/gcloud.run.services.update-traffic"
    payload["request"]["service"]["spec"]["traffic"] = [
        {"revisionName": "checkout-00041-mib", "percent": 50}, {"revisionName": "checkout-00042-vux", "percent": 50}]
    event = _one(entry)
    assert event == TrafficChanged(
        time=datetime(2026, 11, 20, 10, 15, 2, 874000, tzinfo=timezone.utc), service="checkout",
        canary_percent=None, principal="ci-deploy@shop-prod.iam.gserviceaccount.com",
        detail="ReplaceService by ci-deploy@shop-prod.iam.gserviceaccount.com: "
               "checkout-00041-mib=50%, checkout-00042-vux=50%")


def test_v1_replace_resending_an_existing_template_is_a_traffic_change() -> None:
    entry = v1()
    entry["protoPayload"]["requestMetadata"]["callerSuppliedUserAgent"] = "terraform/1.9"
    entry["protoPayload"]["response"]["status"]["latestCreatedRevisionName"] = "checkout-00042-vux"
    assert isinstance(_one(entry), TrafficChanged)


def test_v1_no_revision_name_but_traffic_from_an_unknown_client_is_a_traffic_change() -> None:
    entry = v1()
    entry["protoPayload"]["requestMetadata"]["callerSuppliedUserAgent"] = "terraform/1.9"
    service = entry["protoPayload"]["request"]["service"]
    del service["spec"]["template"]["metadata"]["name"]
    service["spec"]["traffic"] = [{"revisionName": "checkout-00041-mib", "percent": 100}]
    assert isinstance(_one(entry), TrafficChanged)


def test_v1_create_service_defaults_to_all_traffic_and_names_from_paths() -> None:
    entry = v1()
    payload = entry["protoPayload"]
    payload["methodName"] = "google.cloud.run.v1.Services.CreateService"
    del payload["request"]["service"]["spec"]["traffic"]
    del entry["resource"]["labels"]
    del payload["request"]["region"]
    event = _one(entry)
    assert (event.service, event.project, event.location) == ("checkout", "shop-prod", "europe-west1")
    assert (event.canary_percent, event.baseline) == (100, "checkout-00041-mib")


# --- v2 -----------------------------------------------------------------------------------------
def test_v2_revision_absent_from_traffic_or_without_percent_is_at_zero() -> None:
    entry = v2()
    traffic = entry["protoPayload"]["request"]["service"]["traffic"]
    traffic[0]["percent"] = 100
    del traffic[1]["percent"]
    assert _one(entry).canary_percent == 0
    del traffic[1]
    event = _one(entry)
    assert (event.canary_percent, event.baseline, event.revision) == (0, "checkout-00041-mib", "checkout-00042-vux")


def test_v2_latest_entry_counts_for_the_new_revision() -> None:
    entry = v2()
    entry["protoPayload"]["request"]["service"]["traffic"] = [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "checkout-00041-mib", "percent": 90},
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 10}]
    assert _one(entry).canary_percent == 10


def test_v2_baseline_is_the_largest_share_first_listed_on_a_tie() -> None:
    entry = v2()
    entry["protoPayload"]["request"]["service"]["traffic"] = [
        {"revision": "a", "percent": 40}, {"revision": "b", "percent": 40}, {"revision": "c", "percent": 20}]
    assert _one(entry).baseline == "a"
    entry["protoPayload"]["request"]["service"]["traffic"] = [{"type": 1, "percent": 100}]
    assert _one(entry).baseline is None


def test_v2_traffic_only_update() -> None:
    entry = v2()
    del entry["protoPayload"]["request"]["service"]["template"]
    event = _one(entry)
    assert isinstance(event, TrafficChanged) and event.canary_percent is None
    assert "checkout-00042-vux=5% (tag canary)" in event.detail


@pytest.mark.parametrize("mask, kind", [
    ("traffic", TrafficChanged), ({"paths": ["traffic", "labels"]}, TrafficChanged),
    ("template.containers,traffic", Deploy), ({"paths": ["template"]}, Deploy),
])
def test_v2_update_mask_decides_traffic_only(mask: Any, kind: type) -> None:
    entry = v2()
    entry["protoPayload"]["request"]["updateMask"] = mask
    assert isinstance(_one(entry), kind)


def test_v2_create_service_from_parent_and_service_id() -> None:
    entry = v2()
    payload = entry["protoPayload"]
    payload["methodName"] = "google.cloud.run.v2.Services.CreateService"
    payload["resourceName"] = "projects/shop-prod/locations/asia-east1"
    payload["request"] = {"parent": "projects/shop-prod/locations/asia-east1", "serviceId": "ledger",
                          "service": {"template": {"revision": "ledger-00001-aaa"}, "labels": {"team": "fin"}}}
    del entry["resource"]
    event = _one(entry)
    assert (event.service, event.project, event.location) == ("ledger", "shop-prod", "asia-east1")
    assert (event.revision, event.canary_percent, event.baseline) == ("ledger-00001-aaa", 100, None)
    assert event.labels == (("team", "fin"),) and event.source == "audit-v2"


# --- ignored ------------------------------------------------------------------------------------
def test_failed_operations_are_ignored() -> None:
    entry = v1()
    entry["severity"] = "ERROR"
    entry["protoPayload"]["status"] = {"code": 10, "message": "Conflict for resource 'checkout': version '41' "
                                                              "was specified but current version is '42'."}
    _ignored(entry, "failed operation (severity ERROR)")
    entry["severity"] = "NOTICE"
    _ignored(entry, "failed operation (status code 10: \"Conflict")
    entry["protoPayload"]["status"] = {"code": 0}
    assert isinstance(_one(entry), Deploy)


def test_last_entry_of_a_long_running_operation_is_a_duplicate() -> None:
    entry = v2()
    entry["operation"] = {"id": "op", "producer": "run.googleapis.com", "last": True}
    _ignored(entry, "duplicate")
    entry["operation"] = {"id": "op", "producer": "run.googleapis.com", "first": True, "last": True}
    assert isinstance(_one(entry), Deploy)  # a one-shot operation is both first and last


def test_other_methods_and_services_are_ignored() -> None:
    entry = v2()
    entry["protoPayload"]["methodName"] = "google.cloud.run.v2.Services.DeleteService"
    _ignored(entry, "is not a deploy")
    entry = v2()
    entry["protoPayload"]["serviceName"] = "storage.googleapis.com"
    _ignored(entry, "not run.googleapis.com")


def test_own_principal_is_ignored_for_v1_too() -> None:
    _ignored(v1(), "own update", own_principals=frozenset({"ci-deploy@shop-prod.iam.gserviceaccount.com"}))
    assert isinstance(_one(v1(), own_principals=frozenset({"someone-else@x"})), Deploy)


# --- rejected -----------------------------------------------------------------------------------
def _without(entry: dict[str, Any], *path: str) -> dict[str, Any]:
    target = entry
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return entry


@pytest.mark.parametrize("make, fragment", [
    (lambda: _without(v2(), "protoPayload", "methodName"), "audit.protoPayload.methodName: missing"),
    (lambda: {**v2(), "protoPayload": "x"}, "audit.protoPayload: expected an object, got string"),
    (lambda: {**v2(), "timestamp": "yesterday"}, "audit.timestamp: 'yesterday' is not an RFC 3339 time"),
    (lambda: {**v2(), "timestamp": "2026-11-28T11:00:00Z"}, "audit.timestamp: 2026-11-28T11:00:00+00:00 is 55m"),
    (lambda: _without(v2(), "timestamp"), "audit.timestamp: missing"),
])
def test_rejected_entries(make: Any, fragment: str) -> None:
    _rejected(make(), fragment)


def test_mistyped_request_parts_are_rejected() -> None:
    entry = v2()
    entry["protoPayload"]["request"]["service"]["traffic"][1]["percent"] = 150
    _rejected(entry, "audit.request.service.traffic[1].percent: 150 is not a percent")
    entry = v2()
    entry["protoPayload"]["request"]["service"]["traffic"] = {"revision": "x"}
    _rejected(entry, "audit.request.service.traffic: expected an array, got object")
    entry = v2()
    entry["protoPayload"]["request"] = ["service"]
    _rejected(entry, "audit.protoPayload.request: expected an object, got array")


def test_no_service_name_anywhere_is_rejected() -> None:
    entry = v2()
    del entry["resource"]
    entry["protoPayload"]["resourceName"] = "projects/shop-prod/locations/europe-west1"
    del entry["protoPayload"]["request"]["service"]["name"]
    _rejected(entry, "audit: no service name")


def test_receive_timestamp_is_the_last_resort() -> None:
    entry = _without(v2(), "timestamp")
    entry["receiveTimestamp"] = "2026-11-20T10:31:01Z"
    assert _one(entry).time == datetime(2026, 11, 20, 10, 31, 1, tzinfo=timezone.utc)
    attrs = {"logging.googleapis.com/timestamp": "2026-11-20T10:31:00.500Z"}
    assert _one(entry, attributes=attrs).time == datetime(2026, 11, 20, 10, 31, 0, 500000, tzinfo=timezone.utc)
