"""The Cloud Run and Logging fakes themselves, driven by the real clients: the semantics other tests
rely on (etags, ABORTED on a stale etag, LRO polling, paging, NOT_FOUND, traffic validation)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2

pytestmark = pytest.mark.integration

SVC = "projects/p/locations/europe-west1/services/checkout"
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION


def test_update_changes_etag_and_completes_on_first_poll(cloud_run_fake, run_clients):
    services, _ = run_clients
    cloud_run_fake.add_service("checkout", revisions=["r1", "r2"], traffic={"r1": 100}, labels={"a": "b"})
    svc = services.get_service(name=SVC)
    etag = svc.etag
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision="r1", percent=60),
                   run_v2.TrafficTarget(type_=REVISION, revision="r2", percent=40, tag="canary")]
    svc.annotations = {"rollbackd.dev/phase": "p40"}
    op = services.update_service(service=svc)
    assert op.operation.done is False  # as returned by UpdateService
    assert op.done()  # the first poll completes it
    assert cloud_run_fake.requests.count("GetOperation") == 1
    result = op.result(timeout=5)
    assert result.etag != etag and result.generation == svc.generation + 1
    assert {t.revision: t.percent for t in result.traffic_statuses} == {"r1": 60, "r2": 40}
    assert cloud_run_fake.annotations_of("checkout") == {"rollbackd.dev/phase": "p40"}
    assert cloud_run_fake.service("checkout").labels["a"] == "b"
    with pytest.raises(gexc.Aborted):
        services.update_service(service=svc)  # still carries the old etag


def test_invalid_traffic_and_unknown_resources(cloud_run_fake, run_clients):
    services, revisions = run_clients
    cloud_run_fake.add_service("checkout", revisions=["r1", "r2"])
    svc = services.get_service(name=SVC)
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision="r1", percent=50)]
    with pytest.raises(gexc.InvalidArgument):
        services.update_service(service=svc)
    svc.annotations = {"run.googleapis.com/ingress": "all"}
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision="r1", percent=100)]
    with pytest.raises(gexc.InvalidArgument):
        services.update_service(service=svc)
    with pytest.raises(gexc.NotFound):
        services.get_service(name=SVC.replace("checkout", "nope"), retry=None)
    with pytest.raises(gexc.NotFound):
        revisions.get_revision(name="projects/p/locations/europe-west1/revisions/nope", retry=None)
    assert cloud_run_fake.accepted_updates == []


def test_paging_and_revisions(cloud_run_fake, run_clients):
    services, revisions = run_clients
    for i in range(5):
        cloud_run_fake.add_service(f"svc-{i}", revisions=[f"svc-{i}-a", f"svc-{i}-b", f"svc-{i}-c"])
    listed = list(services.list_services(request={"parent": "projects/p/locations/europe-west1", "page_size": 2}))
    assert len(listed) == 5 and cloud_run_fake.requests.count("ListServices") == 3
    revs = list(revisions.list_revisions(request={"parent": listed[0].name, "page_size": 2}))
    assert [r.name.rsplit("/", 1)[-1] for r in revs] == ["svc-0-c", "svc-0-b", "svc-0-a"]  # newest first
    assert revisions.get_revision(name=revs[0].name).service == listed[0].name


def test_deploy_and_human_helpers(cloud_run_fake):
    cloud_run_fake.add_service("checkout", revisions=["r1"])
    etag = cloud_run_fake.etag_of("checkout")
    cloud_run_fake.deploy_revision("checkout", "r2")
    assert cloud_run_fake.traffic_of("checkout") == {"r1": 100, "r2": 0}
    assert cloud_run_fake.tags_of("checkout") == {"canary": "r2"}
    cloud_run_fake.deploy_revision("checkout", "r3")  # the tag moves to the newest canary
    assert cloud_run_fake.tags_of("checkout") == {"canary": "r3"}
    cloud_run_fake.set_traffic_by_hand("checkout", {"r1": 70, "r3": 30})
    assert cloud_run_fake.traffic_of("checkout") == {"r1": 70, "r3": 30}
    assert cloud_run_fake.tags_of("checkout") == {"canary": "r3"}
    assert cloud_run_fake.etag_of("checkout") != etag
    with pytest.raises(ValueError):
        cloud_run_fake.add_service("bad", labels={"run.googleapis.com/x": "y"})


def test_logging_fake_pages_with_the_real_pager(logging_fake, logging_client):
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(7):
        logging_fake.add_entry(project="p", service="s", revision="r", severity="ERROR", message=f"m{i}",
                               timestamp=t0 + timedelta(seconds=i))
    entries = list(logging_client.list_log_entries(request={
        "resource_names": ["projects/p"], "filter": 'resource.labels.revision_name="r" severity>=ERROR',
        "order_by": "timestamp desc", "page_size": 3}))
    assert [e.text_payload for e in entries] == [f"m{i}" for i in range(6, -1, -1)]
    assert logging_fake.requests.count("ListLogEntries") == 3
    with pytest.raises(gexc.InvalidArgument):
        list(logging_client.list_log_entries(request={"resource_names": ["projects/p"], "filter": "a OR b"},
                                             retry=None))
