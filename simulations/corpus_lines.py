"""Raw recording lines for the corpus builder (`simulations.corpus`): Google-format audit entries and
Monitoring incidents, operator commands, garbage, and the duplicate-and-reorder transform.

The audit and incident shapes follow shared/reference/gcp-formats.md (examples a and b).
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np

from daemon.core.timefmt import format_rfc3339, parse_rfc3339
from simulations.scenario_model import Scenario


def _dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def incident(at: datetime, scenario: Scenario, incident_id: str, state: str) -> str:
    """A Cloud Monitoring incident notification, schema 1.2, on the canary revision."""
    epoch = int(at.timestamp())
    labels = {"project_id": "olympus-prod", "service_name": scenario.service,
              "revision_name": scenario.canary_revision, "location": "us-central1",
              "configuration_name": scenario.service}
    return _dump({"version": "1.2", "incident": {
        "incident_id": incident_id, "scoping_project_id": "olympus-prod", "severity": "Critical",
        "started_at": epoch, "ended_at": None if state == "open" else epoch, "state": state,
        "summary": f"5xx ratio for {scenario.canary_revision} is above the threshold of 0.020 "
                   "with a value of 0.031.",
        "observed_value": "0.031", "threshold_value": "0.02",
        "resource": {"type": "cloud_run_revision", "labels": labels},
        "resource_type_display_name": "Cloud Run Revision",
        "metric": {"type": "run.googleapis.com/request_count", "displayName": "Request Count",
                   "labels": {"response_code_class": "5xx"}},
        "policy_name": f"{scenario.service} 5xx ratio", "condition_name": "5xx ratio > 2%",
        "documentation": {"content": "Roll back canary: see runbook", "mime_type": "text/markdown"}}})


def _audit(at: datetime, *, project: str, location: str, service: str, principal: str, user_agent: str,
           template: str, traffic: list[dict[str, Any]], latest: str, served: list[dict[str, Any]]) -> str:
    return _dump({
        "insertId": f"corpus-{int(at.timestamp())}",
        "logName": f"projects/{project}/logs/cloudaudit.googleapis.com%2Factivity",
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": principal},
            "methodName": "google.cloud.run.v1.Services.ReplaceService", "serviceName": "run.googleapis.com",
            "resourceName": f"namespaces/{project}/services/{service}",
            "request": {
                "@type": "type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest",
                "name": f"projects/{project}/locations/{location}/services/{service}", "region": location,
                "service": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                            "metadata": {"name": service, "namespace": "123456789012",
                                         "labels": {"cloud.googleapis.com/location": location}},
                            "spec": {"template": {"metadata": {"name": template}}, "traffic": traffic}}},
            "requestMetadata": {"callerSuppliedUserAgent": user_agent},
            "response": {"@type": "type.googleapis.com/google.cloud.run.v1.Service",
                         "metadata": {"name": service},
                         "status": {"latestCreatedRevisionName": latest, "latestReadyRevisionName": latest,
                                    "traffic": served}}},
        "resource": {"type": "cloud_run_revision", "labels": {
            "project_id": project, "service_name": service, "location": location,
            "configuration_name": "", "revision_name": ""}},
        "severity": "NOTICE", "timestamp": format_rfc3339(at)})


def audit_deploy_v1(at: datetime, *, project: str, location: str, service: str, baseline: str,
                    canary: str) -> str:
    """`gcloud run deploy SERVICE --no-traffic --tag=canary`, as its v1 ReplaceService audit entry."""
    return _audit(at, project=project, location=location, service=service,
                  principal=f"ci-deploy@{project}.iam.gserviceaccount.com",
                  user_agent="google-cloud-sdk gcloud/528.0.0 command/gcloud.run.deploy", template=canary,
                  traffic=[{"revisionName": baseline, "percent": 100},
                           {"revisionName": canary, "tag": "canary"}],
                  latest=baseline, served=[{"revisionName": baseline, "percent": 100}])


def audit_traffic_v1(at: datetime, scenario: Scenario) -> str:
    """A human's `gcloud run services update-traffic --to-revisions=BASELINE=100` mid-rollout."""
    return _audit(at, project="olympus-prod", location="us-central1", service=scenario.service,
                  principal="sre@olympuscloud.ai",
                  user_agent="google-cloud-sdk gcloud/528.0.0 command/gcloud.run.services.update-traffic",
                  template=scenario.canary_revision,
                  traffic=[{"revisionName": scenario.baseline_revision, "percent": 100},
                           {"revisionName": scenario.canary_revision, "percent": 0, "tag": "canary"}],
                  latest=scenario.canary_revision,
                  served=[{"revisionName": scenario.baseline_revision, "percent": 75},
                          {"revisionName": scenario.canary_revision, "percent": 25, "tag": "canary"}])


