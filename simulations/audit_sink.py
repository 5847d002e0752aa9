"""What a Logging sink delivers for a Cloud Run Admin API v2 `UpdateService`: the Admin Activity
audit entry (shared/reference/gcp-formats.md §1a, example (a′)), as JSON bytes for Pub/Sub.

Google writes these entries, never rollbackd: this module stands in for Google wherever there is no
real Cloud Run: the sandbox's simulated Cloud Run (`simulations.sandbox_cloud`) and the tests' gRPC
fake (`tests/fakes/cloud_run.py`) publish one for every update they accept, with the principal
they authenticated, so commands written as annotations reach the daemon the way production's do
(the same audit parser, the same read-back, the same authorisation).
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping, Sequence

from daemon.core.timefmt import format_rfc3339


def update_service_entry(*, project: str, location: str, service: str, request_service: Mapping[str, Any],
                         principal: str, at: datetime, operation_id: str, update_mask: Sequence[str] = (),
                         error: tuple[int, str] | None = None) -> dict[str, Any]:
    """The first entry of the long-running operation (the one rollbackd reads). `request_service` is
    the v2 Service as JSON (camelCase), as the request carried it; `error` = (code, message) for a
    refused request (severity ERROR and `protoPayload.status`)."""
    name = f"projects/{project}/locations/{location}/services/{service}"
    stamp = format_rfc3339(at)
    request: dict[str, Any] = {"@type": "type.googleapis.com/google.cloud.run.v2.UpdateServiceRequest",
                               "service": {**dict(request_service), "name": name}}
    if update_mask:
        request["updateMask"] = ",".join(update_mask)
    payload: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "authenticationInfo": {"principalEmail": principal} if principal else {},
        "methodName": "google.cloud.run.v2.Services.UpdateService",
        "serviceName": "run.googleapis.com",
        "resourceName": name,
        "request": request,
    }
    if error is not None:
        payload["status"] = {"code": error[0], "message": error[1]}
    return {
        "insertId": operation_id.rsplit("/", 1)[-1],
        "logName": f"projects/{project}/logs/cloudaudit.googleapis.com%2Factivity",
        "operation": {"id": operation_id, "producer": "run.googleapis.com", "first": True},
        "protoPayload": payload,
        "resource": {"type": "cloud_run_revision",
                     "labels": {"project_id": project, "service_name": service, "location": location,
                                "configuration_name": "", "revision_name": ""}},
        "severity": "ERROR" if error is not None else "NOTICE",
        "timestamp": stamp, "receiveTimestamp": stamp,
    }


def entry_bytes(entry: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The Pub/Sub message a sink publishes: the entry's JSON and its timestamp attribute."""
    return (json.dumps(entry, sort_keys=True).encode(),
            {"logging.googleapis.com/timestamp": str(entry.get("timestamp", ""))})


__all__ = ["entry_bytes", "update_service_entry"]
