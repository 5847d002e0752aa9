"""Intake of the exact examples: gcp-formats.md (a) v1 ReplaceService, (a') v2 UpdateService,
(b) a Monitoring incident, and the native events of issue 2 §4.

The example texts are copied verbatim from shared/reference/gcp-formats.md (so the tests run on a
fresh clone); other intake tests import them from here as valid starting points.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from daemon.core.events import Alert, Command, Deploy, Ignored, Metrics
from daemon.core.intake import parse_message

NOW = datetime(2026, 11, 28, 10, 5, tzinfo=timezone.utc)
SINK_ATTRIBUTES = {"logging.googleapis.com/timestamp": "2026-11-20T10:15:03.120Z"}

# gcp-formats.md, Examples (a): `gcloud run deploy checkout --no-traffic --tag=canary`.
V1_REPLACE = r"""{"insertId":"1x7k2ad4f0","logName":"projects/shop-prod/logs/cloudaudit.googleapis.com%2Factivity",
 "protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog",
  "authenticationInfo":{"principalEmail":"ci-deploy@shop-prod.iam.gserviceaccount.com"},
  "methodName":"google.cloud.run.v1.Services.ReplaceService","serviceName":"run.googleapis.com",
  "resourceName":"namespaces/shop-prod/services/checkout",
  "request":{"@type":"type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest",
   "name":"projects/shop-prod/locations/europe-west1/services/checkout","region":"europe-west1",
   "service":{"apiVersion":"serving.knative.dev/v1","kind":"Service",
    "metadata":{"name":"checkout","namespace":"123456789012","generation":41,"labels":{"cloud.googleapis.com/location":"europe-west1"}},
    "spec":{"template":{"metadata":{"name":"checkout-00042-vux"},
             "spec":{"containers":[{"image":"europe-west1-docker.pkg.dev/shop-prod/app/checkout@sha256:9f2c..."}]}},
            "traffic":[{"revisionName":"checkout-00041-mib","percent":100},
                       {"revisionName":"checkout-00042-vux","tag":"canary"}]}}},
  "requestMetadata":{"callerSuppliedUserAgent":"google-cloud-sdk gcloud/528.0.0 command/gcloud.run.deploy"},
  "resourceLocation":{"currentLocations":["europe-west1"]},
  "response":{"@type":"type.googleapis.com/google.cloud.run.v1.Service",
   "metadata":{"name":"checkout","generation":42},
   "status":{"observedGeneration":41,"latestCreatedRevisionName":"checkout-00041-mib",
             "latestReadyRevisionName":"checkout-00041-mib",
             "traffic":[{"revisionName":"checkout-00041-mib","percent":100}]}}},
 "receiveTimestamp":"2026-11-20T10:15:03.201Z",
 "resource":{"type":"cloud_run_revision","labels":{"project_id":"shop-prod","service_name":"checkout",
   "location":"europe-west1","configuration_name":"","revision_name":""}},
 "severity":"NOTICE","timestamp":"2026-11-20T10:15:02.874Z"}"""

# gcp-formats.md, Examples (a'): v2 UpdateService, first LRO entry (constructed, not captured).
V2_UPDATE = r"""{"logName":"projects/shop-prod/logs/cloudaudit.googleapis.com%2Factivity",
 "operation":{"id":"projects/shop-prod/locations/europe-west1/operations/5b1e...","producer":"run.googleapis.com","first":true},
 "protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog",
  "methodName":"google.cloud.run.v2.Services.UpdateService","serviceName":"run.googleapis.com",
  "resourceName":"projects/shop-prod/locations/europe-west1/services/checkout",
  "authenticationInfo":{"principalEmail":"canary-daemon@shop-prod.iam.gserviceaccount.com"},
  "request":{"@type":"type.googleapis.com/google.cloud.run.v2.UpdateServiceRequest",
   "service":{"name":"projects/shop-prod/locations/europe-west1/services/checkout",
    "template":{"revision":"checkout-00042-vux"},
    "traffic":[{"type":"TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION","revision":"checkout-00041-mib","percent":95},
               {"type":"TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION","revision":"checkout-00042-vux","percent":5,"tag":"canary"}]}}},
 "resource":{"type":"cloud_run_revision","labels":{"project_id":"shop-prod","service_name":"checkout","location":"europe-west1","revision_name":"","configuration_name":""}},
 "severity":"NOTICE","timestamp":"2026-11-20T10:31:00.102Z"}"""

# gcp-formats.md, Examples (b): Monitoring incident, schema 1.2.
INCIDENT_OPEN = r"""{"incident":{"incident_id":"0.n4kq2w8zt1ab","scoping_project_id":"shop-prod","scoping_project_number":123456789012,
  "url":"https://console.cloud.google.com/monitoring/alerting/incidents/0.n4kq2w8zt1ab?project=shop-prod",
  "severity":"Critical","started_at":1795169700,"ended_at":null,"state":"open",
  "summary":"5xx ratio for shop-prod Cloud Run Revision labels {revision_name=checkout-00042-vux} is above the threshold of 0.020 with a value of 0.091.",
  "apigee_url":"","observed_value":"0.091","threshold_value":"0.02",
  "resource":{"type":"cloud_run_revision","labels":{"project_id":"shop-prod","service_name":"checkout",
     "revision_name":"checkout-00042-vux","location":"europe-west1","configuration_name":"checkout"}},
  "resource_type_display_name":"Cloud Run Revision","resource_id":"",
  "resource_display_name":"checkout-00042-vux","resource_name":"shop-prod Cloud Run Revision labels {revision_name=checkout-00042-vux}",
  "metric":{"type":"run.googleapis.com/request_count","displayName":"Request Count","labels":{"response_code_class":"5xx"}},
  "metadata":{"system_labels":{},"user_labels":{}},
  "policy_name":"checkout canary 5xx ratio","policy_user_labels":{"team":"payments"},
  "condition_name":"5xx ratio > 2%",
  "condition":{"name":"projects/shop-prod/alertPolicies/1234567890123456789/conditions/9876543210987654321",
   "displayName":"5xx ratio > 2%",
   "conditionThreshold":{"filter":"resource.type = \"cloud_run_revision\" AND metric.type = \"run.googleapis.com/request_count\" AND metric.labels.response_code_class = \"5xx\"",
    "aggregations":[{"alignmentPeriod":"60s","perSeriesAligner":"ALIGN_RATE","crossSeriesReducer":"REDUCE_SUM","groupByFields":["resource.label.revision_name"]}],
    "comparison":"COMPARISON_GT","thresholdValue":0.02,"duration":"120s","trigger":{"count":1}}},
  "documentation":{"content":"Roll back canary: see runbook","mime_type":"text/markdown","subject":"checkout canary failing","links":[]}},
 "version":"1.2"}"""

# issue 2 §4 (the "..." in bucketCounts made concrete).
NATIVE_DEPLOY = (
    '{"type":"deploy","time":"2026-11-28T10:00:00Z","project":"olympus-prod","location":"us-central1",'
    '"service":"api-gateway","revision":"api-gateway-00043-def","baseline":"api-gateway-00042-abc"}'
)
NATIVE_METRICS = (
    '{"type":"metrics","time":"2026-11-28T10:01:00Z","project":"olympus-prod","location":"us-central1",'
    '"service":"api-gateway","revision":"api-gateway-00043-def","interval_s":60,\n'
    ' "request_count":{"2xx":290,"3xx":0,"4xx":3,"5xx":1},\n'
    ' "request_latencies":{"count":"294","bucketOptions":{"exponentialBuckets":{"numFiniteBuckets":64,'
    '"growthFactor":1.4,"scale":1.0}},"bucketCounts":["0","3","200","91"]},\n'
    ' "memory_utilization":0.61,"cpu_utilization":0.40,"instance_count":3,"max_instances":100}'
)
NATIVE_COMMAND = (
    '{"type":"command","time":"2026-11-28T10:05:00Z","service":"api-gateway","action":"pause",'
    '"by":"sre@example.com","reason":"investigating"}'
)


def _one(result: object) -> object:
    assert isinstance(result, list), result
    assert len(result) == 1
    return result[0]


def test_v1_replace_service_from_gcloud_deploy_no_traffic_tag() -> None:
    event = _one(parse_message(V1_REPLACE.encode(), SINK_ATTRIBUTES, now=NOW, where="msg 1"))
    assert event == Deploy(
        time=datetime(2026, 11, 20, 10, 15, 2, 874000, tzinfo=timezone.utc),  # the entry's own timestamp
        service="checkout", revision="checkout-00042-vux", baseline="checkout-00041-mib",
        project="shop-prod", location="europe-west1", canary_percent=0,
        principal="ci-deploy@shop-prod.iam.gserviceaccount.com", source="audit-v1",
        labels=(("cloud.googleapis.com/location", "europe-west1"),),
    )
    assert not event.needs_resolution


def test_v1_example_uses_attribute_timestamp_only_as_fallback() -> None:
    entry = json.loads(V1_REPLACE)
    del entry["timestamp"]
    event = _one(parse_message(json.dumps(entry), SINK_ATTRIBUTES, now=NOW))
    assert event.time == datetime(2026, 11, 20, 10, 15, 3, 120000, tzinfo=timezone.utc)


def test_v2_update_service_first_entry() -> None:
    event = _one(parse_message(V2_UPDATE, None, now=NOW))
    assert event == Deploy(
        time=datetime(2026, 11, 20, 10, 31, 0, 102000, tzinfo=timezone.utc),
        service="checkout", revision="checkout-00042-vux", baseline="checkout-00041-mib",
        project="shop-prod", location="europe-west1", canary_percent=5,
        principal="canary-daemon@shop-prod.iam.gserviceaccount.com", source="audit-v2",
    )


def test_v2_example_is_ignored_when_written_by_our_own_principal() -> None:
    result = parse_message(V2_UPDATE, None, now=NOW, where="msg 7",
                           own_principals=frozenset({"canary-daemon@shop-prod.iam.gserviceaccount.com"}))
    assert isinstance(result, Ignored)
    assert "own update" in result.reason and result.where == "msg 7"


def test_incident_open_example() -> None:
    event = _one(parse_message(INCIDENT_OPEN.encode(), None, now=NOW))
    assert event == Alert(
        time=datetime.fromtimestamp(1795169700, tz=timezone.utc), service="checkout",
        revision="checkout-00042-vux", incident_id="0.n4kq2w8zt1ab", state="open",
        policy_name="checkout canary 5xx ratio",
        summary=json.loads(INCIDENT_OPEN)["incident"]["summary"], project="shop-prod",
        severity="critical", policy_labels=(("team", "payments"),),
        location="europe-west1",  # the incident resource's region: `checkout` may run in two
    )


def test_native_deploy_example() -> None:
    event = _one(parse_message(NATIVE_DEPLOY, None, now=NOW))
    assert event == Deploy(
        time=datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc), service="api-gateway",
        revision="api-gateway-00043-def", baseline="api-gateway-00042-abc", project="olympus-prod",
        location="us-central1", canary_percent=0, source="native",
    )


def test_native_metrics_example() -> None:
    event = _one(parse_message(NATIVE_METRICS, None, now=NOW))
    assert isinstance(event, Metrics)
    assert event.requests_by_class == (("2xx", 290), ("3xx", 0), ("4xx", 3), ("5xx", 1))
    assert (event.requests, event.errors, event.interval_s) == (294, 1, 60)
    assert (event.memory_utilization, event.cpu_utilization) == (0.61, 0.40)
    assert (event.instance_count, event.max_instances) == (3, 100)
    hist = event.latency
    assert hist is not None and hist.layout == "exponential"
    assert len(hist.counts) == 66 and hist.counts[:4] == (0, 3, 200, 91) and hist.total == 294
    assert hist.edges[0] == 1.0 and abs(hist.edges[1] - 1.4) < 1e-12
    assert hist.params == (64, 1.4, 1.0)


def test_native_command_example() -> None:
    event = _one(parse_message(NATIVE_COMMAND.encode(), None, now=NOW))
    assert event == Command(time=datetime(2026, 11, 28, 10, 5, tzinfo=timezone.utc), service="api-gateway",
                            action="pause", by="sre@example.com", reason="investigating")