def command(at: datetime, scenario: Scenario, action: str, by: str) -> str:
    return _dump({"type": "command", "time": format_rfc3339(at), "service": scenario.service,
                  "action": action, "by": by, "reason": "corpus: operator command"})


def _line_time(line: str) -> datetime | None:
    try:
        value = json.loads(line).get("time")
        return parse_rfc3339(value) if isinstance(value, str) else None
    except (ValueError, AttributeError):
        return None


def jitter_and_duplicate(lines: list[str], rng: np.random.Generator, *, duplicate_share: float = 0.25,
                         max_shift_s: int = 120) -> list[str]:
    """Deliver metrics up to `max_shift_s` late (so they arrive out of order, always well within
    the policy's late-data grace) and deliver a share of all lines a second time later on. The
    first line (the deploy) stays first: a rollout cannot be judged before it exists."""
    head, rest = lines[:1], lines[1:]
    keyed: list[tuple[float, int, str]] = []
    for order, line in enumerate(rest):
        when = _line_time(line)
        base = when.timestamp() if when is not None else 0.0
        is_metrics = '"type":"metrics"' in line
        keyed.append((base + (float(rng.integers(0, max_shift_s + 1)) if is_metrics else 0.0), order, line))
        if rng.random() < duplicate_share:
            keyed.append((base + float(rng.integers(1, max_shift_s + 1)), order, line))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return head + [line for *_, line in keyed]


GARBAGE = (
    "this is not JSON",
    '{"type":"metrics","time":"2025-03-03T14:05:00Z","service":"checkout","revision":"checkout-00042-cnry",'
    '"interval_s":60,"request_count":{"2xx":-5,"5xx":1}}',
    '{"type":"metrics","time":"2025-03-03T14:06:00Z","service":"checkout","revision":"checkout-00042-cnry",'
    '"interval_s":60,"request_count":{"2xx":10,"5xx":NaN}}',
    '{"type":"launch-missiles","time":"2025-03-03T14:07:00Z"}',
    '{"type":"deploy","time":"2025-03-03T14:08:00Z","service":"checkout"}',
    '[1, 2, 3]',
    '{"type":"metrics","time":"2025-03-03T14:09:00Z","service":"checkout","revision":"checkout-00042-cnry",'
    '"interval_s":60,"request_count":{"2xx":10},"request_latencies":{"count":"3","bucketOptions":{},'
    '"bucketCounts":["1","x"]}}',
    '{"type":"command","time":"2025-03-03T14:10:00Z","service":"checkout","action":"explode","by":"x@y"}',
)


def garbage_lines(lines: list[str], rng: np.random.Generator) -> list[str]:
    """Insert each GARBAGE line at a random position after the deploy."""
    out = list(lines)
    for bad in GARBAGE:
        out.insert(int(rng.integers(1, len(out) + 1)), bad)
    return out


__all__ = ["incident", "audit_deploy_v1", "audit_traffic_v1", "command", "jitter_and_duplicate",
           "garbage_lines", "GARBAGE"]
